"""Encoder: one deployment per embedding or rerank model version. Texts (or, for a cross-encoder, query/document
pairs) from concurrent requests are merged with @serve.batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray
from ray import serve

from app.config import EngineKind, LimitsConfig, ModelConfig, ModelVersion, Role
from app.engines.base import Vectors
from app.engines.cross_encoder import CrossEncoderEngine
from app.engines.sentence_encoder import SentenceEncoder
from app.errors import ErrorInfo
from app.observability.metering import Metered, current_meter
from app.protocol import EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse
from app.replica import Queued
from app.serving.embedding import EncoderService
from deployments.batching import BatchTuner
from deployments.replica import serve_model_replica

Answer = TypeVar("Answer", EmbeddingResponse, RerankResponse)


@serve.deployment
class Encoder:
    # Ray Serve awaits an async constructor before the replica takes traffic, so warm-up finishes before ready.
    async def __init__(  # type: ignore[misc]
        self, model: ModelConfig, version: ModelVersion, weights_dir: str, limits: LimitsConfig
    ) -> None:
        self._replica = serve_model_replica(model, version)
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
        self._replica.loaded()
        self._tuner = BatchTuner(self._run_batch)
        await self._replica.warm_up(_warmup(self.service, model))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._tuner.configure(user_config)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _run_batch(self, queued: list[Queued[Any]]) -> list[Any]:
        """Texts (or query/document pairs for a cross-encoder), one vector or score each."""
        return await self._replica.run_batch(self._run, queued)

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
        return await self._replica.answer(lambda: _input_tokens_metered(self.service.embed(request)))

    async def rerank(self, request: RerankRequest) -> Metered[RerankResponse | ErrorInfo]:
        return await self._replica.answer(lambda: _input_tokens_metered(self.service.rerank(request)))

    async def ready(self) -> bool:
        return True

    def recent_batch_sizes(self) -> list[int]:
        return self._replica.recent_batch_sizes()

    def placement(self) -> dict[str, Any]:
        """Where Ray put this replica: its node and the GPU ids it was given (for operators and tests)."""
        context = ray.get_runtime_context()
        return {
            "node_id": context.get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "replica": self._replica.replica_id,
        }


def _warmup(service: EncoderService, model: ModelConfig) -> Callable[[str], Awaitable[object]]:
    """A warm-up text served as the model's role asks: an input to embed, or a query with itself as the document."""
    if model.role is Role.RERANK:
        return lambda text: service.rerank(RerankRequest(model=model.name, query=text, documents=[text]))
    return lambda text: service.embed(EmbeddingRequest(model=model.name, input=text))


async def _input_tokens_metered(answer: Awaitable[Answer | ErrorInfo]) -> Answer | ErrorInfo:
    """The answer, its input tokens put on the request's meter (the ingress reports them)."""
    result = await answer
    meter = current_meter()
    if meter is not None and not isinstance(result, ErrorInfo):
        meter.prompt_tokens = result.usage.prompt_tokens
    return result
