"""A measured run: a warm-up the figures leave out, then the load, with a progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bench.load import Call, LoadResult, Progress, Summary, run_load


@dataclass(frozen=True)
class Load:
    requests: int
    concurrency: int
    duration_s: float
    warmup: int = 0  # requests sent first, at the same concurrency, and not counted

    def scaled(self, scale: float) -> Load:
        return Load(max(1, round(self.requests * scale)), self.concurrency, self.duration_s, self.warmup)


def measure(base: str, make_call: Callable[[int], Call], label: str, load: Load, timeout_s: float = 300) -> LoadResult:
    def run(requests: int, progress: Progress | None) -> LoadResult:
        return asyncio.run(
            run_load(
                base,
                make_call,
                requests=requests,
                concurrency=load.concurrency,
                duration_s=load.duration_s,
                timeout_s=timeout_s,
                progress=progress,
            )
        )

    if load.warmup:
        run(load.warmup, None)
    return run(load.requests, Progress(label, load.requests))


def summarize(base: str, make_call: Callable[[int], Call], label: str, load: Load) -> Summary:
    return Summary.of(measure(base, make_call, label, load))
