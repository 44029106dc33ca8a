"""Tracing on top of Ray Serve's own (`tracing_config`): the OTLP exporter Ray loads in every replica and proxy, and
the spans the graph adds to Ray's: one GenAI span per model request at the ingress (its attempts' handle calls are
its children, so the model replica's spans join the same trace) and the engine's numbers on the replica's span.

A W3C `traceparent` is continued: by Ray's proxy where its tracing is on (env `RAY_SERVE_TRACING_*`, see the
README), and otherwise by the ingress itself, which parents its span on the incoming context.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:  # the proxy imports this module for the exporter alone: keep its imports light
    from app.observability.genai import Attributes
    from app.observability.metering import EngineReport

TRACER = "inference_graph"
_propagator = TraceContextTextMapPropagator()


def otlp_exporter() -> list[SpanProcessor]:
    """Ray Serve's `exporter_import_path` target (`app.observability.tracing:otlp_exporter`): a batching OTLP
    exporter configured by the standard variables (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _PROTOCOL, _HEADERS,
    _TIMEOUT, _COMPRESSION, _CERTIFICATE; OTEL_BSP_* for batching; OTEL_SERVICE_NAME for the resource)."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return [BatchSpanProcessor(GrpcExporter())]
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return [BatchSpanProcessor(HttpExporter())]
    raise ValueError(f"OTLP protocol {protocol!r} is not supported; use grpc or http/protobuf")


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def start_request_span(name: str, attributes: Attributes, headers: Mapping[str, str]) -> Span | None:
    """The ingress's span for one model request, a child of Ray's replica span or, when Ray did not continue the
    client's `traceparent`, of that. None when nothing would record it (tracing off, or not sampled)."""
    current = trace.get_current_span()
    parent = None
    if "traceparent" in headers:
        incoming = _propagator.extract(headers)
        wanted = trace.get_current_span(incoming).get_span_context()
        if wanted.is_valid and wanted.trace_id != current.get_span_context().trace_id:
            parent = incoming
    elif not current.is_recording():
        return None  # Ray's sampler said no: keep it that way
    span = trace.get_tracer(TRACER).start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
    if not span.is_recording():
        return None
    return span


def end_request_span(span: Span, attributes: Attributes, failed: bool) -> None:
    span.set_attributes(attributes)
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def annotate_replica_span(report: EngineReport) -> None:
    """Put the engine's numbers on the span Ray opened for this call in the model replica (when it records)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": report.prompt_tokens,
            "gen_ai.usage.output_tokens": report.completion_tokens,
            "inference_graph.engine_ms": round(report.engine_s * 1000, 3),
        }
    )
