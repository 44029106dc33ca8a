import itertools
import json
from pathlib import Path

import httpx
import pytest

from bench.graphs import LORA_COPY, LORA_GRAPHS, lora_adapters, lora_args
from bench.lora import METRICS, OFF, ON, ONE, THREE, adapter_sides, plans, table, warm_adapters
from bench.vllm_bench import Shape, client_args


def run(tok_s: float, tpot_ms: float, e2e_ms: float, failed: int = 0) -> dict[str, float]:
    result = {metric: 10.0 for metric in METRICS}
    result.update(output_throughput=tok_s, median_tpot_ms=tpot_ms, median_e2el_ms=e2e_ms)
    result.update(completed=8 - failed, failed=failed)
    return result


def test_lora_off_is_the_stable_chat_version_without_lora() -> None:
    from app.config import load_config

    (model,) = load_config(lora_args("chat-lora-off")).models
    (version,) = model.versions
    assert version.lora is None and version.vllm.tool_call_parser == "hermes"


def test_lora_on_serves_three_distinct_adapter_models_on_the_stable_version() -> None:
    from app.config import adapter_name, load_config

    config = load_config(lora_args("chat-lora-on"))
    base, *adapters = config.models
    (version,) = base.versions
    assert version.lora is not None
    assert tuple(m.name for m in adapters) == lora_adapters() and lora_adapters()[-1] == LORA_COPY
    for model in adapters:
        (adapter,) = model.versions
        assert adapter.adapter is not None and adapter.adapter.base_version(model.name) == (base.name, version.version)
    first, _, copy = adapters
    assert first.versions[0].weights == copy.versions[0].weights  # the same files...
    assert adapter_name(first, first.versions[0]) != adapter_name(copy, copy.versions[0])  # ...as a LoRA of its own
    with pytest.raises(ValueError, match="unknown"):
        lora_args("chat")
    assert set(LORA_GRAPHS) == {"chat-lora-off", "chat-lora-on"}


def test_the_client_names_the_adapters_after_the_flags_and_before_the_headers() -> None:
    argv = client_args("http://h", Path("/tok"), Shape(128, 16, 48), {"x": "1"}, Path("/o/r.json"), 3, ("a", "b"))
    at = argv.index("--lora-modules")
    assert argv[at + 1 : at + 3] == ["a", "b"] and argv[at + 3] == "--header"
    assert dict(itertools.pairwise(argv))["--model"] == "smollm2-135m-instruct"  # the tokenizer's and warm-ups' model
    assert "--lora-modules" not in client_args("http://h", Path("/tok"), Shape(128, 16, 48), {}, Path("/o/r.json"))


def test_plans_scale_and_keep_a_request_per_slot() -> None:
    base, adapter = plans(1.0)
    assert [(s.concurrency, s.requests) for s in base] == [(1, 8), (16, 48), (64, 128)]
    assert (adapter.concurrency, adapter.requests) == (16, 48)
    base, adapter = plans(0.01)
    assert all(s.requests >= s.concurrency for s in [*base, adapter])


def test_one_adapter_and_three_alternate_their_order() -> None:
    names = ("a", "b", "c")
    assert adapter_sides(names, 0) == [(ONE, ("a",)), (THREE, ("a", "b", "c"))]
    assert adapter_sides(names, 1) == [(THREE, ("a", "b", "c")), (ONE, ("a",))]


def test_lora_on_against_off_and_three_adapters_against_one() -> None:
    base_plan, adapter_shape = plans(0.2)
    runs = {(side, shape): [run(100, 50, 1000), run(120, 40, 900)] for side in (OFF, ON) for shape in base_plan}
    runs[ON, base_plan[1]] = [run(55, 90, 2000), run(55, 90, 1900, 1)]
    runs[ONE, adapter_shape] = [run(50, 100, 2000), run(60, 100, 2000)]
    runs[THREE, adapter_shape] = [run(44, 110, 2200), run(44, 110, 2200)]
    result = table(base_plan, adapter_shape, ("a", "b", "c"), runs)
    assert [row[1] for row in result.rows] == [OFF, ON] * 3 + [ONE, THREE]
    off, on = result.rows[2:4]
    assert off[-1] == "baseline" and on[-1] == "0.50x, 2.00x, 2.05x" and on[2] == "15/1" and result.failed
    one, three = result.rows[-2:]
    assert one[-1] == "baseline" and three[-1] == "0.80x, 1.10x, 1.10x" and three[0] == "128 in, c=16"
    assert "`--lora-modules a b c`" in " ".join(result.notes)


def test_warming_checks_each_adapter_answers_under_its_own_name() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        asked.append(model)
        return httpx.Response(200, json={"model": "smollm2-135m-instruct" if model == "wrong" else model})

    warm_adapters("http://h", ["a", "b"], httpx.Client(transport=httpx.MockTransport(answer)))
    assert asked == ["a", "b"]
    with pytest.raises(RuntimeError, match="warming adapter wrong"):
        warm_adapters("http://h", ["wrong"], httpx.Client(transport=httpx.MockTransport(answer)))
