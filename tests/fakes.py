"""Test doubles for unit tests: a manual clock, a character tokenizer, a scripted engine, adapter and base model
folders that hold only what the adapter checks read. Never used by the product."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engines.base import EngineStats, GenerationDelta, SamplingSettings, Vectors
from app.serving.embedding import EncoderService


class ManualClock:
    """A clock that moves only when a test sets or advances `now`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CharTokenizer:
    """One token per character; the chat template is `role: content\\n` per message plus `assistant: `."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        tools_line = f"tools: {json.dumps(list(tools))}\n" if tools else ""
        text = tools_line + "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text)


class ScriptedEngine:
    """Answers with `reply`, one word per delta, stopping at max_tokens (one token per word) or a stop string."""

    def __init__(self, reply: str = "Paris is the capital", delay_s: float = 0.0, fail_after: int | None = None):
        self.reply = reply.split(" ")
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.stats = EngineStats()
        self.seen: list[tuple[list[int], SamplingSettings]] = []
        self.adapters: frozenset[str] = frozenset()  # a test sets the adapters it pretends are loaded
        self.seen_adapters: list[str | None] = []  # the `adapter` of each call, in the order of `seen`

    async def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        with self.stats.counting():
            self.seen.append((list(prompt_ids), sampling))
            self.seen_adapters.append(adapter)
            words = self.reply[: sampling.max_tokens]
            for i, word in enumerate(words):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("engine failed")
                await asyncio.sleep(self.delay_s)
                text = word if i == 0 else " " + word
                if any(stop in text for stop in sampling.stop):
                    yield GenerationDelta("", 0, "stop")
                    return
                last = i == len(words) - 1
                reason = None if not last else ("length" if len(words) == sampling.max_tokens else "stop")
                yield GenerationDelta(text, 1, reason)

    def check_health(self) -> None:
        return None


class HashEncoder:
    """Deterministic unit vectors from character counts; similar texts get similar vectors."""

    dimensions = 26
    max_seq_length = 64

    def encode(self, texts: Sequence[str]) -> Vectors:
        rows = []
        for text in texts:
            v = np.zeros(self.dimensions, dtype=np.float32)
            for c in text.lower():
                if "a" <= c <= "z":
                    v[ord(c) - 97] += 1
            rows.append(v / (np.linalg.norm(v) or 1.0))
        return np.stack(rows)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids are character codes below 128."""
        if any(not 0 <= i < 128 for i in ids):
            raise ValueError("ids outside 0..127")
        return "".join(chr(i) for i in ids)


def hash_encoder_service(max_inputs: int = 10) -> EncoderService:
    """The embeddings and rerank service over a HashEncoder, model "e", with fixed response ids ("x")."""
    encoder = HashEncoder()

    async def encode(texts: Sequence[str]) -> Vectors:
        return encoder.encode(texts)

    return EncoderService(
        model="e",
        encode=encode,
        count_tokens=encoder.count_tokens,
        decode=encoder.decode,
        dimensions=encoder.dimensions,
        max_seq_length=encoder.max_seq_length,
        max_inputs=max_inputs,
        new_id=lambda: "x",
    )


def fake_adapter_folder(root: Path, rank: int = 8, targets: Sequence[str] = ("q_proj",)) -> Path:
    """A LoRA adapter folder: its adapter_config.json and an (empty) weights file."""
    root.mkdir(parents=True)
    config = {"r": rank, "target_modules": list(targets), "peft_type": "LORA", "lora_alpha": 2 * rank}
    (root / "adapter_config.json").write_text(json.dumps(config))
    (root / "adapter_model.safetensors").write_bytes(b"")
    return root


def fake_base_folder(root: Path) -> Path:
    """A base model folder whose one safetensors header names q_proj and v_proj of one layer."""
    root.mkdir(parents=True)
    names = [f"model.layers.0.self_attn.{p}.weight" for p in ("q_proj", "v_proj")]
    header = json.dumps({n: {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]} for n in names}).encode()
    (root / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    return root
