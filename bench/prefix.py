"""Benchmark 5: prefix-cache routing. Two vLLM replicas of the default chat version (SmolLM2) behind Serve's default
router (pow2) and behind the prefix-cache router, and one replica alone, each on two loads: requests that share
one of a few long system prompts (a RAG context or an assistant's instructions), and requests with no prefix in
common. The engines' own prefix-cache statistics give the hit rate."""

from __future__ import annotations

import random
import statistics
import time

import httpx

from bench import servers
from bench.graphs import CHAT_MODEL, PREFIX_GRAPHS
from bench.load import Call, Summary
from bench.report import LOAD_HEADERS, Table, load_cells, ratio
from bench.runs import Load, summarize

SYSTEMS = 16  # distinct shared prefixes, each sent 4 times (64 requests), 16 requests apart
SYSTEM_WORDS = 450  # about 600 tokens each
MAX_TOKENS = 16
LOAD = Load(requests=64, concurrency=8, duration_s=180, warmup=0)
EXPORT_WAIT_S = 12.0  # Ray exports metrics every 10 s
HIT = "ray_inference_graph_prefix_cache_hit_tokens_total"
QUERIED = "ray_inference_graph_prefix_cache_queried_tokens_total"


def _words(rng: random.Random, n: int) -> str:
    vocabulary = (
        "account",
        "card",
        "transfer",
        "branch",
        "loan",
        "rate",
        "fee",
        "limit",
        "statement",
        "payment",
        "deposit",
        "policy",
    )
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def _systems() -> list[str]:
    rng = random.Random(7)
    return [f"Context document {i}: " + _words(rng, SYSTEM_WORDS) for i in range(SYSTEMS)]


def shared_call(index: int) -> Call:
    system = _systems()[index % SYSTEMS]
    return _call([{"role": "system", "content": system}, {"role": "user", "content": f"Question {index}: summarise."}])


def unrelated_call(index: int) -> Call:
    text = f"Document {index} (seed {index * 7919}): " + _words(random.Random(10_000 + index), SYSTEM_WORDS)
    return _call([{"role": "user", "content": text}])


def _call(messages: list[dict[str, str]]) -> Call:
    body = {
        "model": CHAT_MODEL,
        "messages": messages,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Call("/v1/chat/completions", body)


def prefix_tokens() -> tuple[float, float]:
    """Prompt tokens the chat replicas have queried and found in their prefix caches so far (all replicas)."""
    text = httpx.get(f"http://127.0.0.1:{servers.METRICS_PORT}/metrics", timeout=10).text
    totals = {HIT: 0.0, QUERIED: 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals[QUERIED], totals[HIT]


def _hit_rate(before: tuple[float, float], after: tuple[float, float]) -> float:
    queried = after[0] - before[0]
    return (after[1] - before[1]) / queried if queried else float("nan")


ORDER = ("prefix-one", "prefix-pow2", "prefix-prefix", "prefix-pow2", "prefix-prefix")  # the two sides interleaved


def run(scale: float) -> Table:
    loads = {"shared prefix": shared_call, "no shared prefix": unrelated_call}
    results: dict[tuple[str, str], list[tuple[Summary, float]]] = {}
    for graph in ORDER:
        with servers.graph(graph, timeout_s=600) as base:
            for label, call in loads.items():
                time.sleep(EXPORT_WAIT_S)
                before = prefix_tokens()
                summary = summarize(base, call, f"{graph} {label}", LOAD.scaled(scale))
                time.sleep(EXPORT_WAIT_S)
                results.setdefault((graph, label), []).append((summary, _hit_rate(before, prefix_tokens())))
    table = Table(
        "5. Prefix-cache routing: two vLLM replicas (SmolLM2-135M), Serve's default router vs the prefix router",
        ["load", "replicas, router, round", *LOAD_HEADERS, "prefix-cache hit rate", "medians of the rounds"],
        notes=[
            f"shared prefix: {SYSTEMS} system prompts of about 600 tokens, each request one of them and a short "
            f"question; no shared prefix: every prompt its own. {LOAD.requests} requests at concurrency "
            f"{LOAD.concurrency}, streamed, {MAX_TOKENS} output tokens, temperature 0, no warm-up: every prefix "
            "starts cold.",
            "Hit rate: prompt tokens found in vLLM's prefix cache / prompt tokens looked up, from the engines' own "
            "statistics (`inference_graph_prefix_cache_*` on Ray's metrics port), over the measured run only.",
            f"Graphs run alone, one after the other, in the order {', '.join(ORDER)}; two vLLM engines share this "
            "host's CPUs.",
        ],
    )
    for label in loads:
        for graph, (replicas, policy) in PREFIX_GRAPHS.items():
            runs = results[graph, label]
            for i, (summary, hits) in enumerate(runs, 1):
                last = i == len(runs)
                verdict = _verdict(results, graph, label) if last else ""
                table.add(label, f"{replicas}, {policy}, {i}", *load_cells(summary), f"{hits:.2f}", verdict)
                table.failed |= bool(summary.failed)
    return table


def _verdict(results: dict[tuple[str, str], list[tuple[Summary, float]]], graph: str, label: str) -> str:
    def medians(name: str) -> tuple[float, float, float]:
        runs = results[name, label]
        return (
            statistics.median(s.tokens_per_s for s, _ in runs),
            statistics.median(s.ttft_ms[0] for s, _ in runs),
            statistics.median(h for _, h in runs),
        )

    tokens, ttft, hits = medians(graph)
    if graph == "prefix-pow2":
        return f"baseline: {tokens:.1f} tok/s, TTFT p50 {ttft:.0f} ms, hit rate {hits:.2f}"
    base_tokens, base_ttft, _ = medians("prefix-pow2")
    alone = medians("prefix-one")[2]
    of_one = f", hit rate {ratio(hits, alone):.2f}x one replica's" if alone == alone and alone > 0 else ""
    return f"{ratio(tokens, base_tokens):.2f}x tok/s, TTFT p50 {ratio(ttft, base_ttft):.2f}x vs pow2{of_one}"
