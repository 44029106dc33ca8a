"""Tracing through real Ray Serve: a request sent with a W3C `traceparent` becomes one trace across the ingress and
the model replica (behind Serve's HAProxy ingress, which opens no span of its own), exported by the graph's OTLP
exporter (configured by OTEL_EXPORTER_OTLP_* in tests/conftest.py) to a receiver in this process; spans carry the
GenAI attributes and the routing decisions."""

from __future__ import annotations

import gzip
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.conftest import TEST_OTLP_PORT
from tests.eventually import eventually

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    service: str


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP (protobuf) trace receiver: what a collector would get."""

    def __init__(self, port: int) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource in request.resource_spans:
            service = {a.key: _value(a.value) for a in resource.resource.attributes}.get("service.name", "")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    spans.append(
                        Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, attributes, service)
                    )
        with self._lock:
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver(TEST_OTLP_PORT)
    try:
        yield r
    finally:
        r.close()


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}", trace_id, parent_id


def wait_for_trace(receiver: Receiver, trace_id: str, names: list[str], timeout_s: float = 30) -> list[Span]:
    """The spans of `trace_id` received so far, once there is one whose name starts with each of `names`."""

    def arrived() -> list[Span]:
        spans = receiver.trace(trace_id)
        missing = [n for n in names if not any(s.name.startswith(n) for s in spans)]
        assert not missing, f"missing {missing}; received {[s.name for s in spans]}"
        return spans

    return eventually(arrived, what=f"the spans {names} of trace {trace_id}", timeout_s=timeout_s)


def one(spans: list[Span], prefix: str) -> Span:
    found = [s for s in spans if s.name.startswith(prefix)]
    assert len(found) == 1, (prefix, [s.name for s in spans])
    return found[0]


def ancestors(span: Span, spans: list[Span]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    names = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


def chat(graph: str, header: str, model: str = "tiny-chat", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    return httpx.post(
        f"{graph}/v1/chat/completions", json={**body, **extra}, headers={"traceparent": header}, timeout=60
    )


REPLICA = "replica_handle_request chat-tiny-chat-v1"
INGRESS = "replica_handle_request Ingress __call__"


def test_a_traceparent_makes_one_trace_across_ingress_and_replica(graph: str, receiver: Receiver) -> None:
    """Behind Serve's HAProxy ingress (as the session runs) there is no Python proxy to open a span: HAProxy passes
    the client's `traceparent` to the ingress replica's own HTTP server, whose span is the graph's first."""
    header, trace_id, client_span = traceparent()
    response = chat(graph, header)
    assert response.status_code == 200, response.text
    # the ingress's own span is exported by another process, possibly after the others: wait for it too
    spans = wait_for_trace(receiver, trace_id, [INGRESS, "chat tiny-chat", REPLICA])
    ingress, genai, replica = one(spans, INGRESS), one(spans, "chat tiny-chat"), one(spans, REPLICA)
    assert ingress.parent_id == client_span  # the client's trace is continued, not restarted
    assert ancestors(genai, spans) == [INGRESS]
    assert not [s.name for s in spans if s.name.startswith("proxy_")]
    # the model replica's span hangs under the ingress's GenAI span, through Ray's handle call
    assert ancestors(replica, spans)[:2] == ["route_to_replica chat-tiny-chat-v1 create", "chat tiny-chat"]
    assert {s.service for s in spans} == {"inference-graph-tests"}  # OTEL_SERVICE_NAME reached every process
    usage = response.json()["usage"]
    a = genai.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"], a["gen_ai.response.model"]) == (
        "chat",
        "tiny-chat",
        "tiny-chat",
    )
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert a["gen_ai.request.max_tokens"] == 3 and a["gen_ai.request.temperature"] == 0.0
    assert a["gen_ai.response.id"] == response.json()["id"] and a["gen_ai.provider.name"] == "transformers"
    assert a["inference_graph.served_by"] == response.headers["x-served-by"] == "tiny-chat@v1"
    assert a["inference_graph.request_id"] == response.headers["x-request-id"]
    assert a["inference_graph.route.reason"] == "split" and a["http.response.status_code"] == 200
    assert 0 <= a["inference_graph.overhead_ms"] == float(response.headers["x-graph-overhead-ms"])
    assert replica.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert replica.attributes["inference_graph.engine_ms"] > 0


def test_spans_carry_tier_and_experiment_decisions(graph: str, receiver: Receiver) -> None:
    auto_header, auto_trace, _ = traceparent()
    assert chat(graph, auto_header, model="auto").status_code == 200
    pinned_header, pinned_trace, _ = traceparent()
    pinned = httpx.post(
        f"{graph}/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"traceparent": pinned_header, "x-experiment": "tiny-next"},
        timeout=60,
    )
    assert pinned.status_code == 200
    auto = one(wait_for_trace(receiver, auto_trace, ["chat tiny-chat"]), "chat tiny-chat").attributes
    assert (auto["gen_ai.request.model"], auto["inference_graph.tier"]) == ("auto", "small")
    spans = wait_for_trace(receiver, pinned_trace, ["chat tiny-chat", "replica_handle_request chat-tiny-chat-v2"])
    experiment = one(spans, "chat tiny-chat").attributes
    assert (experiment["inference_graph.experiment"], experiment["inference_graph.route.reason"]) == (
        "tiny-next",
        "experiment",
    )
    assert experiment["inference_graph.version"] == "v2"
    one(spans, "replica_handle_request chat-tiny-chat-v2")


def test_a_streamed_request_is_one_trace_too(graph: str, receiver: Receiver) -> None:
    header, trace_id, _ = traceparent()
    response = chat(graph, header, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.text.rstrip().endswith("[DONE]")
    spans = wait_for_trace(receiver, trace_id, ["chat tiny-chat", "replica_handle_request chat-tiny-chat-v1 stream"])
    genai = one(spans, "chat tiny-chat")
    assert genai.attributes["inference_graph.stream"] is True
    assert genai.attributes["gen_ai.usage.output_tokens"] > 0
    assert "inference_graph.time_to_first_token_ms" in genai.attributes
    assert "chat tiny-chat" in ancestors(one(spans, "replica_handle_request chat-tiny-chat-v1 stream"), spans)


def test_unsampled_and_untraced_requests_export_nothing(graph: str, receiver: Receiver) -> None:
    header, trace_id, _ = traceparent(sampled=False)
    assert chat(graph, header).status_code == 200
    before = len(receiver.spans)
    plain = httpx.post(
        f"{graph}/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert plain.status_code == 200
    # a sampled request sent after them: once its spans are in, theirs would be too
    marker_header, marker_trace, _ = traceparent()
    assert chat(graph, marker_header).status_code == 200
    assert wait_for_trace(receiver, marker_trace, ["chat tiny-chat", REPLICA])
    time.sleep(1)  # a margin for spans exported out of order: that none come cannot be awaited, only given time
    assert receiver.trace(trace_id) == []
    new = [s for s in receiver.spans[before:] if s.trace_id != marker_trace]
    assert new == [], [s.name for s in new]
