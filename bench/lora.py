"""Benchmark 8: what LoRA costs chat through the graph, measured with `vllm bench serve`. (a) The default config's
stable chat version alone without its `lora` and with it, requests to the base model only: on vLLM's CPU path
`--enable-lora` turns torch.compile off and runs LoRA's kernels in every step. (b) With `lora` on, every request to one
adapter vs requests spread over three (`--lora-modules`, one drawn at random per request): each distinct adapter in a
batch is its own slice of the LoRA step. Interleaved over rounds, medians with the spread."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import httpx

from bench import servers
from bench.graphs import LORA_GRAPHS, chat_args, lora_adapters
from bench.report import Table
from bench.vllm_bench import OUTPUT_TOKENS, Shape, figures, measure

ROUNDS = 2
INPUT_LEN = 128
CONCURRENCIES = {1: 8, 16: 48, 64: 128}  # (a): concurrency -> requests per run at scale 1
ADAPTER_CONCURRENCY = (16, 48)  # (b): concurrency, requests per run at scale 1
OFF, ON, ONE, THREE = "LoRA off", "LoRA on, base model", "LoRA on, one adapter", "LoRA on, three adapters"
VERDICT = ("output_throughput", "median_tpot_ms", "median_e2el_ms")  # the ratios to the baseline's medians
METRICS = ("output_throughput", "median_ttft_ms", "median_tpot_ms", "median_itl_ms", "p99_itl_ms", "median_e2el_ms")


def plans(scale: float) -> tuple[list[Shape], Shape]:
    """(a)'s shapes, and (b)'s one; every run at least one request per slot."""
    base = [Shape(INPUT_LEN, c, max(c, round(n * scale))) for c, n in CONCURRENCIES.items()]
    c, n = ADAPTER_CONCURRENCY
    return base, Shape(INPUT_LEN, c, max(c, round(n * scale)))


def adapter_sides(adapters: Sequence[str], round_: int) -> list[tuple[str, tuple[str, ...]]]:
    """(b)'s sides, each with the adapters its requests name: one adapter, then three (the order reversed every
    other round)."""
    sides = [(ONE, (adapters[0],)), (THREE, tuple(adapters[:3]))]
    return sides if round_ % 2 == 0 else sides[::-1]


def run(scale: float) -> Table:
    from app.config import load_config

    config = load_config(chat_args())
    (version,) = config.models[0].versions
    tokenizer = version.weights.local_path(config.resolved_weights_dir())
    base_plan, adapter_shape = plans(scale)
    adapters = lora_adapters()
    runs: dict[tuple[str, Shape], list[dict[str, Any]]] = {}

    def one_run(base: str, round_: int, side: str, shape: Shape, names: Sequence[str] = ()) -> None:
        print(f"  round {round_ + 1}, {side}, {shape.label}", file=sys.stderr, flush=True)
        seed = sum(len(r) for r in runs.values())  # every run its own prompts: no reused prefix cache
        runs.setdefault((side, shape), []).append(measure(base, tokenizer, shape, {}, seed, names))

    for round_ in range(ROUNDS):
        for name in LORA_GRAPHS if round_ % 2 == 0 else LORA_GRAPHS[::-1]:
            with servers.graph(name) as base:
                for shape in base_plan:  # before any adapter is requested: the base model alone
                    one_run(base, round_, OFF if name == LORA_GRAPHS[0] else ON, shape)
                if name == LORA_GRAPHS[1]:
                    warm_adapters(base, adapters)
                    for side, names in adapter_sides(adapters, round_):
                        one_run(base, round_, side, adapter_shape, names)
    return table(base_plan, adapter_shape, adapters, runs)


def warm_adapters(base: str, names: Sequence[str], client: httpx.Client | None = None) -> None:
    """One short chat request to each adapter model, so that every adapter is loaded on the replica before (b)
    measures (vLLM's client warms up on the base model only). Raises unless each answers 200 under its own name."""
    with client or httpx.Client(timeout=300) as http:
        for name in names:
            body = {"model": name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}
            response = http.post(f"{base}/v1/chat/completions", json={**body, "temperature": 0})
            answered = response.json().get("model") if response.status_code == 200 else None
            if answered != name:
                raise RuntimeError(f"warming adapter {name}: {response.status_code} {response.text[:500]}")


def table(
    base_plan: list[Shape],
    adapter_shape: Shape,
    adapters: Sequence[str],
    runs: dict[tuple[str, Shape], list[dict[str, Any]]],
) -> Table:
    """`adapters`: the three adapter models, the last on the first one's files."""
    result = Table(
        "8. LoRA: what `lora` costs the base model, and three adapters vs one (vllm bench serve)",
        [
            "prompt, concurrency",
            "requests to",
            "ok/failed",
            "output tok/s",
            "TTFT p50 ms",
            "TPOT p50 ms",
            "ITL p50 / p99 ms",
            "E2E p50 ms",
            "vs baseline: tok/s, TPOT p50, E2E p50",
        ],
        notes=[
            f"`vllm bench serve --backend openai-chat --dataset-name random`, {INPUT_LEN}-token prompts, "
            f"{OUTPUT_TOKENS} output tokens, temperature 0, its defaults otherwise; the default config's stable chat "
            "version (SmolLM2-135M on vLLM-CPU) alone behind Serve's proxy, without its `lora` and with it "
            "(`--enable-lora`, vLLM's CPU path then runs without torch.compile).",
            "LoRA on vs off: requests to the base model only (none to an adapter yet on that start); the baseline is "
            "LoRA off. Three adapters vs one: with `lora` on, every adapter warmed by one request first, then "
            f"`--lora-modules {adapters[0]}` (the baseline) vs `--lora-modules {' '.join(adapters)}`, one drawn "
            f"at random per request; {adapters[2]} is a third adapter model on {adapters[0]}'s files, which vLLM "
            "loads as a LoRA of its own (its own slot and id), so a batch holds up to three distinct adapters.",
            f"{ROUNDS} rounds, the two graphs in turn (the order reversed every other round, and so is one vs three "
            "adapters); medians over the rounds with (lowest-highest). Every run draws its own prompts (its own "
            "`--seed`). The client, the graph and Ray share the host's cores.",
        ],
    )
    for plan, (baseline, other) in (
        (base_plan, (OFF, ON)),
        ([adapter_shape], (ONE, THREE)),
    ):
        for shape in plan:
            for side in (baseline, other):
                got = runs[side, shape]
                count, cells, verdict = figures(
                    got, None if side == baseline else runs[baseline, shape], METRICS, VERDICT
                )
                result.failed = result.failed or not count.endswith("/0")
                result.add(
                    shape.label, side, count, cells[0], cells[1], cells[2], f"{cells[3]} / {cells[4]}", cells[5],
                    verdict,
                )  # fmt: skip
    return result
