"""The target model's own tokenizer: exact token counts for limits and usage."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class HFTokenizer:
    """A Hugging Face tokenizer loaded from the model's folder (offline). Safe to share between threads: a fast
    tokenizer used by two threads at once can raise "Already borrowed", so calls take turns."""

    def __init__(self, path: Path, chat_template: str | None = None) -> None:
        """`chat_template`: a Jinja template that replaces the model's own (as vLLM's `--chat-template`)."""
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=path.is_dir())
        if chat_template is not None:
            self._tok.chat_template = chat_template
        self._lock = threading.Lock()

    @property
    def eos_token_id(self) -> int | None:
        value = self._tok.eos_token_id
        return int(value) if value is not None else None

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        with self._lock:
            text = self._tok.apply_chat_template(
                [dict(m) for m in messages],
                tools=[dict(t) for t in tools] if tools else None,
                tokenize=False,
                add_generation_prompt=True,
            )
            return list(self._tok.encode(text, add_special_tokens=False))
