"""One request as the ingress sees it: where it went, what came back, and how long each part took. The metrics,
the span and the log line are all read from this one record when the request finishes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.endpoints import Endpoint
from app.errors import ErrorInfo
from app.observability.metering import EngineReport

if TYPE_CHECKING:
    from opentelemetry.trace import Span

OTHER_ROUTE = "other"  # any path that is not a model endpoint: keeps the route label's values few
CLIENT_GONE = 499  # nginx's "client closed request": a stream whose client went away

OPERATIONS = {  # OpenTelemetry GenAI `gen_ai.operation.name`
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETION: "text_completion",
    Endpoint.EMBEDDING: "embeddings",
    Endpoint.RERANK: "rerank",
}


def route_label(path: str) -> str:
    endpoint = Endpoint.for_path(path)
    return endpoint.path if endpoint else OTHER_ROUTE


@dataclass
class RequestRecord:
    request_id: str
    route: str
    started: float  # the ingress's clock (perf_counter) when the request reached it
    trace_id: str | None = None
    operation: str = ""
    requested_model: str = ""  # as the client named it (`auto`, an alias, ...)
    model: str = ""
    version: str = ""
    engine: str = ""
    tier: str = ""
    experiment: str = ""
    reason: str = ""  # why the version: split, experiment or fallback
    rules: tuple[str, ...] = ()
    stream: bool = False
    attempts: int = 0
    status: int = 200
    error_code: str | None = None
    report: EngineReport | None = None
    first_event_overhead_s: float | None = None  # streams: the graph's time before the first event
    latency_s: float | None = None
    prompt: Any = None  # the request's content, kept only where prompts are logged
    completion: list[str] = field(default_factory=list)
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    span: Span | None = None  # the ingress's GenAI span, while the request runs (None: not traced)

    def fail(self, info: ErrorInfo) -> None:
        self.status = info.status
        self.error_code = info.code or info.type

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def engine_s(self) -> float:
        return self.report.engine_s if self.report else 0.0

    def overhead_s(self, elapsed_s: float) -> float:
        """The graph's own share of `elapsed_s`: everything but the time inside the engine."""
        return max(0.0, elapsed_s - self.engine_s)

    @property
    def ttft_s(self) -> float | None:
        """Time to the first token at the ingress: its latency less the time the replica went on working after the
        engine's first token."""
        if self.report is None or self.report.first_token_s is None or self.latency_s is None:
            return None
        after_first = self.report.replica_s - self.report.first_token_s
        return max(0.0, self.latency_s - after_first)

    @property
    def prompt_tokens(self) -> int:
        return self.report.prompt_tokens if self.report else 0

    @property
    def completion_tokens(self) -> int:
        return self.report.completion_tokens if self.report else 0
