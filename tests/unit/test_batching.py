from app.batching import AdaptiveWindow
from tests.fakes import ManualClock


def test_lone_requests_wait_only_the_floor() -> None:
    clock = ManualClock()
    window = AdaptiveWindow(0.001, 0.05, 32, clock)
    assert window.arrive() == 0.001  # nothing measured yet
    for _ in range(5):
        clock.now += 2.0  # one request every two seconds
        assert window.arrive() == 0.001


def test_a_burst_waits_to_fill_the_batch_up_to_the_ceiling() -> None:
    clock = ManualClock()
    window = AdaptiveWindow(0.001, 0.05, 8, clock, alpha=1.0)
    window.arrive()
    clock.now += 0.002  # 500 requests/s: 7 more arrive in 14 ms
    assert abs(window.arrive() - 0.014) < 1e-9
    clock.now += 0.02  # 50/s: filling would take 140 ms, capped at the ceiling
    assert window.arrive() == 0.05


def test_the_rate_is_smoothed() -> None:
    clock = ManualClock()
    window = AdaptiveWindow(0.0, 1.0, 2, clock, alpha=0.5)
    window.arrive()
    clock.now += 0.1
    window.arrive()
    clock.now += 0.3
    assert abs(window.arrive() - 0.2) < 1e-9  # gap 0.1 then 0.3 -> smoothed 0.2
