"""ModelReplica, what every model replica does around its engine, on an injected clock and a recording metrics
double: load and warm-up times, batches, prefix-cache lookups, and unary calls through the version's faults."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from app.config import ModelConfig
from app.errors import ErrorInfo
from app.observability.metering import current_meter
from app.replica import RECENT_BATCHES, ModelReplica
from tests.fakes import ManualClock


class RecordedMetrics:
    """Each event as (name, its arguments)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def model_loaded(self, model: str, version: str, engine: str, seconds: float) -> None:
        self.events.append(("loaded", model, version, engine, seconds))

    def model_warmed(self, model: str, version: str, seconds: float) -> None:
        self.events.append(("warmed", model, version, seconds))

    def batch(self, model: str, version: str, size: int, longest_wait_s: float) -> None:
        self.events.append(("batch", model, version, size, longest_wait_s))

    def prefix_cache(self, model: str, version: str, queried_tokens: int, hit_tokens: int) -> None:
        self.events.append(("prefix", model, version, queried_tokens, hit_tokens))


def replica(
    clock: ManualClock, metrics: RecordedMetrics, loading_since: float | None = None, **version: Any
) -> ModelReplica:
    settings = {"version": "v2", "engine": "sentence-transformers", "weights": {"path": "/w"}, **version}
    model = ModelConfig.model_validate({"name": "e", "role": "embedding", "versions": [settings]})
    return ModelReplica(model, model.versions[0], "replica-1", metrics, clock=clock, loading_since=loading_since)


def test_the_load_time_runs_from_creation_or_from_when_loading_began() -> None:
    clock, metrics = ManualClock(100.0), RecordedMetrics()
    made_now, made_later = replica(clock, metrics), replica(clock, metrics, loading_since=97.5)
    clock.now = 102.0
    made_now.loaded()
    made_later.loaded()
    assert [e[-1] for e in metrics.events] == [2.0, 4.5]
    assert metrics.events[0] == ("loaded", "e", "v2", "sentence-transformers", 2.0)


async def test_warm_up_serves_each_text_in_turn_and_records_their_time() -> None:
    clock, metrics = ManualClock(100.0), RecordedMetrics()
    served: list[str] = []

    async def serve_one(text: str) -> None:
        served.append(text)
        clock.now += 0.25

    await replica(clock, metrics, warmup={"texts": ["a", "b"]}).warm_up(serve_one)
    assert served == ["a", "b"] and metrics.events == [("warmed", "e", "v2", 0.5)]


async def test_without_warm_up_texts_no_warm_up_time_is_recorded() -> None:
    metrics = RecordedMetrics()
    await replica(ManualClock(100.0), metrics).warm_up(lambda text: asyncio.sleep(0))
    assert metrics.events == []


async def test_a_batch_records_its_size_and_longest_wait_and_runs_off_the_event_loop() -> None:
    clock, metrics = ManualClock(100.0), RecordedMetrics()
    ran_in: list[threading.Thread] = []

    def run(items: list[str]) -> list[str]:
        ran_in.append(threading.current_thread())
        return [item.upper() for item in items]

    r = replica(clock, metrics)
    assert await r.run_batch(run, [("a", 99.0), ("b", 97.0), ("c", 99.5)]) == ["A", "B", "C"]
    assert metrics.events == [("batch", "e", "v2", 3, 3.0)]
    assert ran_in != [threading.current_thread()]
    await r.run_batch(run, [("d", 100.0)])
    assert r.recent_batch_sizes() == [3, 1]


async def test_only_the_most_recent_batch_sizes_are_kept() -> None:
    r = replica(ManualClock(100.0), RecordedMetrics())
    await r.run_batch(list, [("oldest", 100.0), ("batch", 100.0)])
    for _ in range(RECENT_BATCHES):
        await r.run_batch(list, [("one", 100.0)])
    assert r.recent_batch_sizes() == [1] * RECENT_BATCHES


def test_prefix_cache_lookups_carry_the_model_and_version() -> None:
    metrics = RecordedMetrics()
    replica(ManualClock(100.0), metrics).prefix_cache(120, 64)
    assert metrics.events == [("prefix", "e", "v2", 120, 64)]


async def test_an_answer_is_metered_on_the_replica_and_its_clock() -> None:
    clock = ManualClock(100.0)

    async def serve() -> str:
        meter = current_meter()
        assert meter is not None  # the engine finds the request's meter while it serves
        meter.engine_time(0.5)
        meter.tokens(3)
        clock.now += 2.0
        return "answer"

    reply = await replica(clock, RecordedMetrics()).answer(serve)
    assert reply.value == "answer"
    report = reply.report
    assert (report.replica, report.engine_s, report.replica_s, report.completion_tokens) == ("replica-1", 0.5, 2.0, 3)
    assert current_meter() is None


async def test_an_injected_fault_answers_instead_of_the_engine() -> None:
    served: list[bool] = []

    async def serve() -> str:
        served.append(True)
        return "answer"

    reply = await replica(ManualClock(100.0), RecordedMetrics(), faults={"abort_percent": 100}).answer(serve)
    assert isinstance(reply.value, ErrorInfo) and reply.value.code == "injected_fault" and served == []
    assert reply.report.replica == "replica-1"
    delayed = await replica(ManualClock(100.0), RecordedMetrics(), faults={"delay_ms": 1}).answer(serve)
    assert delayed.value == "answer" and served == [True]
