"""A version that fails every call, under load: its breaker opens, clients see no failure (each failed call is
retried on stable), and once open no more calls reach it. (tests/serve/test_traffic.py checks the retry one
request at a time; this checks the breaker itself, under concurrency.)"""

from __future__ import annotations

import asyncio

import pytest

from app.traffic.split import user_point
from bench.load import Call, run_load
from tests.reliability.conftest import BAD_DELAY_MS, BREAKER_THRESHOLD, FLAKY, chat_body

pytestmark = pytest.mark.timeout(240)
REQUESTS, CONCURRENCY = 300, 16


def users_split_to_bad(count: int) -> list[str]:
    """Users whose sticky split point lands on `bad` (50/50, the canary first on the weight line)."""
    users = (f"bad-bound-{i}" for i in range(10_000))
    return [u for u in users if user_point(FLAKY, u) < 0.5][:count]


def test_failing_version_opens_its_breaker_and_traffic_moves_to_stable(reliability_graph: str) -> None:
    def make(index: int) -> Call:
        return Call("/v1/chat/completions", chat_body(FLAKY, max_tokens=2, user=f"load-{index}"))

    result = asyncio.run(run_load(reliability_graph, make, requests=REQUESTS, concurrency=CONCURRENCY, duration_s=150))
    assert [s.index for s in result.samples] == list(range(REQUESTS))
    assert [(s.status, s.error) for s in result.samples if not s.ok] == []
    assert {s.served_by for s in result.samples} == {f"{FLAKY}@stable"}
    # a request that reached `bad` waited out its injected delay before its retry on stable: the breaker needed
    # BREAKER_THRESHOLD of them to open (latency under load says no more than that: queueing adds to it too)
    assert sum(s.e2e_s >= BAD_DELAY_MS / 1000 for s in result.samples) >= BREAKER_THRESHOLD

    # then one at a time, so that nothing queues: users whose split says `bad` are served by stable without
    # the delay, so no call went to `bad` first; with the breaker closed each would take the delay and a retry
    users = users_split_to_bad(10)

    def bound(index: int) -> Call:
        return Call("/v1/chat/completions", chat_body(FLAKY, max_tokens=2, user=users[index]))

    after = asyncio.run(run_load(reliability_graph, bound, requests=10, concurrency=1, duration_s=60)).samples
    assert [(s.status, s.served_by) for s in after] == [(200, f"{FLAKY}@stable")] * 10
    assert max(s.e2e_s for s in after) < BAD_DELAY_MS / 1000, [round(s.e2e_s, 3) for s in after]
