"""Rerank with a cross-encoder (e.g. bge-reranker): query and document read together, one relevance score each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engines.base import Vectors
from app.engines.transformers_chat import pick_device


class CrossEncoderEngine:
    def __init__(self, path: Path, *, device: str = "auto") -> None:
        from sentence_transformers import CrossEncoder

        self.device = pick_device(device)
        self._model: Any = CrossEncoder(str(path), device=self.device, local_files_only=path.is_dir())
        max_length: Any = self._model.max_length or self._model.tokenizer.model_max_length
        self.max_seq_length = int(min(int(max_length), 8192))

    def score(self, pairs: Sequence[tuple[str, str]]) -> Vectors:
        """Relevance in (0, 1) per (query, document) pair (the model's logit through a sigmoid)."""
        import torch

        scores = self._model.predict(
            list(pairs), batch_size=max(1, len(pairs)), activation_fn=torch.nn.Sigmoid(), convert_to_numpy=True
        )
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]
