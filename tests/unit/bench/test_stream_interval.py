from bench.graphs import STREAM_INTERVALS, stream_interval_args
from bench.stream_interval import METRICS, table
from bench.vllm_bench import Shape


def run(tok_s: float, e2e_ms: float, failed: int = 0) -> dict[str, float]:
    result = {metric: 10.0 for metric in METRICS}
    result.update(output_throughput=tok_s, median_e2el_ms=e2e_ms, completed=8 - failed, failed=failed)
    return result


def test_each_bench_graph_is_the_stable_chat_version_with_its_interval() -> None:
    from app.config import load_config

    for name, interval in STREAM_INTERVALS.items():
        (model,) = load_config(stream_interval_args(name)).models
        (version,) = model.versions
        assert version.vllm.stream_interval == interval and version.vllm.tool_call_parser == "hermes"


def test_each_interval_against_interval_one() -> None:
    shape = Shape(128, 16, 48)
    one, four = list(STREAM_INTERVALS)[:2]
    runs = {(one, shape): [run(100, 1000), run(120, 900)], (four, shape): [run(121, 855), run(121, 1045, 1)]}
    result = table([one, four], [shape], runs)
    base, other = result.rows
    assert base[1] == "1" and base[-1] == "baseline"
    assert other[1] == "4" and other[-1] == "1.10x, 1.00x" and other[2] == "15/1" and result.failed
