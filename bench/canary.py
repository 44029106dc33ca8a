"""Benchmark 4: canary split precision. Many distinct users, one request each, against no-op models split
stable/canary at a few configured shares; the observed canary share against the configured one, and whether
a user's repeat request goes to the same version (sticky splits)."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench import servers
from bench.graphs import CANARY_SHARES, canary_model
from bench.load import Call, LoadResult
from bench.report import Table
from bench.runs import Load, measure

USERS = Load(requests=2000, concurrency=32, duration_s=60)
REPEATS = 200


def user_call(model: str, offset: int = 0) -> Callable[[int], Call]:
    def make(index: int) -> Call:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "user": f"user-{offset + index}",
        }
        return Call("/v1/chat/completions", body)

    return make


def versions(result: LoadResult) -> list[str | None]:
    return [s.served_by.rsplit("@", 1)[-1] if s.ok and s.served_by else None for s in result.samples]


def run(scale: float) -> Table:
    load = USERS.scaled(scale)
    table = Table(
        "4. Canary split precision: observed vs configured canary share",
        [
            "configured canary %",
            "users",
            "observed canary %",
            "difference (points)",
            "95% band of a fair draw",
            "sticky repeats",
        ],
        notes=[
            "Each user (the request's `user` field) sends one request; the version is read from `x-served-by`. "
            "The band is ±1.96·sqrt(p(1-p)/n): how far a truly random split would stray over this many users.",
            f"Sticky repeats: the first {REPEATS} users send again; the count that reached the same version.",
            "Served by the no-op graph with RAY_SERVE_THROUGHPUT_OPTIMIZED=1, for speed; the split runs in the "
            "ingress either way.",
        ],
    )
    with servers.graph("noop", front=servers.Front.DIRECT) as base:
        for share in CANARY_SHARES:
            model = canary_model(share)
            first = measure(base, user_call(model), f"{share:g}% canary, {load.requests} users", load)
            again = measure(
                base, user_call(model), f"{share:g}% canary, repeats", Load(min(REPEATS, load.requests), 32, 30)
            )
            chosen = versions(first)
            answered = [v for v in chosen if v is not None]
            observed = 100 * sum(v == "canary" for v in answered) / max(len(answered), 1)
            band = 196 * math.sqrt(share / 100 * (1 - share / 100) / max(len(answered), 1))
            same = sum(a is not None and a == b for a, b in zip(chosen, versions(again), strict=False))
            for run in (first, again):
                failures = [s for s in run.samples if not s.ok]
                if failures:
                    table.failed = True
                    table.notes.append(f"FAILED ({share:g}%): {len(failures)} requests; {failures[0].error}")
            table.add(
                f"{share:g}",
                f"{len(answered)}/{load.requests}",
                f"{observed:.2f}",
                f"{observed - share:+.2f}",
                f"±{band:.2f}",
                f"{same}/{len(again.samples)}",
            )
    return table
