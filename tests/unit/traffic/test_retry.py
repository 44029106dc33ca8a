"""Which failures a retry may mend: the OpenAI error's status decides the kind, the model's retry config the rest."""

from __future__ import annotations

import pytest

from app.config import RetryConfig, RetryOn
from app.errors import ErrorInfo
from app.traffic.retry import failure_kind, should_retry


def failure(status: int) -> ErrorInfo:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ErrorInfo(status=status, message="failed", type=kind)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, RetryOn.SERVER_ERROR),
        (502, RetryOn.SERVER_ERROR),
        (503, RetryOn.REPLICA_DEATH),
        (504, RetryOn.TIMEOUT),
    ],
)
def test_server_side_failures_have_a_retryable_kind(status: int, kind: RetryOn) -> None:
    assert failure_kind(failure(status)) is kind


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 422, 429, 501])
def test_a_client_mistake_or_a_refusal_has_none(status: int) -> None:
    assert failure_kind(failure(status)) is None


def test_a_retryable_failure_is_retried_until_the_attempts_are_spent() -> None:
    config = RetryConfig(attempts=3)
    assert should_retry(config, 1, failure(503)) and should_retry(config, 2, failure(503))
    assert not should_retry(config, 3, failure(503))
    assert not should_retry(RetryConfig(attempts=1), 1, failure(500))


def test_only_the_kinds_the_config_names_are_retried() -> None:
    config = RetryConfig(attempts=2, retry_on=[RetryOn.TIMEOUT])
    assert should_retry(config, 1, failure(504))
    assert not should_retry(config, 1, failure(500)) and not should_retry(config, 1, failure(503))
    assert not should_retry(RetryConfig(attempts=5, retry_on=[]), 1, failure(504))


def test_a_client_mistake_is_never_retried() -> None:
    assert not should_retry(RetryConfig(attempts=10), 1, failure(400))
