"""The ingress's one object for observing requests: it opens a record per request, fills it as the pipeline runs,
and when the request is done records its metrics, ends its span and writes its log line, in that one call."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from opentelemetry.trace import use_span

from app.config import GraphConfig
from app.errors import ErrorInfo
from app.observability import genai, tracing
from app.observability.metering import EngineReport, Metered
from app.observability.record import OPERATIONS, RequestRecord, route_label
from app.observability.request_log import RequestLog, log_line
from app.traffic.plan import Plan

OVERHEAD_HEADER = "x-graph-overhead-ms"


class RequestMetrics(Protocol):
    """What the observer records (deployments/metrics.py implements it on Ray's metrics)."""

    def request(self, record: RequestRecord) -> None: ...

    def route_decision(self, model: str, version: str, tier: str, experiment: str, reason: str) -> None: ...


class RequestObserver:
    def __init__(
        self,
        config: GraphConfig,
        metrics: RequestMetrics,
        log: RequestLog | None,
        clock: Callable[[], float] = time.perf_counter,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self._metrics = metrics
        self._log = log
        self._content = config.guards.log_prompts
        self._clock = clock
        self._new_id = new_id or _random_id
        self._engines = {(m.name, v.version): v.engine.value for m in config.models for v in m.versions}

    @property
    def keeps_content(self) -> bool:
        return self._content

    def begin(self, path: str, headers: Mapping[str, str]) -> RequestRecord:
        request_id = headers.get("x-request-id") or self._new_id()
        return RequestRecord(request_id, route_label(path), self._clock(), trace_id=tracing.current_trace_id())

    def planned(self, record: RequestRecord, plan: Plan, headers: Mapping[str, str], requested: object) -> None:
        """The pipeline chose the model: note the decisions and open the request's span. `requested` is the model
        the client named (before rewrite rules and tiers)."""
        record.route = plan.endpoint.path
        record.operation = OPERATIONS[plan.endpoint]
        record.requested_model = requested if isinstance(requested, str) else plan.body.model
        record.model = plan.model.name
        record.tier = plan.tier or ""
        record.experiment = plan.experiment or ""
        record.rules = tuple(plan.rules)
        record.stream = plan.stream
        if self._content:
            record.prompt = genai.prompt_content(plan.body)
        attributes = genai.request_attributes(plan.body, record.operation)
        attributes["gen_ai.request.model"] = record.requested_model
        record.span = tracing.start_request_span(f"{record.operation} {record.model}", attributes, headers)
        if record.span is not None:
            record.trace_id = format(record.span.get_span_context().trace_id, "032x")

    def active(self, record: RequestRecord) -> AbstractContextManager[Any]:
        """Makes the request's span current, so the handle calls made under it are its children."""
        return use_span(record.span, end_on_exit=False) if record.span is not None else nullcontext()

    def routed(self, record: RequestRecord, version: str, reason: str) -> None:
        record.attempts += 1
        record.version, record.reason = version, reason
        record.engine = self._engines.get((record.model, version), "")
        self._metrics.route_decision(record.model, version, record.tier, record.experiment, reason)

    def answered(self, record: RequestRecord, answer: Metered[object] | ErrorInfo) -> None:
        """A unary answer (or the error that ended the request)."""
        if isinstance(answer, ErrorInfo):
            record.fail(answer)
            return
        record.report = answer.report
        if isinstance(answer.value, ErrorInfo):
            record.fail(answer.value)
            return
        record.status = 200
        record.response_id, record.finish_reasons, text = genai.response_details(answer.value)
        if self._content and text is not None:
            record.completion = [text]

    def first_event(self, record: RequestRecord, report: EngineReport) -> None:
        """A stream's first event is here: what the graph spent before it is the stream's overhead header."""
        record.first_event_overhead_s = max(0.0, self._clock() - record.started - report.engine_s)

    def streamed(self, record: RequestRecord, event: str) -> None:
        """A stream's event (called only when content is kept)."""
        record.completion.append(genai.sse_text(event))

    def overhead_headers(self, record: RequestRecord) -> dict[str, str]:
        """`x-graph-overhead-ms`: the graph's own time; for a stream, its time before the first event."""
        if record.first_event_overhead_s is not None:
            overhead = record.first_event_overhead_s
        else:
            elapsed = record.latency_s if record.latency_s is not None else self._clock() - record.started
            overhead = record.overhead_s(elapsed)
        return {OVERHEAD_HEADER: f"{overhead * 1000:.3f}"}

    def finish(self, record: RequestRecord) -> dict[str, str]:
        """The request is done: record its metrics, end its span, write its log line; returns its overhead header."""
        record.latency_s = self._clock() - record.started
        self._metrics.request(record)
        if record.span is not None:
            attributes = genai.result_attributes(record)
            if self._content:
                attributes.update(genai.content_attributes(record))
            tracing.end_request_span(record.span, attributes, failed=record.status >= 500)
            record.span = None
        if self._log is not None:
            self._log.write(log_line(record, self._content))
        return self.overhead_headers(record)


def _random_id() -> str:
    import uuid

    return uuid.uuid4().hex
