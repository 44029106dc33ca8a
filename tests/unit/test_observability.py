"""Observability without Ray: the metric catalog, engine metering, the request record, GenAI span attributes, the
request log, the ingress's observer with a real OpenTelemetry SDK, the OTLP exporter, the Prometheus rules
(promtool) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import GraphConfig, load_config
from app.endpoints import Endpoint
from app.engines.base import EngineStats, GenerationDelta, SamplingSettings
from app.errors import ErrorInfo
from app.observability import catalog, dashboard, tracing
from app.observability.genai import request_attributes, response_details, sse_text
from app.observability.metering import EngineReport, Metered, MeteredChatEngine, current_meter, metering
from app.observability.observer import OVERHEAD_HEADER, RequestObserver
from app.observability.record import CLIENT_GONE, OTHER_ROUTE, RequestRecord, route_label
from app.observability.request_log import RequestLog, log_entry, log_line
from app.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EngineAnswer,
    Usage,
)
from app.traffic.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
PROMTOOL = shutil.which("promtool")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TimedEngine:
    """Each delta takes `step_s` on the clock; one token per delta."""

    def __init__(self, clock: Clock, words: int, step_s: float) -> None:
        self.clock, self.words, self.step_s = clock, words, step_s
        self.stats = EngineStats()
        self.closed = False

    async def generate(
        self, prompt_ids: Sequence[int], sampling: SamplingSettings, request_id: str
    ) -> AsyncGenerator[GenerationDelta, None]:
        try:
            for i in range(self.words):
                self.clock.now += self.step_s
                yield GenerationDelta(f"w{i} ", 1, "stop" if i == self.words - 1 else None)
        finally:
            self.closed = True

    def check_health(self) -> None:
        return None


# ---- catalog ------------------------------------------------------------------------------------------------


def test_catalog_names_labels_and_buckets() -> None:
    names = [m.name for m in catalog.METRICS]
    assert len(names) == len(set(names))
    for spec in catalog.METRICS:
        assert re.fullmatch(r"inference_graph_[a-z0-9_]+", spec.name), spec.name
        assert not spec.name.endswith("_total"), "Ray adds _total to counters"
        assert not {"deployment", "replica", "application"} & set(spec.labels), "Ray reserves these tags"
        if spec.kind is catalog.Kind.HISTOGRAM:
            assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0
        else:
            assert spec.buckets == ()
    assert catalog.REQUESTS.samples == ("ray_inference_graph_requests_total",)
    assert catalog.LATENCY.samples[0] == "ray_inference_graph_request_latency_seconds_bucket"
    assert 5.0 in catalog.LATENCY.buckets, "the p99 > 5 s alert needs a bucket edge at 5 s"
    assert all(m.producer for m in catalog.METRICS), "every metric has a producer"


# ---- metering -----------------------------------------------------------------------------------------------


async def test_metered_engine_adds_only_engine_time_and_tokens_to_the_requests_meter() -> None:
    clock = Clock()
    engine = TimedEngine(clock, words=3, step_s=0.25)
    metered = MeteredChatEngine(engine, clock)
    assert metered.stats is engine.stats
    with metering(clock) as meter:
        clock.now += 1.0  # tokenizing, say: not the engine's time
        deltas = [d async for d in metered.generate([1, 2, 3, 4], SamplingSettings(max_tokens=3), "r")]
        clock.now += 0.5
        report = meter.report()
    assert current_meter() is None
    assert [d.text for d in deltas] == ["w0 ", "w1 ", "w2 "]
    assert report == EngineReport(
        engine_s=0.75, replica_s=2.25, first_token_s=1.25, prompt_tokens=4, completion_tokens=3
    )


async def test_metered_engine_closes_the_engine_when_the_consumer_stops() -> None:
    clock = Clock()
    engine = TimedEngine(clock, words=5, step_s=0.1)
    with metering(clock) as meter:
        stream = MeteredChatEngine(engine, clock).generate([1], SamplingSettings(max_tokens=5), "r")
        await anext(stream)
        await stream.aclose()
    assert engine.closed and meter.completion_tokens == 1


async def test_engine_without_a_meter_is_passed_through() -> None:
    clock = Clock()
    deltas = [
        d async for d in MeteredChatEngine(TimedEngine(clock, 2, 0.1), clock).generate([1], SamplingSettings(2), "r")
    ]
    assert len(deltas) == 2 and current_meter() is None


# ---- the request record -------------------------------------------------------------------------------------


def test_overhead_and_time_to_first_token() -> None:
    record = RequestRecord("id", "/v1/chat/completions", started=0.0)
    record.report = EngineReport(engine_s=0.8, replica_s=1.0, first_token_s=0.3, prompt_tokens=5, completion_tokens=7)
    record.latency_s = 1.25
    assert record.overhead_s(1.25) == pytest.approx(0.45)
    # the replica worked 0.7 s after the first token; the ingress saw the answer at 1.25 s
    assert record.ttft_s == pytest.approx(0.55)
    assert (record.prompt_tokens, record.completion_tokens) == (5, 7)
    record.report = EngineReport(0.1, 0.1, None, 5, 0)
    assert record.ttft_s is None


def test_route_label_keeps_paths_few() -> None:
    assert route_label("/v1/embeddings/") == "/v1/embeddings"
    assert route_label("/openai/v1/chat/completions") == OTHER_ROUTE
    assert route_label("/wp-admin") == OTHER_ROUTE


# ---- GenAI attributes ---------------------------------------------------------------------------------------


def chat_body(**extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def test_request_attributes_follow_the_genai_conventions() -> None:
    attrs = request_attributes(chat_body(max_tokens=9, temperature=0.5, seed=3, stop=["x", "y"]), "chat")
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 9,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.presence_penalty": 0.0,
        "gen_ai.request.frequency_penalty": 0.0,
        "gen_ai.request.seed": 3,
        "gen_ai.request.stop_sequences": ["x", "y"],
    }
    embedding = EmbeddingRequest.model_validate({"model": "e", "input": "a", "encoding_format": "base64"})
    assert request_attributes(embedding, "embeddings")["gen_ai.request.encoding_formats"] == ["base64"]


def paris_reply(response_id: str, prompt_tokens: int) -> ChatCompletionResponse:
    """A one-token chat answer, "Paris"."""
    return ChatCompletionResponse(
        id=response_id,
        created=1,
        model="m",
        choices=[ChatChoice(message=AssistantMessage(content="Paris"), finish_reason="stop")],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=1, total_tokens=prompt_tokens + 1),
    )


def test_response_details_and_stream_text() -> None:
    response = paris_reply("chatcmpl-1", prompt_tokens=1)
    assert response_details(response) == ("chatcmpl-1", ("stop",), "Paris")
    chunk = {"choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    assert sse_text(f"data: {json.dumps(chunk)}\n\n") == "Par"
    assert sse_text('data: {"choices": [{"index": 0, "text": "is", "finish_reason": null}]}\n\n') == "is"
    assert sse_text("data: [DONE]\n\n") == "" and sse_text("data: {broken\n\n") == ""
    opening = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    merged = f"data: {json.dumps(opening)}\n\ndata: {json.dumps(chunk)}\n\n"  # a replica's first event
    assert sse_text(merged) == "Par"


def test_details_of_an_engines_own_answer() -> None:
    chat = {
        "id": "c1",
        "choices": [{"index": 0, "message": {"content": "Hi", "tool_calls": []}, "finish_reason": "stop"}],
    }
    assert response_details(EngineAnswer.model_validate(chat)) == ("c1", ("stop",), "Hi")
    calls = {"id": "c2", "choices": [{"index": 0, "message": {"content": None}, "finish_reason": "tool_calls"}]}
    assert response_details(EngineAnswer.model_validate(calls)) == ("c2", ("tool_calls",), "")
    text = {"id": "t", "choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b", "finish_reason": "length"}]}
    assert response_details(EngineAnswer.model_validate(text)) == ("t", ("length",), "ab")


# ---- the request log ----------------------------------------------------------------------------------------


def finished_record() -> RequestRecord:
    record = RequestRecord("req-1", "/v1/chat/completions", 0.0, trace_id="ab" * 16, model="m", version="v2")
    record.tier, record.reason, record.attempts, record.latency_s = "small", "split", 1, 0.5
    record.report = EngineReport(0.4, 0.45, 0.1, 12, 3)
    record.prompt, record.completion = [{"role": "user", "content": "secret"}], ["Paris"]
    return record


def test_log_line_is_one_json_object_without_content_unless_asked() -> None:
    line = log_line(finished_record(), with_content=False, wall_time=0.0)
    assert "\n" not in line and "secret" not in line and "Paris" not in line
    entry = json.loads(line)
    assert entry["ts"] == "1970-01-01T00:00:00.000+00:00"
    assert {k: entry[k] for k in ("request_id", "route", "served_by", "tier", "status", "prompt_tokens")} == {
        "request_id": "req-1",
        "route": "/v1/chat/completions",
        "served_by": "m@v2",
        "tier": "small",
        "status": 200,
        "prompt_tokens": 12,
    }
    assert (entry["latency_ms"], entry["engine_ms"], entry["overhead_ms"]) == (500.0, 400.0, 100.0)
    assert "prompt" not in entry and "completion" not in entry
    with_content = log_entry(finished_record(), with_content=True)
    assert with_content["prompt"] == [{"role": "user", "content": "secret"}] and with_content["completion"] == "Paris"


def test_request_log_writes_lines_from_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "requests.jsonl"
    log = RequestLog(str(path))
    for i in range(50):
        log.write(json.dumps({"i": i}))
    log.close()
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == list(range(50))


def test_request_log_path_comes_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GRAPH_REQUEST_LOG", "/tmp/from-env.jsonl")
    assert config().observability.resolved_request_log_path() == "/tmp/from-env.jsonl"
    given = config(observability={"request_log_path": "/var/log/x.jsonl"})
    assert given.observability.resolved_request_log_path() == "/var/log/x.jsonl"
    monkeypatch.delenv("INFERENCE_GRAPH_REQUEST_LOG")
    assert config().observability.resolved_request_log_path() is None


# ---- the observer, with a real OpenTelemetry SDK ------------------------------------------------------------


def config(**extra: Any) -> GraphConfig:
    version = {"engine": "transformers", "weights": {"path": str(ROOT)}}
    return load_config(
        {
            "models": [
                {"name": "m", "role": "chat", "versions": [{"version": "v1", **version}, {"version": "v2", **version}]}
            ],
            **extra,
        }
    )


class FakeMetrics:
    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.decisions: list[tuple[str, ...]] = []

    def request(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def route_decision(self, model: str, version: str, tier: str, experiment: str, reason: str) -> None:
        self.decisions.append((model, version, tier, experiment, reason))


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the SDK takes one provider per process: reuse one already set
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter


def observe(
    cfg: GraphConfig, headers: dict[str, str], body: ChatCompletionRequest
) -> tuple[FakeMetrics, Lines, RequestRecord, dict[str, str]]:
    clock, metrics, lines = Clock(), FakeMetrics(), Lines()
    observer = RequestObserver(cfg, metrics, lines, clock=clock, new_id=lambda: "generated")  # type: ignore[arg-type]
    record = observer.begin("/v1/chat/completions", headers)
    plan = Plan(Endpoint.CHAT, body, cfg.models[0], tier="small", experiment="next", rules=["alias"])
    observer.planned(record, plan, headers, "auto")
    observer.routed(record, "v2", "experiment")
    clock.now += 0.5
    reply = paris_reply("chatcmpl-9", prompt_tokens=12)
    observer.answered(record, Metered(reply, EngineReport(0.3, 0.35, 0.3, 12, 1)))
    header = observer.finish(record)
    return metrics, lines, record, header


def test_observer_records_one_request_once(spans: InMemorySpanExporter) -> None:
    metrics, lines, record, header = observe(config(), {"x-request-id": "abc"}, chat_body())
    assert metrics.requests == [record] and metrics.decisions == [("m", "v2", "small", "next", "experiment")]
    assert (record.request_id, record.model, record.version, record.status, record.attempts) == (
        "abc",
        "m",
        "v2",
        200,
        1,
    )
    assert record.response_id == "chatcmpl-9" and record.finish_reasons == ("stop",)
    assert header == {OVERHEAD_HEADER: "200.000"}  # 0.5 s at the ingress, 0.3 s in the engine
    (line,) = lines.lines
    assert json.loads(line)["overhead_ms"] == 200.0 and "prompt" not in json.loads(line)
    assert record.trace_id is None  # no traceparent and no current span: not traced


def test_observer_continues_an_incoming_traceparent_with_genai_attributes(spans: InMemorySpanExporter) -> None:
    spans.clear()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, _, record, _ = observe(config(), {"traceparent": parent}, chat_body(max_tokens=4))
    (span,) = spans.get_finished_spans()
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c" == record.trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert span.name == "chat m" and span.kind is trace.SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.request.model"] == "auto" and attrs["gen_ai.response.model"] == "m"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (12, 1)
    assert attrs["gen_ai.request.max_tokens"] == 4 and attrs["gen_ai.provider.name"] == "transformers"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert (attrs["inference_graph.served_by"], attrs["inference_graph.tier"]) == ("m@v2", "small")
    assert (attrs["inference_graph.experiment"], attrs["inference_graph.route.reason"]) == ("next", "experiment")
    assert attrs["inference_graph.overhead_ms"] == 200.0
    assert "gen_ai.input.messages" not in attrs


def test_an_unsampled_traceparent_records_nothing(spans: InMemorySpanExporter) -> None:
    spans.clear()
    observe(config(), {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}, chat_body())
    assert spans.get_finished_spans() == ()


def test_content_goes_to_log_and_span_only_when_prompts_are_logged(spans: InMemorySpanExporter) -> None:
    spans.clear()
    parent = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    cfg = config(guards={"log_prompts": True})
    _, lines, _, _ = observe(cfg, {"traceparent": parent}, chat_body())
    entry = json.loads(lines.lines[0])
    assert entry["prompt"] == [{"role": "user", "content": "hi"}] and entry["completion"] == "Paris"
    (span,) = spans.get_finished_spans()
    assert "hi" in str((span.attributes or {})["gen_ai.input.messages"])


def test_errors_and_gone_clients_set_the_status() -> None:
    record = RequestRecord("id", "/v1/chat/completions", 0.0)
    record.fail(ErrorInfo(status=404, message="no", type="invalid_request_error", code="model_not_found"))
    assert (record.status, record.error_code, record.ok) == (404, "model_not_found", False)
    assert CLIENT_GONE == 499


# ---- the OTLP exporter that Ray Serve loads -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "module"),
    [(None, "proto.http"), ("http/protobuf", "proto.http"), ("grpc", "proto.grpc")],
)
def test_otlp_exporter_follows_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, protocol: str | None, module: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    (processor,) = tracing.otlp_exporter()
    exporter = processor._batch_processor._exporter  # type: ignore[attr-defined]
    assert module in type(exporter).__module__
    if module == "proto.http":
        assert exporter._endpoint == "http://collector:4318/v1/traces"
    processor.shutdown()


def test_otlp_exporter_rejects_an_unknown_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        tracing.otlp_exporter()


# ---- Prometheus rules -----------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is not installed (`make test` installs it: scripts/system-packages.sh)"
    return subprocess.run([PROMTOOL, *args], cwd=OBS / "prometheus", capture_output=True, text=True, timeout=120)


def test_rules_and_scrape_config_pass_promtool_check() -> None:
    for args in (("check", "rules", "rules.yml"), ("check", "config", "prometheus.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((OBS / "prometheus" / "rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_rules_name_only_catalog_metrics_and_dcgm() -> None:
    ours = {m.exported for m in catalog.METRICS}
    named = set()
    for expr in rule_exprs():
        for name in re.findall(r"\b(ray_[a-z0-9_]+|DCGM_[A-Z_]+)", expr):
            named.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    assert named - ours == {"DCGM_FI_DEV_GPU_UTIL"}
    alerts = {
        r["alert"]
        for g in yaml.safe_load((OBS / "prometheus" / "rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert {
        "InferenceGraphHighLatencyP99",
        "InferenceGraphGPUUnderutilized",
        "InferenceGraphCanaryErrorRate",
        "InferenceGraphBreakerOpen",
    } <= alerts


# ---- the Grafana dashboard --------------------------------------------------------------------------------------


def committed_dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((OBS / "grafana" / "inference-graph.json").read_text())
    return board


def test_committed_dashboard_is_the_generated_one() -> None:
    text = (OBS / "grafana" / "inference-graph.json").read_text()
    assert text == dashboard.render(), (
        "re-run: python -m app.observability.dashboard --write observability/grafana/inference-graph.json"
    )


def test_dashboard_queries_every_catalog_metric_and_nothing_unknown() -> None:
    queried = dashboard.queried_metrics(committed_dashboard())
    ours = {m.exported for m in catalog.METRICS}
    assert ours <= queried, f"not on the dashboard: {sorted(ours - queried)}"
    assert queried - ours == {"ray_serve_deployment_queued_queries", "ray_serve_replica_processing_queries"}


def test_dashboard_layout_is_valid() -> None:
    board = committed_dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "route",
        "latency",
        "first token",
        "tokens per second",
        "batch",
        "queue",
        "canary",
        "breaker",
        "cache",
    ):
        assert topic in titles, topic


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), with Grafana's variables filled in."""
    exprs = [t["expr"] for p in committed_dashboard()["panels"] for t in p.get("targets", [])]
    rules = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$model", ".*")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None, "promtool is not installed (`make test` installs it: scripts/system-packages.sh)"
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
