"""A circuit breaker per model version: closed -> open after N failures -> half-open probes -> closed."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from app.config import BreakerConfig


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probes_ok = 0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._config.recovery_time_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a request may go to this version now; half-open lets one probe through at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False
            self._probes_ok += 1
            if self._probes_ok >= self._config.half_open_probes:
                self._reset()
        else:
            self._failures = 0

    def release(self) -> None:
        """A request that `allow` let through ended with no verdict (its client left, or the cache answered): a
        half-open probe's place is free again."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    def record_failure(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._open()  # a failed probe opens it again for a full recovery time
            return
        self._failures += 1
        if self._failures >= self._config.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probes_ok = 0
        self._probe_in_flight = False

    def _reset(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probes_ok = 0
        self._probe_in_flight = False
