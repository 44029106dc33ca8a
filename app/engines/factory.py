"""Build the chat engine and the service that answers requests with it, for the engine a model version names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.config import EngineKind, ModelConfig, ModelVersion
from app.engines.base import EngineStats
from app.engines.transformers_chat import Submit, TransformersChatEngine
from app.engines.vllm_chat import VllmChat, vllm_argv
from app.errors import ErrorInfo
from app.observability.metering import MeteredChatEngine
from app.protocol import ChatCompletionRequest, CompletionRequest
from app.serving.adapters import AdapterHost
from app.serving.generation import GenerationService, Limits
from app.tokenizer import HFTokenizer


class ChatService(Protocol):
    """Answers chat and text completions: a response (or an ErrorInfo), or a stream of SSE events."""

    async def create(self, request: ChatCompletionRequest | CompletionRequest) -> Any: ...

    def stream(self, request: ChatCompletionRequest | CompletionRequest) -> AsyncIterator[str | ErrorInfo]: ...


class ChatEngineHealth(Protocol):
    stats: EngineStats

    def check_health(self) -> None: ...


@dataclass(frozen=True)
class ChatBackend:
    engine: ChatEngineHealth
    service: ChatService
    adapters: AdapterHost


class ThreadedAdapters:
    """The transformers engine's (synchronous) adapter loading, run in a worker thread."""

    def __init__(self, engine: TransformersChatEngine) -> None:
        self._engine = engine

    async def load_adapter(self, name: str, path: str) -> None:
        await asyncio.to_thread(self._engine.load_adapter, name, Path(path))

    async def unload_adapter(self, name: str) -> None:
        await asyncio.to_thread(self._engine.unload_adapter, name)


async def build_chat_backend(
    model: ModelConfig,
    version: ModelVersion,
    path: Path,
    *,
    submit: Submit | None = None,
    prefix_cache: Callable[[int, int], None] | None = None,
) -> ChatBackend:
    """A vLLM version serves through vLLM's own OpenAI layer; a transformers version through the graph's
    GenerationService. `submit` batches the transformers engine's calls; `prefix_cache(queried, hit)` receives
    vLLM's prefix-cache token counts as the engine reports them."""
    if version.engine is EngineKind.VLLM:
        argv = vllm_argv(
            path,
            model.name,
            version.vllm,
            max_model_len=version.max_model_len,
            gpu_memory_utilization=version.gpu_memory_utilization,
            chat_template=version.vllm.chat_template_path(),
            lora=version.lora,
        )
        vllm = await VllmChat.start(argv, version.output_token_limit, prefix_cache)
        return ChatBackend(vllm, vllm, vllm)
    if version.engine is EngineKind.TRANSFORMERS:
        engine = TransformersChatEngine(path, device=version.device.value, submit=submit)
        service = GenerationService(
            model=model.name,
            tokenizer=HFTokenizer(path),
            engine=MeteredChatEngine(engine),
            limits=Limits(max_model_len=version.max_model_len, max_output_tokens=version.output_token_limit),
        )
        return ChatBackend(engine, service, ThreadedAdapters(engine))
    raise ValueError(f"engine {version.engine.value!r} cannot serve chat")
