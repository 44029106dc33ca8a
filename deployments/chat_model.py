"""ChatModel: one deployment per chat model version (vLLM or transformers engine)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve

from app.config import BatchingConfig, ModelConfig, ModelVersion
from app.engines.base import EngineStats
from app.engines.factory import build_chat_engine
from app.engines.transformers_chat import GenerationCall, GenerationResult, TransformersChatEngine
from app.errors import ErrorInfo
from app.protocol import ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse
from app.serving.generation import GenerationService, Limits
from app.tokenizer import HFTokenizer
from app.traffic.faults import FaultInjector


@serve.deployment
class ChatModel:
    def __init__(self, model: ModelConfig, version: ModelVersion, weights_dir: str) -> None:
        path = version.weights.local_path(Path(weights_dir))
        self.engine = build_chat_engine(version, path, submit=self._generate_batch)
        self.service = GenerationService(
            model=model.name,
            tokenizer=HFTokenizer(path),
            engine=self.engine,
            limits=Limits(max_model_len=version.max_model_len, max_output_tokens=version.output_token_limit),
        )
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.faults = FaultInjector(version.faults)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batching = BatchingConfig.model_validate(user_config.get("batching", {}))
        self._generate_batch.set_max_batch_size(batching.max_batch_size)  # type: ignore[attr-defined]
        self._generate_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, calls: list[GenerationCall]) -> list[GenerationResult]:
        if not isinstance(self.engine, TransformersChatEngine):
            raise TypeError("only the transformers engine is batched here; vLLM batches continuously")
        self.batch_sizes.append(len(calls))
        return await asyncio.to_thread(self.engine.run_batch, calls)

    async def create(
        self, request: ChatCompletionRequest | CompletionRequest, as_chat: bool = False
    ) -> ChatCompletionResponse | CompletionResponse | ErrorInfo:
        return await self.faults.check() or await self.service.create(request, as_chat)

    async def stream(
        self, request: ChatCompletionRequest | CompletionRequest, as_chat: bool = False
    ) -> AsyncIterator[str | ErrorInfo]:
        fault = await self.faults.check()
        if fault is not None:
            yield fault
            return
        async for event in self.service.stream(request, as_chat):
            yield event

    async def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        self.engine.check_health()

    def stats(self) -> EngineStats:
        return self.engine.stats

    def recent_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)
