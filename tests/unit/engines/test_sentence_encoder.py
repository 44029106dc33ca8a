"""SentenceEncoder on the tiny random-weight embedding model: unit vectors, exact token counts, token-id decoding."""

from __future__ import annotations

import numpy as np
import pytest

from app.engines.sentence_encoder import SentenceEncoder
from tests.tiny_models import EMBEDDING_DIMENSION, EMBEDDING_MAX_SEQ_LENGTH, build_tiny_embedding_model

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder(build_tiny_embedding_model(tmp_path_factory.mktemp("embed") / "m"), device="cpu")


def test_reads_its_shape_from_the_model(encoder: SentenceEncoder) -> None:
    assert encoder.device == "cpu"
    assert encoder.dimensions == EMBEDDING_DIMENSION and encoder.max_seq_length == EMBEDDING_MAX_SEQ_LENGTH


def test_encodes_one_unit_vector_per_text_the_same_alone_or_batched(encoder: SentenceEncoder) -> None:
    texts = ["the cat reads a book", "the river sees the sky", "a model answers"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, EMBEDDING_DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(texts[1:2])[0], vectors[1], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_counts_tokens_with_special_tokens_and_without_truncation(encoder: SentenceEncoder) -> None:
    short, long = "the cat", " ".join(["the cat reads a book"] * 60)
    counts = encoder.count_tokens([short, long])
    tokenizer = encoder._model.tokenizer
    assert counts[0] == len(tokenizer(short)["input_ids"]) and counts[0] > len(tokenizer.tokenize(short))
    assert counts[1] > EMBEDDING_MAX_SEQ_LENGTH  # counted before the model would truncate


def test_decodes_token_ids_and_refuses_ids_outside_the_vocabulary(encoder: SentenceEncoder) -> None:
    ids = encoder._model.tokenizer("the cat reads")["input_ids"]
    assert encoder.decode(ids) == "the cat reads"  # the special tokens around it are dropped
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encoder.decode([1, len(encoder._model.tokenizer)])
