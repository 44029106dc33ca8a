"""Load on the default graph (vLLM SmolLM2 with its transformers canary, MiniLM embeddings and rerank): a mixed
stream of requests at concurrency 32, in two halves bounded by count and by time (on 2 cores the time bound is
what ends each half: about 4 minutes in all). No 5xx, no request lost (each gets exactly one answer), and the
memory of the graph's processes stays flat from the end of the first half to the end of the second."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from bench.load import Call, LoadResult, Summary, run_load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHAT, EMBED, RERANK = "smollm2-135m-instruct", "all-minilm-l6-v2", "minilm-rerank"
HALF, CONCURRENCY, HALF_DURATION_S = 2000, 32, 90  # requests started in each half: at most HALF, for at most 90 s
MIN_HALF = 100  # fewer means the graph barely served at all
MEMORY_GROWTH_LIMIT_MB = 250


def mixed_call(index: int) -> Call:
    """Six kinds of request in turn; chat is short (4 tokens) so that the run is about the graph, not decoding."""
    kind, user = index % 10, f"user-{index % 500}"
    question = [{"role": "user", "content": f"Say a word about the number {index}."}]
    if kind < 3:
        return Call("/v1/chat/completions", {"model": CHAT, "messages": question, "max_tokens": 4, "user": user})
    if kind == 3:
        body = {"model": CHAT, "messages": question, "max_tokens": 4, "stream": True, "user": user}
        return Call("/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    if kind == 4:
        return Call("/v1/completions", {"model": CHAT, "prompt": f"Count to {index % 9 + 1}:", "max_tokens": 4})
    if kind < 8:
        texts = [f"sentence {index} number {k}" for k in range(1 if kind < 7 else 4)]
        return Call("/v1/embeddings", {"model": EMBED, "input": texts})
    docs = ["Paris is in France.", f"The number {index}.", "Bananas are yellow.", "Rivers flow to the sea."]
    return Call("/v1/rerank", {"model": RERANK, "query": "Where is Paris?", "documents": docs})


def graph_memory_mb() -> float:
    """PSS of every process this test session started (Ray, the replicas, vLLM's engine processes)."""
    total = 0
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def run(base: str, offset: int, requests: int) -> LoadResult:
    return asyncio.run(
        run_load(
            base,
            lambda i: mixed_call(offset + i),
            requests=requests,
            concurrency=CONCURRENCY,
            duration_s=HALF_DURATION_S,
            timeout_s=120,
        )
    )


def test_mixed_load_has_no_5xx_loses_nothing_and_memory_is_flat(
    default_graph: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(default_graph, 0, 64)  # warm-up: every replica has served a few requests
    halves: list[LoadResult] = []
    memory = [graph_memory_mb()]
    for half in range(2):
        halves.append(run(default_graph, half * HALF, HALF))
        memory.append(graph_memory_mb())
    for result in halves:
        sent = len(result.samples)
        assert sent >= MIN_HALF, f"only {sent} requests in {HALF_DURATION_S} s"
        assert [s.index for s in result.samples] == list(range(sent))  # exactly one answer each
        assert [(s.index, s.status, s.error) for s in result.samples if not s.ok] == []
        ids = [s.response_id for s in result.samples if s.response_id is not None]
        assert len(ids) == len(set(ids)), "a response id came back twice"
    growth = memory[2] - memory[1]
    assert growth < MEMORY_GROWTH_LIMIT_MB, f"memory grew {growth:.0f} MiB over the second half: {memory}"
    samples = [s for r in halves for s in r.samples]
    total = Summary.of(LoadResult(samples, sum(r.wall_s for r in halves), 2 * HALF))
    with capsys.disabled():
        print(
            f"\n  load: {total.ok} requests at concurrency {CONCURRENCY} in {total.wall_s:.0f} s "
            f"({total.requests_per_s:.1f}/s, e2e p50 {total.e2e_ms[0]:.0f} ms, p99 {total.e2e_ms[2]:.0f} ms); "
            f"graph memory {memory[0]:.0f} -> {memory[1]:.0f} -> {memory[2]:.0f} MiB"
        )
