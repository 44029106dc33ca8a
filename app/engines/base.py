"""The engine interfaces the serving layer codes against."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingSettings:
    """What every engine honours. `temperature` 0 is greedy and `top_p` is in (0, 1] (the serving layer maps the
    spec's top_p 0 to greedy); the penalties follow OpenAI's formula: each token's logit drops by
    `frequency_penalty * count + presence_penalty * (count > 0)`, counting the tokens generated so far."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class GenerationDelta:
    """New text since the previous delta; `finish_reason` is set on the last one."""

    text: str
    num_tokens: int
    finish_reason: FinishReason | None = None


@dataclass
class EngineStats:
    """Counters a test or a metric can read: requests started, finished, aborted, and running now."""

    started: int = 0
    finished: int = 0
    aborted: int = 0

    @property
    def running(self) -> int:
        return self.started - self.finished - self.aborted

    @contextmanager
    def counting(self) -> Iterator[None]:
        """One request: started on entry, finished when the body completes, aborted when it ends with any
        exception (a failure, a cancellation, a generator closed inside it)."""
        self.started += 1
        try:
            yield
        except BaseException:
            self.aborted += 1
            raise
        self.finished += 1


class ChatEngine(Protocol):
    """Generates from token ids; the serving layer tokenizes, so both engines count tokens the same way."""

    stats: EngineStats

    @property
    def adapters(self) -> frozenset[str]:
        """The names of the LoRA adapters loaded now (none for an engine without adapters)."""
        ...

    def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        """Deltas for the prompt, on the base model, or with `adapter` (one of `adapters`) applied."""
        ...

    def check_health(self) -> None:
        """Raise if the engine can no longer serve."""


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of the chat prompt, with the model's template (given the tools) and the generation prompt."""
        ...


Vectors = npt.NDArray[np.float32]


class EncoderEngine(Protocol):
    """Turns texts into unit-length vectors (embeddings, and the bi-encoder reranker)."""

    dimensions: int
    max_seq_length: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...
