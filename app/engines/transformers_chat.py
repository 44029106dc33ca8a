"""Chat on transformers: requests merged into one batched `generate` (the replica batches with @serve.batch), each
on the base model or on one of the LoRA adapters loaded with peft."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engines.base import EngineStats, FinishReason, GenerationDelta, SamplingSettings
from app.errors import InvalidRequest, NotFound, OpenAIError, ServiceUnavailable

# peft's name for "no adapter" in a mixed batch's `adapter_names`
BASE_ROW = "__base__"


@dataclass(frozen=True)
class GenerationCall:
    prompt_ids: tuple[int, ...]
    sampling: SamplingSettings
    adapter: str | None = None  # a loaded LoRA adapter's name; None is the base model


@dataclass(frozen=True)
class GenerationResult:
    text: str
    num_tokens: int
    finish_reason: FinishReason
    # set instead of a text when this call could not run (its adapter was unloaded after it was submitted);
    # `generate` raises it, so one such call fails alone rather than its whole batch
    error: OpenAIError | None = None


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

    LoRA adapters: `load_adapter` wraps the model in a peft `PeftModel` on the first load and adds to it after;
    `unload_adapter` deletes one, and unwraps the model when it was the last. A batch mixes base and adapter calls
    in one `generate` (peft's `adapter_names`, one name per row), so a call gets the tokens it would get alone.
    Loading, unloading and batches run in threads and take one lock; `adapters` reads a mapping that is replaced,
    never changed, so it takes no lock (the event loop may read it while a batch runs).
    """

    def __init__(self, path: Path, *, device: str = "auto", submit: Submit | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self._tok: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=path.is_dir())
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=path.is_dir(), dtype=dtype)
        self._base: Any = model.to(self.device).eval()
        self._model: Any = self._base  # the base, or the PeftModel around it while any adapter is loaded
        self._loaded: Mapping[str, Path] = {}
        self._lock = threading.Lock()
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        self._eos_id = self._tok.eos_token_id
        self.submit: Submit = submit or self._run_one
        self.stats = EngineStats()

    async def _run_one(self, call: GenerationCall) -> GenerationResult:
        (result,) = await asyncio.to_thread(self.run_batch, [call])
        return result

    @property
    def adapters(self) -> frozenset[str]:
        return frozenset(self._loaded)

    def load_adapter(self, name: str, path: Path) -> None:
        """Load the peft LoRA adapter saved at `path` as `name`; loading a name again from the same path does nothing.
        Raises InvalidRequest (naming the adapter and the reason) when it cannot be loaded, and then serves exactly
        as before: the base and the other adapters unchanged."""
        path = Path(path)
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded == path:
                return
            if loaded is not None:
                raise InvalidRequest(f"The adapter {name!r} is already loaded from {loaded}; unload it first.")
            try:
                self._attach(name, path)
            except Exception as exc:
                self._detach_failed(name)
                raise InvalidRequest(f"The adapter {name!r} could not be loaded from {path}: {_reason(exc)}") from exc
            self._loaded = {**self._loaded, name: path}

    def unload_adapter(self, name: str) -> None:
        """Delete a loaded adapter; after the last one the model is the plain base model again."""
        with self._lock:
            if name not in self._loaded:
                raise NotFound(f"The adapter {name!r} is not loaded.")
            self._loaded = {k: v for k, v in self._loaded.items() if k != name}
            if self._loaded:
                if self._model.active_adapter == name:  # hand "active" on first, or peft warns that it does
                    self._model.set_adapter(next(iter(self._loaded)), inference_mode=True)
                self._model.delete_adapter(name)
            else:
                self._model = self._base = self._model.unload()

    def _attach(self, name: str, path: Path) -> None:
        from peft import PeftConfig, PeftModel, PeftType

        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"there is no adapter_config.json in {path}")
        config = PeftConfig.from_pretrained(str(path))
        if config.peft_type != PeftType.LORA:
            raise ValueError(f"it is a {config.peft_type} adapter; only LoRA adapters are served")
        if config.task_type not in (None, "CAUSAL_LM"):
            raise ValueError(f"its task_type is {config.task_type}, not CAUSAL_LM")
        if self._model is self._base:
            self._model = PeftModel.from_pretrained(self._base, str(path), adapter_name=name)
        else:
            self._model.load_adapter(str(path), adapter_name=name)
        self._model.eval()

    def _detach_failed(self, name: str) -> None:
        """Undo whatever a failed load of `name` left behind (peft may have added its layers before the weights
        failed to load)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._model is self._base or not self._loaded:  # no adapter before this one: strip every peft layer
            self._model = self._base
            for parent in list(self._base.modules()):
                for child_name, child in list(parent.named_children()):
                    if isinstance(child, BaseTunerLayer):
                        setattr(parent, child_name, child.get_base_layer())
            if hasattr(self._base, "peft_config"):  # peft's record of its adapters, as its own unload removes it
                del self._base.peft_config
            return
        if name in self._model.peft_config:
            self._model.delete_adapter(name)
        for module in self._base.modules():  # layers added before peft's own rollback dropped the config
            if isinstance(module, BaseTunerLayer):
                module.delete_adapter(name)  # a no-op on a layer without it

    async def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        with self.stats.counting():  # finished once the result is in, before the caller reads it
            result = await self.submit(GenerationCall(tuple(prompt_ids), sampling, adapter))
            if result.error is not None:
                raise result.error
        yield GenerationDelta(text=result.text, num_tokens=result.num_tokens, finish_reason=result.finish_reason)

    def check_health(self) -> None:
        return None

    def run_batch(self, calls: Sequence[GenerationCall]) -> list[GenerationResult]:
        """Generate for every call; calls with the same sampling settings share one `generate`, whatever their
        adapters. A call whose adapter is no longer loaded gets an error result and the others still run."""
        results: dict[int, GenerationResult] = {}
        groups: dict[tuple[float, float, int | None], list[int]] = {}
        with self._lock:
            for i, call in enumerate(calls):
                if call.adapter is not None and call.adapter not in self._loaded:
                    error = ServiceUnavailable(f"The adapter {call.adapter!r} is no longer loaded on this replica.")
                    results[i] = GenerationResult(text="", num_tokens=0, finish_reason="stop", error=error)
                    continue
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
        # While adapters are loaded, every row names its own (the base included: else peft would apply the active one)
        rows = {"adapter_names": [c.adapter or BASE_ROW for c in calls]} if self._loaded else {}
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
                **rows,
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


def _reason(exc: Exception, limit: int = 400) -> str:
    """peft's reason on one line, cut short: a state dict's mismatch lists every layer."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


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
