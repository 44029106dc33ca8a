"""What a model replica reports about one request: time inside the engine and tokens. The ingress subtracts the
engine's time from its end-to-end latency to get the graph's own overhead.

A replica opens a `Meter` per request (`metering()`); the engine wrapper below and the encoder's batched call add
their time to the meter of the request they serve, found through a context variable, so the serving layer needs no
change. Replies travel back wrapped: a unary call returns `Metered(value, report)`; a stream's first item is
`Metered(first_event, report so far)` and its last item the final `EngineReport`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.engines.base import ChatEngine, EngineStats, GenerationDelta, SamplingSettings

T = TypeVar("T")
Clock = Callable[[], float]


@dataclass(frozen=True)
class EngineReport:
    engine_s: float  # time inside the engine (a batched engine: waiting for the batch included)
    replica_s: float  # time in the replica's method, from entry to this report
    first_token_s: float | None  # replica time to the engine's first token; None when it produced none
    prompt_tokens: int
    completion_tokens: int
    replica: str = ""  # the replica that served it (its Serve replica id)


@dataclass(frozen=True)
class Metered(Generic[T]):
    value: T
    report: EngineReport


class Meter:
    def __init__(self, clock: Clock = time.perf_counter, replica: str = "") -> None:
        self._clock = clock
        self._replica = replica
        self.started = clock()
        self.engine_s = 0.0
        self.first_token_at: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def engine_time(self, seconds: float) -> None:
        self.engine_s += seconds

    def tokens(self, completion: int) -> None:
        if completion and self.first_token_at is None:
            self.first_token_at = self._clock()
        self.completion_tokens += completion

    def report(self) -> EngineReport:
        first = None if self.first_token_at is None else self.first_token_at - self.started
        elapsed = self._clock() - self.started
        return EngineReport(
            self.engine_s, elapsed, first, self.prompt_tokens, self.completion_tokens, self._replica
        )

    def reply(self, value: T) -> Metered[T]:
        return Metered(value, self.report())


_meter: ContextVar[Meter | None] = ContextVar("inference_graph_meter", default=None)


@contextmanager
def metering(clock: Clock = time.perf_counter, replica: str = "") -> Iterator[Meter]:
    """A meter for the request this task serves (a coroutine method; see `start_metering` for generators)."""
    meter = Meter(clock, replica)
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


def start_metering(clock: Clock = time.perf_counter, replica: str = "") -> Meter:
    """A meter for a streaming method: set, not reset (an async generator may be resumed from another context)."""
    meter = Meter(clock, replica)
    _meter.set(meter)
    return meter


def current_meter() -> Meter | None:
    return _meter.get()


class MeteredChatEngine:
    """A ChatEngine that adds the time spent in the wrapped engine, and its tokens, to the request's meter."""

    def __init__(self, engine: ChatEngine, clock: Clock = time.perf_counter) -> None:
        self._engine = engine
        self._clock = clock
        self.stats: EngineStats = engine.stats

    def check_health(self) -> None:
        self._engine.check_health()

    @property
    def adapters(self) -> frozenset[str]:
        return self._engine.adapters

    async def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        meter, clock = _meter.get(), self._clock
        deltas = self._engine.generate(prompt_ids, sampling, request_id, adapter=adapter)
        if meter is not None:
            meter.prompt_tokens = len(prompt_ids)
        try:
            while True:
                started = clock()
                try:
                    delta = await anext(deltas)
                except StopAsyncIteration:
                    return
                finally:
                    if meter is not None:
                        meter.engine_time(clock() - started)
                if meter is not None:
                    meter.tokens(delta.num_tokens)
                yield delta
        finally:
            await deltas.aclose()
