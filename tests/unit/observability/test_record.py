"""The request record: overhead and time to first token from the engine's report, route labels, and the status of
failed requests and of clients that left."""

from __future__ import annotations

import pytest

from app.errors import ErrorInfo
from app.observability.metering import EngineReport
from app.observability.record import CLIENT_GONE, OTHER_ROUTE, RequestRecord, route_label


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


def test_errors_and_gone_clients_set_the_status() -> None:
    record = RequestRecord("id", "/v1/chat/completions", 0.0)
    record.fail(ErrorInfo(status=404, message="no", type="invalid_request_error", code="model_not_found"))
    assert (record.status, record.error_code, record.ok) == (404, "model_not_found", False)
    assert CLIENT_GONE == 499
