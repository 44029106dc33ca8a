"""Engine metering: the engine's own time and tokens reach the request's meter, and nothing else does."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from app.engines.base import EngineStats, GenerationDelta, SamplingSettings
from app.observability.metering import EngineReport, MeteredChatEngine, current_meter, metering
from tests.fakes import ManualClock


class TimedEngine:
    """Each delta takes `step_s` on the clock; one token per delta."""

    def __init__(self, clock: ManualClock, words: int, step_s: float) -> None:
        self.clock, self.words, self.step_s = clock, words, step_s
        self.stats = EngineStats()
        self.adapters: frozenset[str] = frozenset({"a"})
        self.closed = False
        self.adapter: str | None = None

    async def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        self.adapter = adapter
        try:
            for i in range(self.words):
                self.clock.now += self.step_s
                yield GenerationDelta(f"w{i} ", 1, "stop" if i == self.words - 1 else None)
        finally:
            self.closed = True

    def check_health(self) -> None:
        return None


async def test_metered_engine_adds_only_engine_time_and_tokens_to_the_requests_meter() -> None:
    clock = ManualClock(100.0)
    engine = TimedEngine(clock, words=3, step_s=0.25)
    metered = MeteredChatEngine(engine, clock)
    assert metered.stats is engine.stats
    with metering(clock) as meter:
        clock.now += 1.0  # tokenizing, say: not the engine's time
        deltas = [d async for d in metered.generate([1, 2, 3, 4], SamplingSettings(max_tokens=3), "r")]
        clock.now += 0.5
        report = meter.report()
    assert current_meter() is None
    assert [d.text for d in deltas] == ["w0 ", "w1 ", "w2 "]
    assert report == EngineReport(
        engine_s=0.75, replica_s=2.25, first_token_s=1.25, prompt_tokens=4, completion_tokens=3
    )


async def test_metered_engine_closes_the_engine_when_the_consumer_stops() -> None:
    clock = ManualClock(100.0)
    engine = TimedEngine(clock, words=5, step_s=0.1)
    with metering(clock) as meter:
        stream = MeteredChatEngine(engine, clock).generate([1], SamplingSettings(max_tokens=5), "r")
        await anext(stream)
        await stream.aclose()
    assert engine.closed and meter.completion_tokens == 1


async def test_engine_without_a_meter_is_passed_through() -> None:
    clock = ManualClock(100.0)
    deltas = [
        d async for d in MeteredChatEngine(TimedEngine(clock, 2, 0.1), clock).generate([1], SamplingSettings(2), "r")
    ]
    assert len(deltas) == 2 and current_meter() is None


async def test_metered_engine_passes_the_adapters_and_the_chosen_adapter_through() -> None:
    clock = ManualClock(100.0)
    engine = TimedEngine(clock, words=1, step_s=0.1)
    metered = MeteredChatEngine(engine, clock)
    assert metered.adapters == {"a"}
    engine.adapters = frozenset({"a", "b"})
    assert metered.adapters == {"a", "b"}  # read through, not copied
    [d async for d in metered.generate([1], SamplingSettings(max_tokens=1), "r", adapter="b")]
    assert engine.adapter == "b"
    [d async for d in metered.generate([1], SamplingSettings(max_tokens=1), "r")]
    assert engine.adapter is None
