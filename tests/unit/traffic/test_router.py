import random
from pathlib import Path

from app.config import ModelConfig
from app.traffic.rollout import Outcome
from app.traffic.router import OutcomeLog, VersionRouter

ROOT = str(Path(__file__).resolve().parents[3])


def model(**extra: object) -> ModelConfig:
    v = {"engine": "transformers", "weights": {"path": ROOT}}
    return ModelConfig.model_validate(
        {
            "name": "m",
            "role": "chat",
            "default_version": "stable",
            "versions": [{"version": "stable", **v}, {"version": "canary", **v}],
            **extra,
        }
    )


def test_open_breaker_sends_the_share_to_stable() -> None:
    router = VersionRouter(
        model(weights={"stable": 0, "canary": 100}, breaker={"failure_threshold": 2}), lambda: 0.0, random.Random(0)
    )
    assert router.choose("u") == ("canary", "split")
    router.record("canary", ok=False)
    router.record("canary", ok=False)
    assert router.choose("u") == ("stable", "fallback")
    assert router.breaker_states() == {"stable": "closed", "canary": "open"}
    assert router.can_serve()


def test_a_replica_death_counts_once_against_the_breaker() -> None:
    router = VersionRouter(
        model(weights={"stable": 100}, breaker={"failure_threshold": 2}), lambda: 0.0, random.Random(0)
    )
    for _ in range(10):  # every request the dead replica held fails at once: one incident
        router.record("stable", ok=False, incident="actor-1")
    assert router.breaker_states()["stable"] == "closed"
    router.record("stable", ok=False, incident="actor-2")  # a second replica died: two incidents in a row
    assert router.breaker_states()["stable"] == "open"


def test_a_version_that_lost_a_replica_is_set_aside_until_readmitted() -> None:
    router = VersionRouter(model(weights={"stable": 0, "canary": 100}), lambda: 0.0, random.Random(0))
    router.record("canary", ok=False)  # a failed answer is the breaker's business only
    assert router.set_aside == frozenset() and router.choose("u") == ("canary", "split")
    router.record("canary", ok=False, incident="actor-1")
    assert router.set_aside == {"canary"} and router.breaker_states()["canary"] == "closed"
    assert {router.choose(f"u{i}") for i in range(20)} == {("stable", "fallback")}
    assert router.choose(None, pinned="canary") == ("stable", "fallback")
    router.readmit("canary")
    assert router.choose("u") == ("canary", "split")
    router.record("stable", ok=False, incident="actor-2")  # everything falls back to stable: never set aside
    assert router.set_aside == frozenset() and router.choose(None, pinned="stable") == ("stable", "experiment")


def test_excluded_versions_and_pins() -> None:
    router = VersionRouter(model(weights={"stable": 50, "canary": 50}), lambda: 0.0, random.Random(0))
    assert router.choose(None, pinned="canary") == ("canary", "experiment")
    assert router.choose(None, pinned="canary", exclude=["canary"]) == ("stable", "fallback")


def test_live_weights_replace_the_config() -> None:
    router = VersionRouter(model(), lambda: 0.0, random.Random(0))
    assert router.weights == {"stable": 100.0}
    router.set_weights({"canary": 100.0})
    assert router.weights == {"canary": 100.0, "stable": 0.0}
    assert {router.choose(f"u{i}")[0] for i in range(50)} == {"canary"}


def test_outcome_log_drains_and_bounds() -> None:
    log = OutcomeLog(limit=2)
    for _ in range(3):
        log.add(Outcome("m", "stable", True, 1.0))
    assert len(log.drain()) == 2 and log.drain() == []


def test_versions_that_cannot_serve_are_left_out_of_the_split() -> None:
    router = VersionRouter(model(weights={"stable": 50, "canary": 50}), lambda: 0.0, random.Random(0))
    chosen = {router.choose(f"user-{i}", unable=frozenset({"canary"})) for i in range(50)}
    assert chosen == {("stable", "split"), ("stable", "capability")}  # users the split gave the canary move


def test_the_split_runs_among_the_capable_versions_when_stable_cannot() -> None:
    router = VersionRouter(model(weights={"stable": 90, "canary": 10}), lambda: 0.0, random.Random(0))
    assert {router.choose(f"u{i}", unable=frozenset({"stable"}))[0] for i in range(30)} == {"canary"}


def test_a_capable_version_with_no_weight_still_serves_what_only_it_can() -> None:
    router = VersionRouter(model(weights={"stable": 100, "canary": 0}), lambda: 0.0, random.Random(0))
    assert router.choose("u", unable=frozenset({"stable"})) == ("canary", "capability")


def test_an_open_breaker_on_the_only_capable_version_does_not_send_it_to_an_incapable_one() -> None:
    router = VersionRouter(model(breaker={"failure_threshold": 1}), lambda: 0.0, random.Random(0))
    router.record("canary", ok=False)
    assert router.choose("u", unable=frozenset({"stable"}))[0] == "canary"
