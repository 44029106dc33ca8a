"""Build the engine a model version names in the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.config import EngineKind, ModelVersion
from app.engines.base import ChatEngine
from app.engines.transformers_chat import Submit, TransformersChatEngine
from app.engines.vllm_chat import VllmChatEngine


def build_chat_engine(
    version: ModelVersion,
    path: Path,
    *,
    submit: Submit | None = None,
    prefix_cache: Callable[[int, int], None] | None = None,
) -> ChatEngine:
    """`submit` batches the transformers engine's calls; `prefix_cache(queried, hit)` receives vLLM's prefix-cache
    token counts as the engine reports them."""
    if version.engine is EngineKind.VLLM:
        return VllmChatEngine(
            path,
            max_model_len=version.max_model_len,
            dtype=version.vllm.dtype,
            enforce_eager=version.vllm.enforce_eager,
            gpu_memory_utilization=version.gpu_memory_utilization,
            tensor_parallel_size=version.vllm.tensor_parallel_size,
            prefix_cache=prefix_cache,
        )
    if version.engine is EngineKind.TRANSFORMERS:
        return TransformersChatEngine(path, device=version.device.value, submit=submit)
    raise ValueError(f"engine {version.engine.value!r} cannot serve chat")
