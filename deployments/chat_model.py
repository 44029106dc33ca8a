"""ChatModel: one deployment per chat model version (vLLM or transformers engine)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve

from app.config import ModelConfig, ModelVersion
from app.engines.base import EngineStats
from app.engines.factory import build_chat_backend
from app.engines.transformers_chat import GenerationCall, GenerationResult, TransformersChatEngine
from app.errors import ErrorInfo
from app.observability.metering import EngineReport, Metered, metering, start_metering
from app.observability.tracing import annotate_replica_span
from app.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EngineAnswer,
)
from app.traffic.faults import FaultInjector
from deployments.batching import BatchTuner
from deployments.metrics import GraphMetrics

Queued = tuple[GenerationCall, float]  # a call and when it was queued for a batch


@serve.deployment
class ChatModel:
    # Ray Serve awaits an async constructor before the replica takes traffic, so warm-up finishes before ready.
    async def __init__(self, model: ModelConfig, version: ModelVersion, weights_dir: str) -> None:  # type: ignore[misc]
        loading = time.perf_counter()
        path = version.weights.local_path(Path(weights_dir))
        self.metrics = GraphMetrics()
        self._labels = (model.name, version.version)
        self._replica = serve.get_replica_context().replica_id.unique_id
        backend = await build_chat_backend(
            model,
            version,
            path,
            submit=self._submit,
            prefix_cache=lambda q, h: self.metrics.prefix_cache(*self._labels, q, h),
        )
        self.engine, self.service = backend.engine, backend.service
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.faults = FaultInjector(version.faults)
        self.metrics.model_loaded(*self._labels, version.engine.value, time.perf_counter() - loading)
        self._tuner = BatchTuner(self._generate_batch)
        warming = time.perf_counter()
        for text in version.warmup.texts:
            body = ChatCompletionRequest.model_validate(
                {
                    "model": model.name,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": version.warmup.max_tokens,
                    "temperature": 0,
                }
            )
            await self.service.create(body)
        if version.warmup.texts:
            self.metrics.model_warmed(*self._labels, time.perf_counter() - warming)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._tuner.configure(user_config)

    async def _submit(self, call: GenerationCall) -> GenerationResult:
        self._tuner.arrive()
        result: GenerationResult = await self._generate_batch((call, time.perf_counter()))
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, queued: list[Queued]) -> list[GenerationResult]:
        if not isinstance(self.engine, TransformersChatEngine):
            raise TypeError("only the transformers engine is batched here; vLLM batches continuously")
        self.batch_sizes.append(len(queued))
        self.metrics.batch(*self._labels, len(queued), time.perf_counter() - min(at for _, at in queued))
        return await asyncio.to_thread(self.engine.run_batch, [call for call, _ in queued])

    async def create(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> Metered[ChatCompletionResponse | CompletionResponse | EngineAnswer | ErrorInfo]:
        """The answer, with the engine's time and tokens (the ingress reports them)."""
        with metering(replica=self._replica) as meter:
            result = await self.faults.check() or await self.service.create(request)
        reply = meter.reply(result)
        annotate_replica_span(reply.report)
        return reply

    async def stream(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> AsyncIterator[Metered[str | ErrorInfo] | str | ErrorInfo | EngineReport]:
        """The first event comes with the engine's report so far; the engine's final report is the last item."""
        meter = start_metering(replica=self._replica)
        fault = await self.faults.check()
        if fault is not None:
            yield meter.reply(fault)
            return
        gaps = self.faults.stream_gaps()
        started = False
        async for event in self.service.stream(request):
            if started:
                fault = await gaps.next()
                if fault is not None:
                    yield fault
                    return
            yield event if started else meter.reply(event)
            started = True
        fault = await gaps.next()
        if fault is not None:
            yield fault
            return
        report = meter.report()
        annotate_replica_span(report)
        yield report

    async def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        self.engine.check_health()

    def stats(self) -> EngineStats:
        return self.engine.stats

    def recent_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)
