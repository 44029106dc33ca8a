"""CrossEncoderEngine on the tiny random-weight cross-encoder: one sigmoid relevance per pair, exact token counts."""

from __future__ import annotations

import numpy as np
import pytest

from app.engines.cross_encoder import CrossEncoderEngine
from tests.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderEngine:
    return CrossEncoderEngine(build_tiny_cross_encoder(tmp_path_factory.mktemp("rerank") / "m"), device="cpu")


def test_scores_each_pair_in_zero_one_the_same_alone_or_batched(engine: CrossEncoderEngine) -> None:
    pairs = [("where is the cat", "the cat reads a book"), ("where is the cat", "the river sees the sky")]
    scores = engine.score(pairs)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(engine.score(pairs[1:]), scores[1:], atol=1e-5)


def test_max_seq_length_comes_from_the_model_and_is_capped(engine: CrossEncoderEngine) -> None:
    assert 0 < engine.max_seq_length <= 8192


def test_counts_tokens_with_special_tokens(engine: CrossEncoderEngine) -> None:
    texts = ["the cat", "the cat reads a book today"]
    counts = engine.count_tokens(texts)
    tokenizer = engine._model.tokenizer
    assert counts == [len(tokenizer(t)["input_ids"]) for t in texts] and counts[0] < counts[1]
    assert counts[0] > len(tokenizer.tokenize(texts[0]))
