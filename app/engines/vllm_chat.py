"""Chat on vLLM's AsyncLLM: continuous batching, streaming deltas, abort on cancellation."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from app.engines.base import EngineStats, FinishReason, GenerationDelta, SamplingSettings
from app.errors import ServiceUnavailable


def cpu_environment(kv_cache_space_gb: int) -> dict[str, str]:
    """Environment a CPU replica needs before vLLM is imported (set through the replica's runtime_env)."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_space_gb),
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def finish_reason(finished: bool, reason: str | None) -> FinishReason | None:
    """OpenAI's finish reason for a vLLM output. vLLM also finishes a request it aborted (`abort`) or could not
    serve (`error`); that answer is cut short, so it is a failure (503, retried where nothing was sent yet), never
    a `stop`."""
    if not finished:
        return None
    if reason in ("stop", "length"):
        return reason  # type: ignore[return-value]
    raise ServiceUnavailable(f"The engine ended the request early (finish reason {reason!r}); retry shortly.")


def prefix_cache_logger(report: Callable[[int, int], None]) -> Any:
    """A vLLM stat logger that hands each update's prefix-cache lookups (tokens queried, tokens hit) to `report`.
    With it, vLLM collects its statistics but keeps its default loggers off (`disable_log_stats`)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
        ) -> None:
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None and stats.queries:
                report(int(stats.queries), int(stats.hits))

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheLogger


class VllmChatEngine:
    def __init__(
        self,
        path: Path,
        *,
        max_model_len: int,
        dtype: Literal["auto", "bfloat16", "float16", "float32"],
        enforce_eager: bool,
        gpu_memory_utilization: float,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        prefix_cache: Callable[[int, int], None] | None = None,
    ) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        args = AsyncEngineArgs(
            model=str(path),
            dtype=dtype,
            enforce_eager=enforce_eager,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            # several GPUs: vLLM's workers run as Ray actors in the replica's placement group
            distributed_executor_backend="ray" if tensor_parallel_size > 1 else None,
            disable_log_stats=True,
            seed=seed,
        )
        loggers = [prefix_cache_logger(prefix_cache)] if prefix_cache is not None else None
        self._engine: Any = AsyncLLM.from_engine_args(args, stat_loggers=loggers)
        self.stats = EngineStats()

    async def generate(
        self, prompt_ids: Sequence[int], sampling: SamplingSettings, request_id: str
    ) -> AsyncGenerator[GenerationDelta, None]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            output_kind=RequestOutputKind.DELTA,
        )
        self.stats.started += 1
        finished = False
        try:
            async for out in self._engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params, request_id):
                completion = out.outputs[0]
                yield GenerationDelta(
                    text=completion.text,
                    num_tokens=len(completion.token_ids),
                    finish_reason=finish_reason(out.finished, completion.finish_reason),
                )
            finished = True
        finally:
            if finished:
                self.stats.finished += 1
            else:
                # vLLM aborts its own request when generate() is cancelled; abort again for other exits.
                self.stats.aborted += 1
                await self._engine.abort(request_id)

    def check_health(self) -> None:
        if self._engine.errored:
            raise RuntimeError(f"vLLM engine is dead: {self._engine.dead_error}")

    def shutdown(self) -> None:
        self._engine.shutdown()
