"""Chat on transformers: requests merged into one batched `generate` (the replica batches with @serve.batch)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engines.base import EngineStats, FinishReason, GenerationDelta, SamplingSettings


@dataclass(frozen=True)
class GenerationCall:
    prompt_ids: tuple[int, ...]
    sampling: SamplingSettings


@dataclass(frozen=True)
class GenerationResult:
    text: str
    num_tokens: int
    finish_reason: FinishReason


Submit = Callable[[GenerationCall], Awaitable[GenerationResult]]


def pick_device(device: str) -> str:
    """`auto` means CUDA when a GPU is visible, else CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersChatEngine:
    """`run_batch` is synchronous and batched; `generate` submits one call through `submit`.

    By default `submit` runs a batch of one in a thread; a replica replaces it with a @serve.batch method that
    merges concurrent calls into one `run_batch`.
    """

    def __init__(self, path: Path, *, device: str = "auto", submit: Submit | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self._tok: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=path.is_dir())
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=path.is_dir(), dtype=dtype)
        self._model: Any = model.to(self.device).eval()
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        self._eos_id = self._tok.eos_token_id
        self.submit: Submit = submit or self._run_one
        self.stats = EngineStats()

    async def _run_one(self, call: GenerationCall) -> GenerationResult:
        (result,) = await asyncio.to_thread(self.run_batch, [call])
        return result

    async def generate(
        self, prompt_ids: Sequence[int], sampling: SamplingSettings, request_id: str
    ) -> AsyncGenerator[GenerationDelta, None]:
        with self.stats.counting():  # finished once the result is in, before the caller reads it
            result = await self.submit(GenerationCall(tuple(prompt_ids), sampling))
        yield GenerationDelta(text=result.text, num_tokens=result.num_tokens, finish_reason=result.finish_reason)

    def check_health(self) -> None:
        return None

    def run_batch(self, calls: Sequence[GenerationCall]) -> list[GenerationResult]:
        """Generate for every call; calls with the same sampling settings share one `generate`."""
        results: dict[int, GenerationResult] = {}
        groups: dict[tuple[float, float, int | None], list[int]] = {}
        for i, call in enumerate(calls):
            s = call.sampling
            groups.setdefault((s.temperature, s.top_p, s.seed), []).append(i)
        for indices in groups.values():
            for i, result in zip(indices, self._generate_group([calls[i] for i in indices]), strict=True):
                results[i] = result
        return [results[i] for i in range(len(calls))]

    def _generate_group(self, calls: Sequence[GenerationCall]) -> list[GenerationResult]:
        import torch

        sampling = calls[0].sampling
        width = max(len(c.prompt_ids) for c in calls)
        ids = torch.full((len(calls), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(calls), width), dtype=torch.long)
        for row, call in enumerate(calls):  # left padding, so every row ends where generation starts
            ids[row, width - len(call.prompt_ids) :] = torch.tensor(call.prompt_ids, dtype=torch.long)
            mask[row, width - len(call.prompt_ids) :] = 1
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        greedy = sampling.temperature == 0.0
        penalties = [(c.sampling.presence_penalty, c.sampling.frequency_penalty) for c in calls]
        processors = [Penalties(width, penalties, self.device)] if any(p != (0.0, 0.0) for p in penalties) else []
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                logits_processor=processors,
                max_new_tokens=max(c.sampling.max_tokens for c in calls),
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                pad_token_id=self._pad_id,
                eos_token_id=self._eos_id,
            )
        return [self._finish(call, out[row, width:].tolist()) for row, call in enumerate(calls)]

    def _finish(self, call: GenerationCall, generated: list[int]) -> GenerationResult:
        limit = call.sampling.max_tokens
        reason: FinishReason = "length"
        if self._eos_id in generated[:limit]:
            generated = generated[: generated.index(self._eos_id)]
            reason = "stop"
        generated = generated[:limit]
        text = self._decode(generated)
        cut = _first_stop(text, call.sampling.stop)
        if cut is not None:
            stops = call.sampling.stop
            n = fewest_tokens(len(generated), lambda k: _first_stop(self._decode(generated[:k]), stops) is not None)
            return GenerationResult(text=text[:cut], num_tokens=n, finish_reason="stop")
        return GenerationResult(text=text, num_tokens=len(generated), finish_reason=reason)

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


class Penalties:
    """OpenAI's presence and frequency penalties as a `generate` logits processor, one pair per row: a token's logit
    drops by `frequency * count + presence * (count > 0)`, counting the tokens generated after `prompt_width`
    (as vLLM does). It runs before temperature and top_p, as in vLLM."""

    def __init__(self, prompt_width: int, penalties: Sequence[tuple[float, float]], device: str) -> None:
        import torch

        self._start = prompt_width
        self._presence = torch.tensor([p for p, _ in penalties], device=device)[:, None]
        self._frequency = torch.tensor([f for _, f in penalties], device=device)[:, None]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids[:, self._start :]
        counts = scores.new_zeros(scores.shape).scatter_add_(1, generated, scores.new_ones(generated.shape))
        return scores - self._frequency.to(scores.dtype) * counts - self._presence.to(scores.dtype) * (counts > 0)


def fewest_tokens(total: int, reaches: Callable[[int], bool]) -> int:
    """The smallest k in [0, total] whose k-token prefix `reaches` the stop sequence, given that `total` does: a
    binary search (a longer prefix holds a shorter one's text), so a stop costs O(log n) decodes, not O(n)."""
    low, high = 0, total
    while low < high:
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None
