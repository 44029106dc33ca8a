"""The graph's metrics through real Ray Serve: after a few requests, Ray's metrics port (scraped over HTTP, parsed
with prometheus_client) has every metric of app/observability/catalog.py with its labels, and its counts agree with
the responses and with the request log."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.observability import catalog, dashboard
from app.traffic.rollout import Phase
from app.traffic.split import choose_version
from tests.conftest import TEST_METRICS_PORT
from tests.eventually import HTTP_RETRIED, eventually

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
PHASES = [p.value for p in Phase]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape() -> dict[str, list[Sample]]:
    """Metric families on Ray's metrics port, by family name (counters without `_total`)."""
    text = httpx.get(f"http://127.0.0.1:{TEST_METRICS_PORT}/metrics", timeout=10).text
    return {
        family.name: [Sample(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def by(samples: list[Sample], name: str, keys: tuple[str, ...], **where: str) -> Counter[tuple[str, ...]]:
    """Sum of the samples called `name` (matching `where`), grouped by `keys` (a missing label reads as ''); groups
    that sum to 0 are left out."""
    return +gauges(samples, name, keys, **where)


def gauges(samples: list[Sample], name: str, keys: tuple[str, ...], **where: str) -> Counter[tuple[str, ...]]:
    """As `by`, zeros kept (a gauge at 0 is a value)."""
    out: Counter[tuple[str, ...]] = Counter()
    for s in samples:
        if s.name == name and all(s.labels.get(k, "") == v for k, v in where.items()):
            out[tuple(s.labels.get(k, "") for k in keys)] += s.value
    return out


def exported(check: Callable[[], T], what: str, timeout_s: float = 60) -> T:
    """Ray exports metrics every few seconds: `check` on a scrape, retried until the port has what it looks for (a
    family not there yet is a KeyError)."""
    return eventually(check, what=what, timeout_s=timeout_s, interval_s=1, retry_on=(*HTTP_RETRIED, KeyError))


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def chat_body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0, **extra}


def users_for(model: str, version: str, weights: dict[str, float], order: list[str], n: int) -> list[str]:
    """Users whose sticky split sends them to `version`."""
    rng = random.Random(0)
    users = (f"metrics-user-{i}" for i in range(10_000))
    return [u for u in users if choose_version(model, weights, u, rng, order) == version][:n]


@pytest.fixture(scope="module")
def traffic(graph: str) -> dict[str, httpx.Response]:
    def post(path: str, body: object, **headers: str) -> httpx.Response:
        return httpx.post(f"{graph}{path}", json=body, headers=headers, timeout=60)

    sent = {f"chat-{i}": post("/v1/chat/completions", chat_body("tiny-chat")) for i in range(3)}
    include_usage = {"stream": True, "stream_options": {"include_usage": True}}
    sent |= {f"stream-{i}": post("/v1/chat/completions", chat_body("tiny-chat", **include_usage)) for i in range(2)}
    sent["auto"] = post("/v1/chat/completions", chat_body("auto"))
    sent["experiment"] = post("/v1/chat/completions", chat_body("tiny-chat"), **{"x-experiment": "tiny-next"})
    sent["completion"] = post("/v1/completions", {"model": "tiny-chat", "prompt": "hello", "max_tokens": 2})
    sent["embeddings"] = post("/v1/embeddings", {"model": "tiny-embed", "input": ["a cat", "a dog", "a fish"]})
    sent["rerank"] = post("/v1/rerank", {"model": "tiny-rerank", "query": "cat", "documents": ["a cat", "a car"]})
    sent["unknown-model"] = post("/v1/chat/completions", chat_body("no-such-model"))
    sent["not-json"] = httpx.post(f"{graph}/v1/embeddings", content=b"{oops", timeout=60)
    # tiny-flaky's `bad` version fails every call: three users that the 50/50 split sends there open its breaker
    for i, user in enumerate(users_for("tiny-flaky", "bad", {"stable": 50, "bad": 50}, ["bad", "stable"], 3)):
        sent[f"flaky-{i}"] = post("/v1/chat/completions", chat_body("tiny-flaky", user=user))
    return sent


@pytest.fixture(scope="module")
def lines(traffic: dict[str, httpx.Response], request_log_path: Path) -> dict[str, dict[str, Any]]:
    """The request log's line for each response of `traffic`, by the response's x-request-id."""
    wanted = {r.headers["x-request-id"] for r in traffic.values()}

    def found() -> dict[str, dict[str, Any]]:
        entries = {e["request_id"]: e for e in log_lines(request_log_path)}
        assert wanted <= set(entries), f"missing log lines: {wanted - set(entries)}"
        return entries

    return eventually(found, what="a request log line for every response", timeout_s=20)


def test_responses_as_expected(traffic: dict[str, httpx.Response]) -> None:
    statuses = {name: r.status_code for name, r in traffic.items()}
    assert statuses == {**{n: 200 for n in traffic}, "unknown-model": 404, "not-json": 400}
    assert {traffic[f"flaky-{i}"].headers["x-served-by"] for i in range(3)} == {"tiny-flaky@stable"}


def test_every_request_has_one_log_line_that_describes_it(
    traffic: dict[str, httpx.Response], lines: dict[str, dict[str, Any]]
) -> None:
    for name, response in traffic.items():
        entry = lines[response.headers["x-request-id"]]
        assert entry["status"] == response.status_code, name
        assert "prompt" not in entry and "completion" not in entry  # guards.log_prompts is off
        overhead = float(response.headers["x-graph-overhead-ms"])
        assert overhead >= 0 and entry["overhead_ms"] <= entry["latency_ms"], name
        if response.status_code != 200:
            continue
        assert entry["served_by"] == response.headers["x-served-by"], name
        if name.startswith("stream"):
            events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
            usage = json.loads(events[-1])["usage"]
            assert entry["stream"] and entry["ttft_ms"] is not None and entry["ttft_ms"] <= entry["latency_ms"]
        else:
            usage = response.json()["usage"]
            assert not entry["stream"]
            assert overhead == pytest.approx(entry["overhead_ms"], abs=0.01), name
        assert entry["prompt_tokens"] == usage["prompt_tokens"] > 0, name
        assert entry["completion_tokens"] == usage.get("completion_tokens", 0), name
        assert 0 < entry["engine_ms"] <= entry["latency_ms"], name
    assert lines[traffic["auto"].headers["x-request-id"]]["tier"] == "small"
    pinned = lines[traffic["experiment"].headers["x-request-id"]]
    assert (pinned["experiment"], pinned["reason"], pinned["version"]) == ("tiny-next", "experiment", "v2")
    assert lines[traffic["unknown-model"].headers["x-request-id"]]["error_code"] == "model_not_found"
    assert lines[traffic["not-json"].headers["x-request-id"]]["route"] == "/v1/embeddings"


def test_request_metrics_agree_with_the_request_log(lines: dict[str, dict[str, Any]], request_log_path: Path) -> None:
    """Counts by label across the whole session: every request the log shows is counted once, with its labels."""
    request = ("model", "version", "tier", "route")

    def key(entry: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(entry[k]) if entry[k] is not None else "" for k in keys)

    def check() -> None:
        log = log_lines(request_log_path)
        m = scrape()
        requests, latency = m["ray_inference_graph_requests"], m["ray_inference_graph_request_latency_seconds"]
        with_status = (*request, "status")
        expected = Counter(key(e, with_status) for e in log)
        assert by(requests, "ray_inference_graph_requests_total", with_status) == expected
        assert by(latency, "ray_inference_graph_request_latency_seconds_count", with_status) == expected
        errors = Counter(
            key(e, ("model", "version", "route", "status", "error_code")) for e in log if e["status"] >= 400
        )
        code = ("model", "version", "route", "status", "code")
        assert by(m["ray_inference_graph_errors"], "ray_inference_graph_errors_total", code) == errors
        for kind in ("prompt", "completion"):
            tokens: Counter[tuple[str, ...]] = Counter()
            for e in log:
                tokens[key(e, request)] += e[f"{kind}_tokens"]
            sample = f"ray_inference_graph_{kind}_tokens_total"
            assert by(m[f"ray_inference_graph_{kind}_tokens"], sample, request) == +tokens, kind
        ttft = Counter(key(e, request) for e in log if e["ttft_ms"] is not None)
        ttft_family = m["ray_inference_graph_time_to_first_token_seconds"]
        assert by(ttft_family, "ray_inference_graph_time_to_first_token_seconds_count", request) == ttft
        overhead = Counter(key(e, ("model", "version", "route")) for e in log if e["engine_ms"] is not None)
        overhead_family = m["ray_inference_graph_overhead_seconds"]
        assert (
            by(overhead_family, "ray_inference_graph_overhead_seconds_count", ("model", "version", "route")) == overhead
        )
        edges = {s.labels["le"] for s in latency if s.name.endswith("_bucket")}
        assert edges == {str(b) for b in catalog.LATENCY.buckets} | {"+Inf"}

    exported(check, "request metrics that agree with the request log")


def test_route_decisions_upstream_calls_and_the_breaker(
    lines: dict[str, dict[str, Any]], request_log_path: Path
) -> None:
    def check() -> None:
        log = log_lines(request_log_path)
        m = scrape()
        decisions = m["ray_inference_graph_route_decisions"]
        keys = ("model", "version", "tier", "experiment", "reason")
        # tiny-chat never fails, so each of its requests is one decision
        chat = Counter(tuple(e[k] or "" for k in keys) for e in log if e["model"] == "tiny-chat" and e["attempts"] == 1)
        assert by(decisions, "ray_inference_graph_route_decisions_total", keys, model="tiny-chat") == chat
        assert ("tiny-chat", "v2", "", "tiny-next", "experiment") in chat
        upstream = m["ray_inference_graph_upstream_requests"]
        for model in ("tiny-chat", "tiny-flaky"):
            attempts = sum(e["attempts"] for e in log if e["model"] == model)
            calls = by(upstream, "ray_inference_graph_upstream_requests_total", (), model=model)[()]
            assert calls == attempts, model
        outcomes = by(
            upstream, "ray_inference_graph_upstream_requests_total", ("version", "outcome"), model="tiny-flaky"
        )
        assert outcomes[("bad", "error")] >= 2 and outcomes[("bad", "ok")] == 0 and outcomes[("stable", "ok")] >= 3
        states = gauges(
            m["ray_inference_graph_breaker_state"], "ray_inference_graph_breaker_state", ("model", "version")
        )
        assert states[("tiny-flaky", "bad")] == catalog.BREAKER_VALUES["open"]
        assert states[("tiny-flaky", "stable")] == states[("tiny-chat", "v1")] == catalog.BREAKER_VALUES["closed"]
        assert ("tiny-rerank", "v1") in states  # every version has one, refreshed, whether or not it had traffic

    exported(check, "the route decision, upstream call and breaker metrics")


def test_rollout_gauges_follow_the_controller(graph: str) -> None:
    def check() -> None:
        rollouts = httpx.get(f"{graph}/admin/rollouts", timeout=30).json()["rollouts"]
        m = scrape()
        assert rollouts
        for state in rollouts:
            where = {"model": state["model"], "version": state["canary"]}
            weight = gauges(
                m["ray_inference_graph_canary_weight_percent"], "ray_inference_graph_canary_weight_percent", (), **where
            )
            step = gauges(m["ray_inference_graph_rollout_step"], "ray_inference_graph_rollout_step", (), **where)
            assert weight[()] == state["weights"][state["canary"]] and () in weight
            assert step[()] == state["step"] and () in step
            phases = gauges(
                m["ray_inference_graph_rollout_phase"], "ray_inference_graph_rollout_phase", ("phase",), **where
            )
            assert phases == {(p,): float(p == state["phase"]) for p in PHASES}, phases

    exported(check, "rollout gauges that match the controller's state")


def test_batches_and_model_loads(traffic: dict[str, httpx.Response], tiny_paths: tuple[Path, Path]) -> None:
    from ray import serve

    from tests.serve.conftest import APP_NAME, tiny_config

    batched = {("tiny-embed", "v1"): "embedding-tiny-embed-v1", ("tiny-chat", "v1"): "chat-tiny-chat-v1"}

    def check() -> None:
        m = scrape()
        for (model, version), deployment in batched.items():
            sizes = (
                serve.get_deployment_handle(deployment, app_name=APP_NAME)
                .recent_batch_sizes.remote()
                .result(timeout_s=30)
            )
            where = {"model": model, "version": version}
            family = m["ray_inference_graph_batch_size"]
            assert by(family, "ray_inference_graph_batch_size_count", (), **where)[()] == len(sizes) > 0
            # each bucket counts the batches up to its edge (the _sum is rebuilt by Ray from bucket midpoints)
            buckets = gauges(family, "ray_inference_graph_batch_size_bucket", ("le",), **where)
            for edge in catalog.BATCH_SIZE.buckets:
                assert buckets[(str(edge),)] == sum(size <= edge for size in sizes), (deployment, edge)
            waits = by(
                m["ray_inference_graph_batch_wait_seconds"], "ray_inference_graph_batch_wait_seconds_count", (), **where
            )
            assert waits[()] == len(sizes)
        loads = by(
            m["ray_inference_graph_model_load_seconds"],
            "ray_inference_graph_model_load_seconds",
            ("model", "version", "engine"),
        )
        config = tiny_config(*tiny_paths)
        expected = {(mc.name, v.version, v.engine.value) for mc in config.models for v in mc.versions}
        assert set(loads) == expected and all(seconds > 0 for seconds in loads.values())

    exported(check, "the batch and model load metrics")


class ProbeProducers:
    """Calls the metric methods whose producers this module's traffic does not reach: warm-up, admission, the cache,
    shedding, the prefix router and vLLM's prefix-cache statistics (the tiny graph has neither)."""

    def __init__(self) -> None:
        from deployments.metrics import GraphMetrics

        self.metrics = GraphMetrics()

    def record(self) -> None:
        self.metrics.model_warmed("probe-model", "v9", 1.5)
        self.metrics.queue_depth("probe-model", "batch", 7)
        self.metrics.cache_lookup("probe-model", "v9", "/v1/embeddings", hit=True)
        self.metrics.cache_lookup("probe-model", "v9", "/v1/embeddings", hit=True)
        self.metrics.cache_lookup("probe-model", "v9", "/v1/embeddings", hit=False)
        self.metrics.shed("probe-model", "/v1/chat/completions", "batch", 429)
        self.metrics.prefix_cache("probe-model", "v8", queried_tokens=50, hit_tokens=0)  # Ray refuses inc(0)
        self.metrics.prefix_cache("probe-model", "v9", queried_tokens=100, hit_tokens=64)
        self.metrics.prefix_route("chat-probe-model-v9", "prefix")


@pytest.fixture(scope="module")
def probes_recorded(ray_cluster: str) -> Iterator[None]:
    from ray import serve

    probe = serve.deployment(ProbeProducers, ray_actor_options={"num_cpus": 0.01})
    handle = serve.run(probe.bind(), name="metrics-probe", route_prefix=None)
    handle.record.remote().result(timeout_s=60)
    try:
        yield
    finally:
        serve.delete("metrics-probe")


def test_probed_metrics_export_with_their_labels(probes_recorded: None) -> None:
    def check() -> None:
        m = scrape()
        where = {"model": "probe-model"}
        warmup = by(
            m["ray_inference_graph_model_warmup_seconds"],
            "ray_inference_graph_model_warmup_seconds",
            ("version",),
            **where,
        )
        assert warmup == {("v9",): 1.5}
        depth = by(m["ray_inference_graph_queue_depth"], "ray_inference_graph_queue_depth", ("priority",), **where)
        assert depth == {("batch",): 7}
        cache = by(
            m["ray_inference_graph_cache_lookups"],
            "ray_inference_graph_cache_lookups_total",
            ("route", "result"),
            **where,
        )
        assert cache == {("/v1/embeddings", "hit"): 2, ("/v1/embeddings", "miss"): 1}
        shed = by(
            m["ray_inference_graph_shed_requests"],
            "ray_inference_graph_shed_requests_total",
            ("priority", "status"),
            **where,
        )
        assert shed == {("batch", "429"): 1}
        queried = by(
            m["ray_inference_graph_prefix_cache_queried_tokens"],
            "ray_inference_graph_prefix_cache_queried_tokens_total",
            ("version",),
            **where,
        )
        hits = by(
            m["ray_inference_graph_prefix_cache_hit_tokens"],
            "ray_inference_graph_prefix_cache_hit_tokens_total",
            ("version",),
            **where,
        )
        assert (queried, hits) == ({("v8",): 50, ("v9",): 100}, {("v9",): 64})
        routes = by(
            m["ray_inference_graph_prefix_routes"],
            "ray_inference_graph_prefix_routes_total",
            ("reason",),
            target="chat-probe-model-v9",
        )
        assert routes == {("prefix",): 1}

    exported(check, "the probed metrics with their labels")


def test_every_catalog_metric_is_on_the_metrics_port_with_its_labels(
    traffic: dict[str, httpx.Response], probes_recorded: None
) -> None:
    def check() -> None:
        m = scrape()
        for spec in catalog.METRICS:
            samples = m[spec.exported]
            assert {s.name for s in samples} >= set(spec.samples), spec.name
            for s in samples:
                assert set(spec.labels) <= set(s.labels), (spec.name, s.labels)
                assert {"deployment", "replica", "application"} <= set(s.labels), "Ray's own labels"

    exported(check, "every catalog metric with its labels")


def test_dashboard_queries_only_metrics_that_exist(traffic: dict[str, httpx.Response], probes_recorded: None) -> None:
    board = json.loads((ROOT / "observability" / "grafana" / "inference-graph.json").read_text())
    queried = dashboard.queried_metrics(board)

    def check() -> None:
        missing = queried - set(scrape())
        assert not missing, f"the dashboard queries metrics that are not exported: {sorted(missing)}"

    exported(check, "every metric the dashboard queries")
