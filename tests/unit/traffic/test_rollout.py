import json
from typing import Any

import pytest

from app.config import RolloutConfig
from app.traffic.rollout import Action, InvalidTransition, Outcome, Phase, Rollout
from tests.fakes import ManualClock


def rollout_config(**gates: float) -> RolloutConfig:
    return RolloutConfig.model_validate(
        {"canary": "v2", "steps": [10, 50, 100], "step_duration_s": 10, "gates": {"min_requests": 10, **gates}}
    )


def rollout(clock: ManualClock, **gates: float) -> Rollout:
    return Rollout("m", "v1", rollout_config(**gates), clock)


def feed(r: Rollout, version: str, n: int, errors: int = 0, latency_ms: float = 100) -> None:
    for i in range(n):
        r.record(Outcome("m", version, ok=i >= errors, latency_ms=latency_ms))


def test_healthy_canary_is_promoted_through_every_step() -> None:
    clock = ManualClock()
    r = rollout(clock)
    assert r.weights() == {"v1": 90, "v2": 10}
    for expected in (50, 100):
        feed(r, "v2", 10)
        feed(r, "v1", 10)
        r.tick()
        assert r.phase is Phase.PROGRESSING  # not before the step's duration
        clock.now += 10
        r.tick()
        assert r.canary_weight == expected
    feed(r, "v2", 10)
    clock.now += 10
    r.tick()
    assert r.phase is Phase.PROMOTED and r.weights() == {"v1": 0, "v2": 100}
    assert [e.reason for e in r.history][-1] == "passed every step"


def test_a_step_waits_for_enough_requests() -> None:
    clock = ManualClock()
    r = rollout(clock)
    feed(r, "v2", 9)
    clock.now = 100
    r.tick()
    assert (r.phase, r.step) == (Phase.PROGRESSING, 0)


def test_error_gate_rolls_back_at_once_and_records_why() -> None:
    clock = ManualClock()
    r = rollout(clock, max_error_rate=0.05)
    feed(r, "v2", 10, errors=2)
    r.tick()  # before the step's duration: a failed gate does not wait
    assert r.phase is Phase.ROLLED_BACK and r.weights() == {"v1": 100, "v2": 0}
    event = r.history[-1]
    assert "error rate 0.200 > 0.05" in event.reason
    assert event.reading is not None and event.reading.canary_requests == 10


def test_gates_against_stable() -> None:
    clock = ManualClock()
    r = rollout(clock, max_error_rate=0.5, max_error_rate_increase=0.05, max_p99_ratio=1.5)
    feed(r, "v1", 20, latency_ms=100)
    feed(r, "v2", 20, latency_ms=160)
    r.tick()
    assert r.phase is Phase.ROLLED_BACK
    assert "1.5 x stable's 100 ms" in r.history[-1].reason
    r2 = rollout(clock, max_error_rate=0.5, max_error_rate_increase=0.05)
    feed(r2, "v1", 20)
    feed(r2, "v2", 20, errors=2)
    r2.tick()
    assert r2.phase is Phase.ROLLED_BACK and "exceeds stable's 0.000" in r2.history[-1].reason


def test_absolute_p99_gate() -> None:
    r = rollout(ManualClock(), max_p99_ms=500)
    feed(r, "v2", 100, latency_ms=100)
    feed(r, "v2", 2, latency_ms=900)
    r.tick()
    assert r.phase is Phase.ROLLED_BACK and "p99 900 ms > 500 ms" in r.history[-1].reason


def test_manual_actions() -> None:
    clock = ManualClock()
    r = rollout(clock)
    r.act(Action.PAUSE)
    feed(r, "v2", 10)
    clock.now = 100
    r.tick()
    assert (r.phase, r.canary_weight) == (Phase.PAUSED, 10)
    r.act(Action.RESUME)
    assert r.phase is Phase.PROGRESSING
    r.act(Action.ABORT)
    assert r.weights() == {"v1": 100, "v2": 0}
    with pytest.raises(InvalidTransition):
        r.act(Action.RESUME)
    r2 = rollout(clock)
    r2.act(Action.PROMOTE)
    assert r2.weights()["v2"] == 100


def test_waits_for_resume_without_auto_start() -> None:
    config = RolloutConfig(canary="v2", auto_start=False)
    r = Rollout("m", "v1", config, ManualClock())
    assert r.phase is Phase.PAUSED and r.canary_weight == 0
    r.act(Action.RESUME)
    assert r.canary_weight == 10


def lost(r: Rollout, version: str, actor: str, held: int = 1) -> None:
    """The tries that a lost replica (`actor`) failed: every request it held."""
    for _ in range(held):
        r.record(Outcome("m", version, ok=False, latency_ms=5, incident=actor))


def test_a_lost_replica_is_counted_once_and_its_tries_are_not_canary_errors() -> None:
    r = rollout(ManualClock(), max_error_rate=0.1)
    feed(r, "v2", 20)
    feed(r, "v1", 20)
    lost(r, "v2", "actor-1", held=5)  # a node's loss: the canary replica on it, and a stable one
    lost(r, "v1", "actor-9", held=7)
    r.tick()
    reading = r.reading()
    assert r.phase is Phase.PROGRESSING
    assert (reading.canary_requests, reading.canary_error_rate, reading.canary_replicas_lost) == (20, 0.0, 1)
    assert (reading.stable_requests, reading.stable_error_rate) == (20, 0.0)
    lost(r, "v2", "actor-2")
    lost(r, "v2", "actor-1", held=3)  # the same replica seen again (by another ingress): still one
    r.tick()
    assert r.phase is Phase.PROGRESSING and r.reading().canary_replicas_lost == 2


def test_a_canary_that_keeps_losing_replicas_is_rolled_back_before_min_requests() -> None:
    r = rollout(ManualClock(), max_replicas_lost=2)
    feed(r, "v2", 3)  # min_requests is 10: the other gates wait
    for actor in ("actor-1", "actor-2", "actor-3"):
        lost(r, "v2", actor)
    r.tick()
    assert r.phase is Phase.ROLLED_BACK
    assert r.history[-1].reason == "gate failed: 3 canary replicas lost > 2"


def test_failures_of_no_lost_replica_are_errors_one_by_one() -> None:
    r = rollout(ManualClock(), max_error_rate=0.1)
    feed(r, "v2", 20, errors=2)
    r.tick()
    assert r.phase is Phase.PROGRESSING and r.reading().canary_error_rate == 0.1
    feed(r, "v2", 1, errors=1)
    r.tick()
    assert r.phase is Phase.ROLLED_BACK


# ---- snapshot and restore ----------------------------------------------------------------------------------


def stored(r: Rollout) -> dict[str, Any]:
    """The rollout's snapshot as the store gives it back: through JSON."""
    saved: dict[str, Any] = json.loads(json.dumps(r.snapshot()))
    return saved


def at_step_one(clock: ManualClock) -> Rollout:
    r = rollout(clock)
    feed(r, "v2", 10)
    clock.now += 10
    r.tick()
    assert (r.phase, r.step, r.canary_weight) == (Phase.PROGRESSING, 1, 50)
    return r


def test_a_restored_rollout_keeps_its_step_and_history_and_starts_the_step_again() -> None:
    clock = ManualClock()
    before = at_step_one(clock)
    feed(before, "v2", 9)
    clock.now += 9  # the step nearly held when the controller died
    snapshot = stored(before)
    clock.now += 1
    r = Rollout.resumed("m", "v1", rollout_config(), clock, snapshot)
    assert (r.phase, r.step, r.weights()) == (Phase.PROGRESSING, 1, {"v1": 50, "v2": 50})
    assert r.history[:-1] == before.history
    assert (r.history[-1].at, r.history[-1].step, r.history[-1].canary_weight) == (clock.now, 1, 50)
    assert r.history[-1].reason == "resumed at step 1 (50%) after a controller restart; the step starts again"
    assert r.reading().canary_requests == 0  # the outcomes since the snapshot are gone
    feed(r, "v2", 10)
    clock.now += 9
    r.tick()
    assert r.step == 1  # the step's full duration runs again from the restore
    clock.now += 1
    r.tick()
    assert (r.step, r.canary_weight) == (2, 100)


def test_a_paused_rollout_is_restored_paused_at_its_step() -> None:
    clock = ManualClock()
    before = at_step_one(clock)
    before.act(Action.PAUSE)
    r = Rollout.resumed("m", "v1", rollout_config(), clock, stored(before))
    assert (r.phase, r.step, r.canary_weight) == (Phase.PAUSED, 1, 50)
    assert r.history[-1].reason == "restored at step 1 (50%), paused, after a controller restart"
    r.act(Action.RESUME)
    assert (r.phase, r.step, r.canary_weight) == (Phase.PROGRESSING, 1, 50)
    waiting = Rollout("m", "v1", RolloutConfig(canary="v2", auto_start=False), clock)
    r = Rollout.resumed("m", "v1", RolloutConfig(canary="v2", auto_start=False), clock, stored(waiting))
    assert (r.phase, r.canary_weight) == (Phase.PAUSED, 0)  # never started: still waits for resume
    r.act(Action.RESUME)
    assert r.canary_weight == 10


@pytest.mark.parametrize("action", [Action.PROMOTE, Action.ABORT])
def test_a_final_rollout_stays_final(action: Action) -> None:
    clock = ManualClock()
    before = at_step_one(clock)
    before.act(action)
    r = Rollout.resumed("m", "v1", rollout_config(), clock, stored(before))
    assert r.phase is before.phase and r.weights() == before.weights()
    assert r.history[-1].reason == f"restored as {before.phase.value} after a controller restart"
    feed(r, "v2", 10)
    clock.now += 100
    r.tick()
    assert r.phase is before.phase
    with pytest.raises(InvalidTransition):
        r.act(Action.RESUME)


def test_a_rolled_back_rollout_keeps_the_gate_reading_that_failed_it() -> None:
    clock = ManualClock()
    before = rollout(clock)
    feed(before, "v2", 10, errors=5)
    before.tick()
    r = Rollout.resumed("m", "v1", rollout_config(), clock, stored(before))
    assert r.phase is Phase.ROLLED_BACK and r.weights() == {"v1": 100, "v2": 0}
    failed = r.history[-2]
    assert failed == before.history[-1] and failed.reading is not None and failed.reading.failed  # reading and all


@pytest.mark.parametrize(
    "changed",
    [
        {"canary": "v3"},
        {"steps": [10, 100]},
        {"gates": {"min_requests": 10, "max_error_rate": 0.5}},
    ],
)
def test_a_snapshot_of_another_rollout_is_ignored(changed: dict[str, Any]) -> None:
    clock = ManualClock()
    snapshot = stored(at_step_one(clock))
    config = RolloutConfig.model_validate({**rollout_config().model_dump(), **changed})
    r = Rollout.resumed("m", "v1", config, clock, snapshot)
    assert (r.phase, r.step, [e.reason for e in r.history]) == (Phase.PROGRESSING, 0, ["started"])
    other_stable = Rollout.resumed("m", "v0", rollout_config(), clock, snapshot)
    assert (other_stable.step, len(other_stable.history)) == (0, 1)


@pytest.mark.parametrize(
    "damage",
    [
        {"phase": "sideways"},
        {"step": 7},
        {"history": [{"at": 0}]},
        {"format": 99},
    ],
)
def test_an_unreadable_snapshot_starts_afresh(damage: dict[str, Any]) -> None:
    clock = ManualClock()
    snapshot = {**stored(at_step_one(clock)), **damage}
    r = Rollout.resumed("m", "v1", rollout_config(), clock, snapshot)
    assert (r.step, [e.reason for e in r.history]) == (0, ["started"])
    assert Rollout.resumed("m", "v1", rollout_config(), clock, None).step == 0
