import base64
from collections.abc import Sequence

import numpy as np

from app.errors import ErrorInfo
from app.protocol import EmbeddingRequest, EmbeddingResponse, RerankRequest, RerankResponse
from app.serving.embedding import EncoderService
from tests.fakes import HashEncoder
from tests.fakes import hash_encoder_service as service


async def test_float_and_base64_agree() -> None:
    plain = await service().embed(EmbeddingRequest(model="e", input=["abc", "xyz"]))
    packed = await service().embed(EmbeddingRequest(model="e", input=["abc", "xyz"], encoding_format="base64"))
    assert isinstance(plain, EmbeddingResponse) and isinstance(packed, EmbeddingResponse)
    assert [d.index for d in plain.data] == [0, 1]
    for a, b in zip(plain.data, packed.data, strict=True):
        assert isinstance(b.embedding, str)
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        assert np.allclose(decoded, a.embedding)
    assert plain.usage.prompt_tokens == 6


async def test_token_limit_and_input_count() -> None:
    result = await service().embed(EmbeddingRequest(model="e", input=["word " * 100]))
    assert isinstance(result, ErrorInfo) and result.code == "context_length_exceeded" and "102" in result.message
    result = await service(max_inputs=2).embed(EmbeddingRequest(model="e", input=["a", "b", "c"]))
    assert isinstance(result, ErrorInfo) and result.status == 400 and result.param == "input"


async def test_dimensions_must_match() -> None:
    result = await service().embed(EmbeddingRequest(model="e", input="a", dimensions=8))
    assert isinstance(result, ErrorInfo) and result.param == "dimensions"
    assert isinstance(await service().embed(EmbeddingRequest(model="e", input="a", dimensions=26)), EmbeddingResponse)


async def test_rerank_sorts_best_first_and_cuts_top_n() -> None:
    docs = ["zzz qqq", "apple pie", "apple pies", "xylophone"]
    result = await service().rerank(
        RerankRequest(model="e", query="apple pies", documents=docs, top_n=2, return_documents=True)
    )
    assert isinstance(result, RerankResponse)
    assert [r.index for r in result.results] == [2, 1]
    scores = [r.relevance_score for r in result.results]
    assert scores == sorted(scores, reverse=True)
    assert result.results[0].document is not None and result.results[0].document.text == docs[2]


async def test_rerank_uses_the_given_scorer() -> None:
    encoder = HashEncoder()

    async def encode(texts: Sequence[str]) -> np.ndarray:
        return encoder.encode(texts)

    async def by_length(query: str, documents: Sequence[str]) -> np.ndarray:
        return np.array([len(d) for d in documents], dtype=np.float32)

    svc = EncoderService(
        model="r",
        encode=encode,
        score=by_length,
        count_tokens=encoder.count_tokens,
        dimensions=encoder.dimensions,
        max_seq_length=64,
        max_inputs=10,
    )
    result = await svc.rerank(RerankRequest(model="r", query="q", documents=["aa", "a", "aaaa"]))
    assert isinstance(result, RerankResponse)
    assert [r.index for r in result.results] == [2, 0, 1]
    assert [r.relevance_score for r in result.results] == [4.0, 2.0, 1.0]


async def test_token_ids_embed_as_their_text_and_count_as_their_length() -> None:
    encoder = service()
    ids = await encoder.embed(EmbeddingRequest(model="e", input=[[99, 97, 116], [100, 111, 103]]))
    text = await encoder.embed(EmbeddingRequest(model="e", input=["cat", "dog"]))
    assert not isinstance(ids, ErrorInfo) and not isinstance(text, ErrorInfo)
    assert [d.embedding for d in ids.data] == [d.embedding for d in text.data]
    assert ids.usage.prompt_tokens == 6
    outside = await encoder.embed(EmbeddingRequest(model="e", input=[500]))
    assert isinstance(outside, ErrorInfo) and outside.status == 400 and outside.param == "input"
