"""Benchmark 1: chat through the graph vs the same model on vLLM's own OpenAI server, streamed, at concurrency 1
and 16. Both serve the default config's stable chat version (vLLM, SmolLM2, same engine settings)."""

from __future__ import annotations

from bench import servers
from bench.graphs import CHAT_MODEL, chat_args
from bench.load import Call, Summary
from bench.report import LOAD_HEADERS, Table, ratio
from bench.runs import Load, summarize

MAX_TOKENS = 64
PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works to a child.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about your holiday by the sea.",
]
LOADS = {1: Load(requests=10, concurrency=1, duration_s=60, warmup=2), 16: Load(48, 16, 60, warmup=16)}


def chat_call(index: int) -> Call:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Call("/v1/chat/completions", body)


def run(scale: float) -> Table:
    from app.config import load_config

    config = load_config(chat_args())
    (version,) = config.models[0].versions
    path = version.weights.local_path(config.resolved_weights_dir())
    results: dict[tuple[str, int], Summary] = {}
    with servers.vllm_openai(version, path) as base:
        for c, load in LOADS.items():
            results["vllm", c] = summarize(base, chat_call, f"vLLM server c={c}", load.scaled(scale))
    with servers.graph("chat") as base:
        for c, load in LOADS.items():
            results["graph", c] = summarize(base, chat_call, f"graph c={c}", load.scaled(scale))
    table = Table(
        "1. Chat: the graph vs vLLM's own OpenAI server (SmolLM2-135M, streamed)",
        ["concurrency", "server", *LOAD_HEADERS, "graph vs vLLM"],
        notes=[
            f"{MAX_TOKENS} output tokens max per request, temperature 0, 4 prompts in turn, "
            "`stream_options.include_usage`; TTFT is the time to the first chunk that carries text.",
            "vLLM's server: `python -m vllm.entrypoints.openai.api_server` with the flags the graph's replica "
            "parses (`vllm_argv`: bf16, eager, max_model_len, chat template, tool parser, VLLM_CPU_KVCACHE_SPACE); "
            "the graph: the default config's "
            "stable chat version alone, served by `serve.run` behind Serve's proxy.",
            "The two servers run one after the other, never at the same time; each gets a warm-up first.",
        ],
    )
    for c in LOADS:
        vllm, graph = results["vllm", c], results["graph", c]
        table.add_run([str(c), "vLLM OpenAI server"], vllm, "baseline")
        throughput = ratio(graph.tokens_per_s, vllm.tokens_per_s)
        ttft = graph.ttft_ms[0] - vllm.ttft_ms[0]
        table.add_run([str(c), "graph"], graph, f"{throughput:.2f}x tok/s, TTFT p50 {ttft:+.0f} ms")
    return table
