"""The tiny random-weight models that plumbing tests run on: they load offline, generate and encode."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import (
    CHAT_MAX_POSITIONS,
    EMBEDDING_DIMENSION,
    EMBEDDING_MAX_SEQ_LENGTH,
    EOS_TOKEN,
    build_tiny_chat_model,
    build_tiny_embedding_model,
    build_tiny_lora_adapter,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("tiny")
    build_tiny_chat_model(root / "chat")
    build_tiny_embedding_model(root / "embed")
    return root


def test_chat_model_loads_applies_chatml_and_generates(built: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built / "chat")
    model: Any = AutoModelForCausalLM.from_pretrained(built / "chat")
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.max_position_embeddings == CHAT_MAX_POSITIONS

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, ünïcode 😀?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi, ünïcode 😀?<|im_end|>\n<|im_start|>assistant\n"
    )
    closed = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert isinstance(closed, str) and closed == text.removesuffix("<|im_start|>assistant\n")

    encoded = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(encoded["input_ids"][0]) == text  # byte-level BPE: no unknown tokens
    out = model.generate(**encoded, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, encoded["input_ids"].shape[1] + 8)
    assert isinstance(tokenizer.decode(out[0, encoded["input_ids"].shape[1] :]), str)


def test_chat_model_batches_with_left_padding(built: Path) -> None:
    """Greedy outputs differ by prompt, and a left-padded batch gives each prompt its own answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built / "chat", padding_side="left")
    model: Any = AutoModelForCausalLM.from_pretrained(built / "chat")
    prompts = ["Hello", "What is the capital of France? Tell me the answer."]

    def greedy(texts: list[str]) -> list[list[int]]:
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
        return [row.tolist() for row in out[:, batch["input_ids"].shape[1] :]]

    alone = [greedy([prompt])[0] for prompt in prompts]
    assert alone[0] != alone[1]
    assert greedy(prompts) == alone


def test_embedding_model_encodes_to_its_dimension(built: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(built / "embed"), device="cpu")
    assert model.max_seq_length == EMBEDDING_MAX_SEQ_LENGTH
    vectors = model.encode(["hello world", "zebra " * 500, ""])  # the long one is truncated, not an error
    assert vectors.shape == (3, EMBEDDING_DIMENSION)


def test_builds_are_idempotent_and_deterministic(built: Path, tmp_path: Path) -> None:
    for name, build in (("chat", build_tiny_chat_model), ("embed", build_tiny_embedding_model)):
        before = {p: p.stat().st_mtime_ns for p in (built / name).rglob("*")}
        started = time.monotonic()
        assert build(built / name) == built / name
        assert time.monotonic() - started < 0.5  # returned at once
        assert {p: p.stat().st_mtime_ns for p in (built / name).rglob("*")} == before

        again = build(tmp_path / name)
        for file in ("model.safetensors", "tokenizer.json"):
            assert (again / file).read_bytes() == (built / name / file).read_bytes(), f"{name}/{file} differs"


def test_tiny_cross_encoder_scores_pairs(tmp_path: Path) -> None:
    from app.engines.cross_encoder import CrossEncoderEngine
    from tests.tiny_models import build_tiny_cross_encoder

    engine = CrossEncoderEngine(build_tiny_cross_encoder(tmp_path / "ce"), device="cpu")
    scores = engine.score([("a query", "a document"), ("a query", "something else entirely")])
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    assert engine.count_tokens(["a query"])[0] >= 3  # [CLS] ... [SEP]


def test_lora_adapter_build_is_idempotent_and_seeded(built: Path, tmp_path: Path) -> None:
    adapter = build_tiny_lora_adapter(built / "chat", tmp_path / "a", rank=2, target_modules=("q_proj", "o_proj"))
    before = {p: p.stat().st_mtime_ns for p in adapter.rglob("*")}
    assert build_tiny_lora_adapter(built / "chat", adapter) == adapter
    assert {p: p.stat().st_mtime_ns for p in adapter.rglob("*")} == before

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], sorted(config["target_modules"])) == ("LORA", 2, ["o_proj", "q_proj"])
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    same = build_tiny_lora_adapter(built / "chat", tmp_path / "same", rank=2, target_modules=("q_proj", "o_proj"))
    other = build_tiny_lora_adapter(
        built / "chat", tmp_path / "other", rank=2, seed=1, target_modules=("q_proj", "o_proj")
    )
    assert (same / "adapter_model.safetensors").read_bytes() == weights
    assert (other / "adapter_model.safetensors").read_bytes() != weights
