"""Which failures a retry may mend: decided from the OpenAI error the failure maps to."""

from __future__ import annotations

from app.config import RetryConfig, RetryOn
from app.errors import ErrorInfo

_KIND_BY_STATUS = {
    500: RetryOn.SERVER_ERROR,
    502: RetryOn.SERVER_ERROR,
    503: RetryOn.REPLICA_DEATH,
    504: RetryOn.TIMEOUT,
}


def failure_kind(info: ErrorInfo) -> RetryOn | None:
    """The retryable kind of a failure, or None for a client's mistake (never retried)."""
    return _KIND_BY_STATUS.get(info.status)


def should_retry(config: RetryConfig, attempt: int, info: ErrorInfo) -> bool:
    """`attempt` counts from 1 for the try that just failed."""
    kind = failure_kind(info)
    return kind is not None and kind in config.retry_on and attempt < config.attempts
