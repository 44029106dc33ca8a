"""ChatModel: one deployment per chat model version (vLLM or transformers engine)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ray import serve

from app.config import ModelConfig, ModelVersion
from app.engines.base import EngineStats
from app.engines.factory import build_chat_backend
from app.engines.transformers_chat import GenerationCall, GenerationResult, TransformersChatEngine
from app.errors import ErrorInfo, InvalidRequest, OpenAIError
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
from app.serving.adapters import AdapterLoader, AdapterRef, LoadedAdapter, answered_as, event_as, for_adapter
from deployments.batching import BatchTuner
from deployments.replica import serve_model_replica

Answer = ChatCompletionResponse | CompletionResponse | EngineAnswer | ErrorInfo


@serve.deployment
class ChatModel:
    # Ray Serve awaits an async constructor before the replica takes traffic, so warm-up finishes before ready.
    async def __init__(self, model: ModelConfig, version: ModelVersion, weights_dir: str) -> None:  # type: ignore[misc]
        self._replica = serve_model_replica(model, version)
        path = version.weights.local_path(Path(weights_dir))
        backend = await build_chat_backend(
            model,
            version,
            path,
            submit=self._submit,
            prefix_cache=self._replica.prefix_cache,
        )
        self.engine, self.service = backend.engine, backend.service
        self._adapter_refs: dict[str, AdapterRef] = {}
        self._loader = AdapterLoader(backend.adapters, path, version.lora.max_rank if version.lora else 0)
        self._adapters = _adapter_cache(self._loader, self._adapter_refs, version)
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
        self, request: ChatCompletionRequest | CompletionRequest, adapter: AdapterRef | None = None
    ) -> Metered[Answer]:
        """The answer, with the engine's time and tokens (the ingress reports them). With `adapter`, the request
        runs on that LoRA adapter, loaded here first if this replica does not hold it."""

        async def answer() -> Answer:
            if adapter is None:
                plain: Answer = await self.service.create(request)
                return plain
            try:
                adapted = await self._adapted(request, adapter)
            except OpenAIError as exc:
                return exc.info()
            answered: Answer = await self.service.create(adapted)
            return answered_as(answered, adapter)

        return await self._replica.answer(answer)

    async def stream(
        self, request: ChatCompletionRequest | CompletionRequest, adapter: AdapterRef | None = None
    ) -> AsyncIterator[Metered[str | ErrorInfo] | str | ErrorInfo | EngineReport]:
        """The first event comes with the engine's report so far; the engine's final report is the last item."""
        meter = start_metering(replica=self._replica.replica_id)
        fault = await self._replica.faults.check()
        if fault is not None:
            yield meter.reply(fault)
            return
        if adapter is not None:
            try:
                request = await self._adapted(request, adapter)
            except OpenAIError as exc:
                yield meter.reply(exc.info())
                return
        gaps = self._replica.faults.stream_gaps()
        started = False
        async for event in self.service.stream(request):
            if adapter is not None:
                event = event_as(event, adapter)
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

    async def _adapted(
        self, request: ChatCompletionRequest | CompletionRequest, adapter: AdapterRef
    ) -> ChatCompletionRequest | CompletionRequest:
        await self._hold(adapter)
        return for_adapter(request, adapter)

    async def _hold(self, adapter: AdapterRef) -> None:
        if self._adapters is None:
            raise InvalidRequest(f"The model '{adapter.model}' is an adapter on a version that serves none.")
        self._adapter_refs[adapter.name] = adapter
        await self._adapters(adapter.name)

    async def load_adapter(self, adapter: AdapterRef) -> ErrorInfo | None:
        """Load `adapter` here (the admin's check before the graph serves it): None, or why it cannot load."""
        try:
            await self._hold(adapter)
        except OpenAIError as exc:
            return exc.info()
        return None

    async def ready(self) -> bool:
        return True

    def loaded_adapters(self) -> list[str]:
        """The adapters this replica holds."""
        return sorted(self._loader.loaded)

    def check_health(self) -> None:
        self.engine.check_health()

    def stats(self) -> EngineStats:
        return self.engine.stats

    def recent_batch_sizes(self) -> list[int]:
        return self._replica.recent_batch_sizes()


def _adapter_cache(
    loader: AdapterLoader, refs: dict[str, AdapterRef], version: ModelVersion
) -> Callable[[str], Awaitable[Any]] | None:
    """Serve's model multiplexing over the version's adapters: a request names one (its multiplexed model id), the
    replica loads it unless it holds it, and past `lora.max_adapters` the least recently used is unloaded."""
    if version.lora is None:
        return None

    async def load_adapter(name: str) -> LoadedAdapter:
        return await loader.load(refs[name])

    cache: Callable[[str], Awaitable[Any]] = serve.multiplexed(max_num_models_per_replica=version.lora.max_adapters)(
        load_adapter
    )
    return cache


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
