import itertools
from pathlib import Path

from bench.vllm_bench import METRICS, VLLM, Shape, client_args, median_and_spread, shapes, table


def run(tok_s: float, e2e_ms: float, failed: int = 0) -> dict[str, float]:
    result = {metric: 10.0 for metric in METRICS}
    result.update(output_throughput=tok_s, median_e2el_ms=e2e_ms, completed=8 - failed, failed=failed)
    return result


def test_the_client_sends_vllms_defaults_with_the_sides_headers() -> None:
    argv = client_args("http://h", Path("/tok"), Shape(1024, 16, 48), {"x-experiment": "v1"}, Path("/out/r.json"))
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--random-input-len"] == "1024" and pairs["--max-concurrency"] == "16"
    assert pairs["--num-prompts"] == "48" and pairs["--header"] == "x-experiment=v1"
    assert "--ignore-eos" not in argv  # vLLM's client sets it itself for the random dataset


def test_scaled_shapes_keep_at_least_one_request_per_slot() -> None:
    assert {(s.input_len, s.concurrency) for s in shapes(1.0)} == {(n, c) for n in (128, 1024) for c in (1, 16, 64)}
    assert all(s.requests >= s.concurrency for s in shapes(0.01))


def test_medians_spreads_and_ratios_to_vllm() -> None:
    shape = Shape(128, 1, 8)
    runs = {(VLLM, shape): [run(100, 1000), run(120, 900)], ("graph", shape): [run(99, 1100), run(111, 1000, 1)]}
    result = table([VLLM, "graph"], [shape], runs)
    assert median_and_spread([1.0, 3.0, 2.0]) == "2.0 (1.0-3.0)"
    (_, base), (_, graph) = [(r[0], r) for r in result.rows]
    assert base[-1] == "baseline" and graph[-1].startswith("0.95x, 1.11x")
    assert graph[2] == "15/1" and result.failed
