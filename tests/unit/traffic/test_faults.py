import random
import time

from app.config import FaultConfig
from app.traffic.faults import FaultInjector


async def test_no_faults_by_default() -> None:
    faults = FaultInjector(None)
    assert await faults.check() is None and await faults.stream_gaps().next() is None


async def test_abort_percent_fails_that_share_of_calls() -> None:
    faults = FaultInjector(FaultConfig(abort_percent=30), random.Random(1))
    failed = [await faults.check() for _ in range(1000)]
    share = sum(f is not None for f in failed) / 1000
    assert 0.25 < share < 0.35
    assert next(f for f in failed if f is not None).status == 500


async def test_delay_comes_before_the_call() -> None:
    started = time.monotonic()
    assert await FaultInjector(FaultConfig(delay_ms=100)).check() is None
    assert time.monotonic() - started >= 0.1


async def test_a_doomed_stream_fails_at_its_first_gap_and_every_gap_is_slowed() -> None:
    doomed = FaultInjector(FaultConfig(mid_stream_abort_percent=100)).stream_gaps()
    error = await doomed.next()
    assert error is not None and error.status == 500 and error.code == "injected_fault"
    slow = FaultInjector(FaultConfig(event_delay_ms=50)).stream_gaps()
    started = time.monotonic()
    assert await slow.next() is None and await slow.next() is None
    assert time.monotonic() - started >= 0.1


async def test_mid_stream_aborts_are_decided_per_stream() -> None:
    faults = FaultInjector(FaultConfig(mid_stream_abort_percent=50), random.Random(2))
    verdicts = []
    for _ in range(400):
        gaps = faults.stream_gaps()
        first, second = await gaps.next(), await gaps.next()
        assert (first is None) == (second is None)  # a stream that goes on past its first gap is not doomed later
        verdicts.append(first is not None)
    assert 0.4 < sum(verdicts) / 400 < 0.6
