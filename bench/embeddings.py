"""Benchmark 3: embeddings with the default config's batching vs `max_batch_size: 1`, on one graph that serves
the default MiniLM model twice (one deployment each; only one is under load at a time)."""

from __future__ import annotations

from collections.abc import Callable

from app.config import BatchingConfig
from bench import servers
from bench.graphs import BATCHED, UNBATCHED, embeddings_args
from bench.load import Call, Summary
from bench.report import LOAD_HEADERS, Table, ratio
from bench.runs import Load, summarize

LOADS = [Load(requests=100, concurrency=1, duration_s=20, warmup=5), Load(600, 32, 30, warmup=64)]
WORDS = ["river", "mountain", "engine", "garden", "market", "planet", "violin", "harbour", "lantern", "meadow"]


def sentence(index: int) -> str:
    """A different sentence per request, of about the same length."""
    a, b, c = (WORDS[(index // 10**k) % len(WORDS)] for k in range(3))
    return f"Request {index}: a {a} near the {b}, seen from the {c} at dawn."


def embed_call(model: str) -> Callable[[int], Call]:
    def make(index: int) -> Call:
        return Call("/v1/embeddings", {"model": model, "input": sentence(index)})

    return make


def run(scale: float) -> Table:
    results: dict[tuple[str, int], Summary] = {}
    with servers.graph("embeddings") as base:
        for load in LOADS:
            for model in (BATCHED, UNBATCHED):
                label = f"{model} c={load.concurrency}"
                results[model, load.concurrency] = summarize(base, embed_call(model), label, load.scaled(scale))
    table = Table(
        "3. Embeddings: batching (the default config's) vs max_batch_size 1",
        ["concurrency", "batching", *LOAD_HEADERS, "batched vs unbatched"],
        notes=[
            "all-MiniLM-L6-v2 on sentence-transformers, one sentence per request; `@serve.batch` merges "
            "sentences across requests. Batched: the default config's `batching` for the embedding model; "
            "unbatched: the same with `max_batch_size: 1`.",
        ],
    )
    b = BatchingConfig.model_validate(embeddings_args()["models"][0]["versions"][0].get("batching", {}))
    default = f"max_batch_size {b.max_batch_size}, wait {b.batch_wait_timeout_s * 1000:g} ms"
    for load in LOADS:
        c = load.concurrency
        batched, unbatched = results[BATCHED, c], results[UNBATCHED, c]
        table.add_run([str(c), "max_batch_size 1"], unbatched, "baseline")
        speedup = ratio(batched.requests_per_s, unbatched.requests_per_s)
        table.add_run([str(c), default], batched, f"{speedup:.2f}x req/s")
    return table
