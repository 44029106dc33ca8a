"""Encoder: one deployment per embedding or rerank model version. Texts (or, for a cross-encoder, query/document
pairs) from concurrent requests are merged with @serve.batch."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from app.config import EngineKind, LimitsConfig, ModelConfig, ModelVersion, Role
from app.engines.base import Vectors
from app.engines.cross_encoder import CrossEncoderEngine
from app.engines.sentence_encoder import SentenceEncoder
from app.errors import ErrorInfo
from app.observability.metering import Meter, Metered, current_meter, metering
from app.observability.tracing import annotate_replica_span
from app.protocol import EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse
from app.serving.embedding import EncoderService
from app.traffic.faults import FaultInjector
from deployments.batching import BatchTuner
from deployments.metrics import GraphMetrics


@serve.deployment
class Encoder:
    # Ray Serve awaits an async constructor before the replica takes traffic, so warm-up finishes before ready.
    async def __init__(  # type: ignore[misc]
        self, model: ModelConfig, version: ModelVersion, weights_dir: str, limits: LimitsConfig
    ) -> None:
        loading = time.perf_counter()
        path = version.weights.local_path(Path(weights_dir))
        max_inputs = limits.max_rerank_documents if model.role is Role.RERANK else limits.max_embedding_inputs
        if version.engine is EngineKind.CROSS_ENCODER:
            cross = CrossEncoderEngine(path, device=version.device.value)
            self._run: Callable[[list[Any]], Vectors] = cross.score
            self.service = EncoderService(
                model=model.name,
                encode=self._encode_many,
                score=self._score_pairs,
                count_tokens=cross.count_tokens,
                dimensions=0,
                max_seq_length=cross.max_seq_length,
                max_inputs=max_inputs,
            )
        else:
            engine = SentenceEncoder(path, device=version.device.value)
            self._run = engine.encode
            self.service = EncoderService(
                model=model.name,
                encode=self._encode_many,
                count_tokens=engine.count_tokens,
                decode=engine.decode,
                dimensions=engine.dimensions,
                max_seq_length=engine.max_seq_length,
                max_inputs=max_inputs,
            )
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.faults = FaultInjector(version.faults)
        self._replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = GraphMetrics()
        self._labels = (model.name, version.version)
        self.metrics.model_loaded(*self._labels, version.engine.value, time.perf_counter() - loading)
        self._tuner = BatchTuner(self._run_batch)
        warming = time.perf_counter()
        for text in version.warmup.texts:
            if model.role is Role.RERANK:
                await self.service.rerank(RerankRequest(model=model.name, query=text, documents=[text]))
            else:
                await self.service.embed(EmbeddingRequest(model=model.name, input=text))
        if version.warmup.texts:
            self.metrics.model_warmed(*self._labels, time.perf_counter() - warming)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._tuner.configure(user_config)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _run_batch(self, queued: list[tuple[Any, float]]) -> list[Any]:
        """Texts (or query/document pairs for a cross-encoder) with the time each was queued at; the batch's size
        and longest wait are recorded."""
        self.batch_sizes.append(len(queued))
        self.metrics.batch(*self._labels, len(queued), time.perf_counter() - min(at for _, at in queued))
        out = await asyncio.to_thread(self._run, [item for item, _ in queued])
        return list(out)

    async def _many(self, items: Sequence[Any]) -> list[Any]:
        started = time.perf_counter()
        self._tuner.arrive()
        rows = await asyncio.gather(*(self._run_batch((item, started)) for item in items))  # type: ignore[arg-type]
        meter = current_meter()
        if meter is not None:
            meter.engine_time(time.perf_counter() - started)
        return list(rows)

    async def _encode_many(self, texts: Sequence[str]) -> Vectors:
        return np.stack(await self._many(texts))

    async def _score_pairs(self, query: str, documents: Sequence[str]) -> Vectors:
        return np.asarray(await self._many([(query, d) for d in documents]), dtype=np.float32)

    async def embed(self, request: EmbeddingRequest) -> Metered[EmbeddingResponse | ErrorInfo]:
        with metering(replica=self._replica) as meter:
            result = await self.faults.check() or await self.service.embed(request)
        return _reply(meter, result)

    async def rerank(self, request: RerankRequest) -> Metered[RerankResponse | ErrorInfo]:
        with metering(replica=self._replica) as meter:
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
