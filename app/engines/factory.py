"""Build the engine a model version names in the config."""

from __future__ import annotations

from pathlib import Path

from app.config import EngineKind, ModelVersion
from app.engines.base import ChatEngine
from app.engines.transformers_chat import Submit, TransformersChatEngine
from app.engines.vllm_chat import VllmChatEngine


def build_chat_engine(version: ModelVersion, path: Path, *, submit: Submit | None = None) -> ChatEngine:
    if version.engine is EngineKind.VLLM:
        return VllmChatEngine(
            path,
            max_model_len=version.max_model_len,
            dtype=version.vllm.dtype,
            enforce_eager=version.vllm.enforce_eager,
            gpu_memory_utilization=version.gpu_memory_utilization,
            tensor_parallel_size=version.vllm.tensor_parallel_size,
        )
    if version.engine is EngineKind.TRANSFORMERS:
        return TransformersChatEngine(path, device=version.device.value, submit=submit)
    raise ValueError(f"engine {version.engine.value!r} cannot serve chat")
