from app.config import BreakerConfig
from app.traffic.breaker import BreakerState, CircuitBreaker
from tests.fakes import ManualClock


def test_opens_after_consecutive_failures_and_recovers_through_probes() -> None:
    clock = ManualClock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, recovery_time_s=10, half_open_probes=2), clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count: failures must be consecutive
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now = 10
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN and b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_opens_again() -> None:
    clock = ManualClock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, recovery_time_s=5), clock)
    b.record_failure()
    clock.now = 5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10
    assert b.state is BreakerState.HALF_OPEN


def test_release_frees_a_half_open_probe_without_a_verdict() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, recovery_time_s=10, half_open_probes=1), clock)
    breaker.record_failure()
    clock.now = 10.0
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.release()
    assert breaker.state is BreakerState.HALF_OPEN and breaker.allow()
