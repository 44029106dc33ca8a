"""The ingress's observer, with a real OpenTelemetry SDK: one record, metric and log line per request, and a GenAI
span that continues an incoming sampled `traceparent`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import GraphConfig
from app.endpoints import Endpoint
from app.observability.metering import EngineReport, Metered
from app.observability.observer import OVERHEAD_HEADER, RequestObserver
from app.observability.record import RequestRecord
from app.protocol import ChatCompletionRequest
from app.traffic.plan import Plan
from tests.fakes import ManualClock
from tests.unit.observability.helpers import chat_body, config, paris_reply


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
    clock, metrics, lines = ManualClock(100.0), FakeMetrics(), Lines()
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
