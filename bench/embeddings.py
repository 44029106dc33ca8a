"""Benchmark 3: embeddings with the default config's batching vs `max_batch_size: 1`, on one graph that serves
the default MiniLM model twice (one deployment each; only one is under load at a time), and the same engine called
in this process, with no serving in between, as the ceiling."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from app.config import GraphConfig, load_config
from app.engines.sentence_encoder import SentenceEncoder
from bench import servers
from bench.graphs import BATCHED, UNBATCHED, embeddings_args
from bench.load import Call, Summary, percentile
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


def in_process(encoder: SentenceEncoder, load: Load, batch_size: int) -> Summary:
    """`load.requests` sentences through the engine in batches of `batch_size`, one batch at a time: each sentence's
    latency is its batch's. What a perfectly filled batcher with no HTTP, proxy or Ray hop in between would do."""
    encoder.encode([sentence(-1 - i) for i in range(batch_size)])  # warm-up
    latencies: list[float] = []
    started = time.perf_counter()
    for first in range(0, load.requests, batch_size):
        batch = [sentence(i) for i in range(first, min(first + batch_size, load.requests))]
        began = time.perf_counter()
        encoder.encode(batch)
        latencies += [(time.perf_counter() - began) * 1000] * len(batch)
    wall = time.perf_counter() - started
    e2e = (percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99))
    n = load.requests
    return Summary(
        sent=n,
        ok=n,
        failed=0,
        wall_s=wall,
        requests_per_s=n / wall,
        tokens_per_s=0.0,
        ttft_ms=(math.nan,) * 3,
        e2e_ms=e2e,
    )


def ceiling(config: GraphConfig, loads: list[Load]) -> dict[int, Summary]:
    """The in-process figures per concurrency for the config's first (batched) model, with the one thread a replica
    of under one CPU gets from Ray (OMP_NUM_THREADS=1), before any graph starts."""
    import torch

    version = config.models[0].versions[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, math.floor(version.num_cpus)))
    try:
        encoder = SentenceEncoder(version.weights.local_path(config.resolved_weights_dir()), device="cpu")
        batch = version.batching.max_batch_size
        return {load.concurrency: in_process(encoder, load, 1 if load.concurrency == 1 else batch) for load in loads}
    finally:
        torch.set_num_threads(threads)


def run(scale: float) -> Table:
    results: dict[tuple[str, int], Summary] = {}
    config = load_config(embeddings_args())
    b = config.models[0].versions[0].batching
    loads = [load.scaled(scale) for load in LOADS]
    ceilings = ceiling(config, loads)
    with servers.graph("embeddings") as base:
        for load in loads:
            for model in (BATCHED, UNBATCHED):
                label = f"{model} c={load.concurrency}"
                results[model, load.concurrency] = summarize(base, embed_call(model), label, load)
    table = Table(
        "3. Embeddings: batching (the default config's) vs max_batch_size 1",
        ["concurrency", "batching", *LOAD_HEADERS, "batched vs unbatched"],
        notes=[
            "all-MiniLM-L6-v2 on sentence-transformers, one sentence per request; `@serve.batch` merges "
            "sentences across requests. Batched: the default config's `batching` for the embedding model; "
            "unbatched: the same with `max_batch_size: 1`.",
            "Ceiling: the same SentenceTransformer called in the bench's own process with the replica's one torch "
            "thread, on sentences one at a time (concurrency 1) or in full batches of max_batch_size (32), one "
            "batch after another; a sentence's latency is its batch's. No HTTP, proxy or Ray hop.",
        ],
    )
    default = f"max_batch_size {b.max_batch_size}, wait {b.batch_wait_timeout_s * 1000:g} ms"
    for load in loads:
        c = load.concurrency
        batched, unbatched = results[BATCHED, c], results[UNBATCHED, c]
        table.add_run([str(c), "max_batch_size 1"], unbatched, "baseline")
        speedup = ratio(batched.requests_per_s, unbatched.requests_per_s)
        table.add_run([str(c), default], batched, f"{speedup:.2f}x req/s")
        best = ceilings[c]
        size = 1 if c == 1 else b.max_batch_size
        share = ratio(batched.requests_per_s, best.requests_per_s)
        table.add_run([str(c), f"ceiling: in-process, batches of {size}"], best, f"graph batched at {share:.2f}x of it")
    return table
