"""Embeddings and rerank on an encoder: token limits, usage, float/base64 encoding, ranking."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from app.engines.base import Vectors
from app.errors import ContextLengthExceeded, ErrorInfo, InvalidRequest, OpenAIError
from app.protocol import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
)

Encode = Callable[[Sequence[str]], Awaitable[Vectors]]
CountTokens = Callable[[Sequence[str]], list[int]]
Score = Callable[[str, Sequence[str]], Awaitable[Vectors]]
"""Relevance of each document to the query, higher is better."""


def bi_encoder_score(encode: Encode) -> Score:
    """Cosine similarity of unit-length embeddings: the reranker a bi-encoder gives."""

    async def score(query: str, documents: Sequence[str]) -> Vectors:
        vectors = await encode([query, *documents])
        return np.asarray(vectors[1:] @ vectors[0], dtype=np.float32)

    return score


class EncoderService:
    """`encode` is the (batched) encoder call, `score` the reranker (default: cosine under `encode`);
    `count_tokens` is the model's own tokenizer."""

    def __init__(
        self,
        *,
        model: str,
        encode: Encode,
        count_tokens: CountTokens,
        dimensions: int,
        max_seq_length: int,
        max_inputs: int,
        score: Score | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.model = model
        self._encode = encode
        self._score = score or bi_encoder_score(encode)
        self._count_tokens = count_tokens
        self._dimensions = dimensions
        self._max_seq_length = max_seq_length
        self._max_inputs = max_inputs
        self._new_id = new_id

    def _check(self, texts: Sequence[str], param: str) -> int:
        if len(texts) > self._max_inputs:
            raise InvalidRequest(f"Too many inputs: {len(texts)}; at most {self._max_inputs} are allowed.", param=param)
        counts = self._count_tokens(texts)
        for i, n in enumerate(counts):
            if n > self._max_seq_length:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {self._max_seq_length} tokens. However, {param}[{i}] "
                    f"resulted in {n} tokens. Please reduce its length.",
                    param=param,
                )
        return sum(counts)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse | ErrorInfo:
        texts = request.texts()
        try:
            if request.dimensions is not None and request.dimensions != self._dimensions:
                raise InvalidRequest(
                    f"This model produces {self._dimensions} dimensions; dimensions={request.dimensions} "
                    "is not supported.",
                    param="dimensions",
                )
            tokens = self._check(texts, "input")
        except OpenAIError as exc:
            return exc.info()
        vectors = await self._encode(texts)
        data = [
            Embedding(index=i, embedding=_encoded(vector, request.encoding_format)) for i, vector in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data, model=self.model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )

    async def rerank(self, request: RerankRequest) -> RerankResponse | ErrorInfo:
        """Documents scored against the query (bi-encoder cosine or a cross-encoder), best first."""
        try:
            tokens = self._check([request.query], "query") + self._check(request.documents, "documents")
        except OpenAIError as exc:
            return exc.info()
        scores = await self._score(request.query, request.documents)
        order = sorted(range(len(request.documents)), key=lambda i: (-float(scores[i]), i))
        top = order[: request.top_n] if request.top_n is not None else order
        results = [
            RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                document=RerankDocument(text=request.documents[i]) if request.return_documents else None,
            )
            for i in top
        ]
        return RerankResponse(
            id="rerank-" + self._new_id(),
            model=self.model,
            results=results,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
