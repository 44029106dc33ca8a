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
Decode = Callable[[Sequence[int]], str]
"""Token ids of the model's own tokenizer back to text; raises ValueError for ids outside its vocabulary."""
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
    `count_tokens` is the model's own tokenizer, and `decode` takes token-id inputs back to text through it (a
    service without it serves text inputs only)."""

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
        decode: Decode | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.model = model
        self._encode = encode
        self._score = score or bi_encoder_score(encode)
        self._count_tokens = count_tokens
        self._decode = decode
        self._dimensions = dimensions
        self._max_seq_length = max_seq_length
        self._max_inputs = max_inputs
        self._new_id = new_id

    def _check(self, texts: Sequence[str], param: str, counts: list[int] | None = None) -> int:
        if len(texts) > self._max_inputs:
            raise InvalidRequest(f"Too many inputs: {len(texts)}; at most {self._max_inputs} are allowed.", param=param)
        counts = counts if counts is not None else self._count_tokens(texts)
        for i, n in enumerate(counts):
            if n > self._max_seq_length:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {self._max_seq_length} tokens. However, {param}[{i}] "
                    f"resulted in {n} tokens. Please reduce its length.",
                    param=param,
                )
        return sum(counts)

    def _texts(self, inputs: Sequence[str | list[int]]) -> tuple[list[str], list[int] | None]:
        """Texts to encode, and the token counts of token-id inputs (their own length)."""
        if all(isinstance(item, str) for item in inputs):
            return [item for item in inputs if isinstance(item, str)], None
        if self._decode is None:
            raise InvalidRequest("This model takes text inputs only, not token ids.", param="input")
        texts: list[str] = []
        for i, ids in enumerate(inputs):
            try:
                texts.append(self._decode(ids if isinstance(ids, list) else []))
            except ValueError as exc:
                raise InvalidRequest(f"input[{i}] is not token ids of this model: {exc}", param="input") from exc
        return texts, [len(ids) for ids in inputs]

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse | ErrorInfo:
        try:
            texts, counts = self._texts(request.inputs())
            if request.dimensions is not None and request.dimensions != self._dimensions:
                raise InvalidRequest(
                    f"This model produces {self._dimensions} dimensions; dimensions={request.dimensions} "
                    "is not supported.",
                    param="dimensions",
                )
            tokens = self._check(texts, "input", counts)
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
