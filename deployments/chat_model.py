"""ChatModel: one deployment per chat model version (vLLM or transformers engine)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve

from app.config import ModelConfig, ModelVersion
from app.engines.base import EngineStats
from app.engines.factory import build_chat_backend
from app.engines.transformers_chat import GenerationCall, GenerationResult, TransformersChatEngine
from app.errors import ErrorInfo
from app.observability.metering import EngineReport, Metered, start_metering
from app.observability.tracing import annotate_replica_span
from app.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EngineAnswer,
)
from app.replica import Queued
from deployments.batching import BatchTuner
from deployments.replica import serve_model_replica


@serve.deployment
class ChatModel:
    # Ray Serve awaits an async constructor before the replica takes traffic, so warm-up finishes before ready.
    async def __init__(self, model: ModelConfig, version: ModelVersion, weights_dir: str) -> None:  # type: ignore[misc]
        self._replica = serve_model_replica(model, version)
        backend = await build_chat_backend(
            model,
            version,
            version.weights.local_path(Path(weights_dir)),
            submit=self._submit,
            prefix_cache=self._replica.prefix_cache,
        )
        self.engine, self.service = backend.engine, backend.service
        self._replica.loaded()
        self._tuner = BatchTuner(self._generate_batch)
        await self._replica.warm_up(lambda text: self.service.create(_warmup_request(model, version, text)))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._tuner.configure(user_config)

    async def _submit(self, call: GenerationCall) -> GenerationResult:
        self._tuner.arrive()
        result: GenerationResult = await self._generate_batch((call, time.perf_counter()))
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, queued: list[Queued[GenerationCall]]) -> list[GenerationResult]:
        if not isinstance(self.engine, TransformersChatEngine):
            raise TypeError("only the transformers engine is batched here; vLLM batches continuously")
        return await self._replica.run_batch(self.engine.run_batch, queued)

    async def create(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> Metered[ChatCompletionResponse | CompletionResponse | EngineAnswer | ErrorInfo]:
        """The answer, with the engine's time and tokens (the ingress reports them)."""
        return await self._replica.answer(lambda: self.service.create(request))

    async def stream(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> AsyncIterator[Metered[str | ErrorInfo] | str | ErrorInfo | EngineReport]:
        """The first event comes with the engine's report so far; the engine's final report is the last item."""
        meter = start_metering(replica=self._replica.replica_id)
        fault = await self._replica.faults.check()
        if fault is not None:
            yield meter.reply(fault)
            return
        gaps = self._replica.faults.stream_gaps()
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
        return self._replica.recent_batch_sizes()


def _warmup_request(model: ModelConfig, version: ModelVersion, text: str) -> ChatCompletionRequest:
    """A warm-up text as one greedy user message, for the version's warm-up tokens."""
    return ChatCompletionRequest.model_validate(
        {
            "model": model.name,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": version.warmup.max_tokens,
            "temperature": 0,
        }
    )
