"""Benchmark 2: the graph's own cost. The same no-op chat service (bench/noop.py) behind FastAPI/uvicorn alone vs
behind the graph (the product's Ingress -> a NoopChat replica): by Serve's HAProxy ingress (as `make serve` runs it),
by Serve's Python proxy, and with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 and no proxy (the ingress replica's own HTTP
server, the floor of what a front can cost)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from bench import servers
from bench.graphs import NOOP_MODEL
from bench.load import Call, Summary
from bench.report import LOAD_HEADERS, Table, ratio
from bench.runs import Load, summarize
from bench.servers import Front

LATENCY = Load(requests=300, concurrency=1, duration_s=20, warmup=30)
CEILING = Load(requests=3000, concurrency=32, duration_s=20, warmup=100)
BODY = {"model": NOOP_MODEL, "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 16}


def noop_call(index: int) -> Call:
    return Call("/v1/chat/completions", BODY)


SIDES: list[tuple[str, str]] = [
    ("plain", "FastAPI + uvicorn, no Ray"),
    (Front.HAPROXY.value, "graph, Serve's HAProxy ingress (make serve)"),
    (Front.PYTHON_PROXY.value, "graph, Serve's Python proxy"),
    (Front.DIRECT.value, "graph, the ingress replica's own server (RAY_SERVE_THROUGHPUT_OPTIMIZED=1)"),
]


def _server(key: str) -> AbstractContextManager[str]:
    if key == "plain":
        return servers.plain()
    return servers.graph("noop", front=Front(key))


def run(scale: float) -> Table:
    results: dict[str, tuple[Summary, Summary]] = {}
    for key, label in SIDES:
        with _server(key) as base:
            latency = summarize(base, noop_call, f"{label} c=1", LATENCY.scaled(scale))
            ceiling = summarize(base, noop_call, f"{label} c=32", CEILING.scaled(scale))
            results[key] = (latency, ceiling)
    table = Table(
        "2. Overhead: the graph vs a plain FastAPI app, both around the same no-op engine",
        ["concurrency", "server", *LOAD_HEADERS, "vs plain app"],
        notes=[
            "Non-streamed chat completions of 16 tokens from a no-op engine (bench/noop.py): request parsing, "
            "prompt tokenization and response shaping run in both; the graph adds its policy pipeline, the "
            "ingress-to-replica hop and its front (HAProxy or Serve's proxy).",
            "Overhead per request: the graph's p50 less the plain app's at concurrency 1. Request ceiling: "
            "requests/s at concurrency 32. The load generator shares the CPUs with the server.",
        ],
    )
    plain_latency, plain_ceiling = results["plain"]
    for key, label in SIDES:
        latency, ceiling = results[key]
        if key == "plain":
            table.add_run(["1", label], latency, "baseline")
            table.add_run(["32", label], ceiling, "baseline")
            continue
        overhead = latency.e2e_ms[0] - plain_latency.e2e_ms[0]
        table.add_run(["1", label], latency, f"+{overhead:.1f} ms per request (p50)")
        share = ratio(ceiling.requests_per_s, plain_ceiling.requests_per_s)
        table.add_run(["32", label], ceiling, f"ceiling {share:.2f}x")
    return table
