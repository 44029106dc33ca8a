"""Embeddings with sentence-transformers: normalised vectors, exact token counts from the model's tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engines.base import Vectors
from app.engines.transformers_chat import pick_device


class SentenceEncoder:
    def __init__(self, path: Path, *, device: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self._model: Any = SentenceTransformer(str(path), device=self.device, local_files_only=path.is_dir())
        dimensions: Any = self._model.get_embedding_dimension()
        max_seq_length: Any = self._model.max_seq_length
        self.dimensions = int(dimensions)
        self.max_seq_length = int(max_seq_length)

    def encode(self, texts: Sequence[str]) -> Vectors:
        vectors = self._model.encode(
            list(texts), batch_size=max(1, len(texts)), normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids of this model's tokenizer as text (special tokens dropped), for token-id inputs."""
        vocab = len(self._model.tokenizer)
        outside = [i for i in ids if not 0 <= i < vocab]
        if outside:
            raise ValueError(f"ids {outside[:5]} are outside the vocabulary of {vocab} tokens")
        return str(self._model.tokenizer.decode(list(ids), skip_special_tokens=True))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before the model's truncation."""
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]
