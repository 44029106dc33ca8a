"""What every model replica does around its engine: time the model's load and warm-up, run and record its batches,
and answer a call through the version's injected faults with the engine's time and tokens metered. No Ray: the
deployments pass in the Serve replica id and the graph's metrics (deployments/replica.py)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from app.config import ModelConfig, ModelVersion
from app.errors import ErrorInfo
from app.observability.metering import Metered, metering
from app.observability.tracing import annotate_replica_span
from app.traffic.faults import FaultInjector

Item = TypeVar("Item")
Result = TypeVar("Result")
Answer = TypeVar("Answer")
Clock = Callable[[], float]
Queued = tuple[Item, float]  # an item and when it was queued for a batch, by the replica's clock
RECENT_BATCHES = 1000  # batch sizes kept for recent_batch_sizes()


class ReplicaMetrics(Protocol):
    """A model replica's events (deployments/metrics.py:GraphMetrics records them)."""

    def model_loaded(self, model: str, version: str, engine: str, seconds: float) -> None: ...

    def model_warmed(self, model: str, version: str, seconds: float) -> None: ...

    def batch(self, model: str, version: str, size: int, longest_wait_s: float) -> None: ...

    def prefix_cache(self, model: str, version: str, queried_tokens: int, hit_tokens: int) -> None: ...


class ModelReplica:
    """One replica of a model version. Its load time runs from `loading_since` (default: its creation, so a
    deployment creates it first) to `loaded()`. `clock` times that, the warm-up, the meters and the batch waits (the
    deployment queues items by the same clock)."""

    def __init__(
        self,
        model: ModelConfig,
        version: ModelVersion,
        replica_id: str,
        metrics: ReplicaMetrics,
        *,
        clock: Clock = time.perf_counter,
        loading_since: float | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.faults = FaultInjector(version.faults)
        self._model, self._version, self._engine = model.name, version.version, version.engine.value
        self._warmup_texts = tuple(version.warmup.texts)
        self._metrics = metrics
        self._clock = clock
        self._loading_since = clock() if loading_since is None else loading_since
        self._batch_sizes: deque[int] = deque(maxlen=RECENT_BATCHES)

    def loaded(self) -> None:
        """The model is loaded and the replica set up: its load time is recorded."""
        self._metrics.model_loaded(self._model, self._version, self._engine, self._clock() - self._loading_since)

    async def warm_up(self, serve_one: Callable[[str], Awaitable[object]]) -> None:
        """Serve the version's warm-up texts one after another; their time is recorded when there are any."""
        warming = self._clock()
        for text in self._warmup_texts:
            await serve_one(text)
        if self._warmup_texts:
            self._metrics.model_warmed(self._model, self._version, self._clock() - warming)

    async def run_batch(
        self, run: Callable[[list[Item]], Iterable[Result]], queued: Sequence[Queued[Item]]
    ) -> list[Result]:
        """One batch of queued items: its size and longest wait are recorded, then `run` takes the items in a
        thread and returns one result per item."""
        self._batch_sizes.append(len(queued))
        self._metrics.batch(self._model, self._version, len(queued), self._clock() - min(at for _, at in queued))
        return list(await asyncio.to_thread(run, [item for item, _ in queued]))

    def recent_batch_sizes(self) -> list[int]:
        return list(self._batch_sizes)

    def prefix_cache(self, queried_tokens: int, hit_tokens: int) -> None:
        """The engine's prefix-cache lookups since its last report."""
        self._metrics.prefix_cache(self._model, self._version, queried_tokens, hit_tokens)

    async def answer(self, serve: Callable[[], Awaitable[Answer]]) -> Metered[Answer | ErrorInfo]:
        """A unary call: the version's faults first (a delay; an injected error instead of calling `serve`), then
        `serve`. The reply carries the engine's time and tokens, which also go on the replica's trace span."""
        with metering(self._clock, replica=self.replica_id) as meter:
            result = await self.faults.check() or await serve()
        reply = meter.reply(result)
        annotate_replica_span(reply.report)
        return reply
