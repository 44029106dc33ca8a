"""Encoder: one deployment per embedding or rerank model version; texts are merged across requests with
@serve.batch, and both endpoints share that batcher (the reranker is a bi-encoder)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from app.config import BatchingConfig, LimitsConfig, ModelConfig, ModelVersion, Role
from app.engines.base import Vectors
from app.engines.sentence_encoder import SentenceEncoder
from app.errors import ErrorInfo
from app.observability.metering import Meter, Metered, current_meter, metering
from app.observability.tracing import annotate_replica_span
from app.protocol import EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse
from app.serving.embedding import EncoderService
from app.traffic.faults import FaultInjector
from deployments.metrics import GraphMetrics


@serve.deployment
class Encoder:
    def __init__(self, model: ModelConfig, version: ModelVersion, weights_dir: str, limits: LimitsConfig) -> None:
        loading = time.perf_counter()
        self.engine = SentenceEncoder(version.weights.local_path(Path(weights_dir)), device=version.device.value)
        self.service = EncoderService(
            model=model.name,
            encode=self._encode_many,
            count_tokens=self.engine.count_tokens,
            dimensions=self.engine.dimensions,
            max_seq_length=self.engine.max_seq_length,
            max_inputs=limits.max_rerank_documents if model.role is Role.RERANK else limits.max_embedding_inputs,
        )
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.faults = FaultInjector(version.faults)
        self.metrics = GraphMetrics()
        self._labels = (model.name, version.version)
        self.metrics.model_loaded(*self._labels, version.engine.value, time.perf_counter() - loading)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batching = BatchingConfig.model_validate(user_config.get("batching", {}))
        self._encode_batch.set_max_batch_size(batching.max_batch_size)  # type: ignore[attr-defined]
        self._encode_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _encode_batch(self, queued: list[tuple[str, float]]) -> list[Vectors]:
        """Texts with the time each was queued at; the batch's size and longest wait are recorded."""
        self.batch_sizes.append(len(queued))
        self.metrics.batch(*self._labels, len(queued), time.perf_counter() - min(at for _, at in queued))
        vectors = await asyncio.to_thread(self.engine.encode, [text for text, _ in queued])
        return list(vectors)

    async def _encode_many(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        rows = await asyncio.gather(*(self._encode_batch((text, started)) for text in texts))  # type: ignore[arg-type]
        meter = current_meter()
        if meter is not None:
            meter.engine_time(time.perf_counter() - started)
        return np.stack(rows)

    async def embed(self, request: EmbeddingRequest, as_chat: bool = False) -> Metered[EmbeddingResponse | ErrorInfo]:
        with metering() as meter:
            result = await self.faults.check() or await self.service.embed(request)
        return _reply(meter, result)

    async def rerank(self, request: RerankRequest, as_chat: bool = False) -> Metered[RerankResponse | ErrorInfo]:
        with metering() as meter:
            result = await self.faults.check() or await self.service.rerank(request)
        return _reply(meter, result)

    async def ready(self) -> bool:
        return True

    def recent_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)

    def placement(self) -> dict[str, Any]:
        """Where Ray put this replica: its node and the GPU ids it was given (for operators and tests)."""
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "replica": serve.get_replica_context().replica_id.unique_id,
        }


def _reply(meter: Meter, result: EmbeddingResponse | RerankResponse | ErrorInfo) -> Metered[Any]:
    """The answer with the engine's time and the input tokens (the ingress reports them)."""
    if not isinstance(result, ErrorInfo):
        meter.prompt_tokens = result.usage.prompt_tokens
    reply = meter.reply(result)
    annotate_replica_span(reply.report)
    return reply
