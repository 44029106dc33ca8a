"""The tokenizer the ingress counts with, shared by many request threads at once."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.tokenizer import HFTokenizer
from tests.tiny_models import build_tiny_chat_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    return HFTokenizer(build_tiny_chat_model(tmp_path_factory.mktemp("tok") / "chat"))


def test_counts_agree_and_nothing_fails_under_concurrent_counting(tokenizer: HFTokenizer) -> None:
    texts = [("word " * (50 + i)).strip() for i in range(64)]
    expected = [len(tokenizer.render_chat([{"role": "user", "content": t}])) for t in texts]
    with ThreadPoolExecutor(max_workers=32) as pool:
        counted = list(pool.map(lambda t: len(tokenizer.render_chat([{"role": "user", "content": t}])), texts * 8))
    assert counted == expected * 8


def test_encode_and_decode_round_trip(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    ids = tokenizer.encode("hello world")
    assert ids and tokenizer.decode(ids).replace(" ", "") == "helloworld"
