"""The controller's rollouts: resumed from the snapshots of this run, and a snapshot due only when a rollout moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.config import GraphConfig, load_config
from app.traffic.rollout import Action, Outcome, Phase
from app.traffic.rollout_book import RolloutBook
from tests.fakes import ManualClock

ROOT = str(Path(__file__).resolve().parents[3])


def config() -> GraphConfig:
    version = {"engine": "transformers", "weights": {"path": ROOT}}

    def model(name: str, **extra: Any) -> dict[str, Any]:
        versions = [{"version": "stable", **version}, {"version": "canary", **version}]
        return {"name": name, "role": "chat", "default_version": "stable", "versions": versions, **extra}

    rollout = {"canary": "canary", "steps": [25, 50, 100], "step_duration_s": 10, "gates": {"min_requests": 2}}
    return load_config({"models": [model("rolled", rollout=rollout), model("split", weights={"stable": 100})]})


def ok(n: int) -> list[Outcome]:
    return [Outcome("rolled", "canary", ok=True, latency_ms=5)] * n


def keep(book: RolloutBook) -> dict[str, dict[str, Any]]:
    """What the controller does each tick: write every due snapshot (through JSON, as the store does)."""
    written = {model: json.loads(json.dumps(s)) for model, s in book.unsaved().items()}
    for model, snapshot in written.items():
        book.saved(model, snapshot)
    return written


def test_a_snapshot_is_due_when_a_rollout_moves_not_for_outcomes() -> None:
    clock = ManualClock()
    book = RolloutBook(config(), clock, {})
    assert [r.model for r in book.rollouts()] == ["rolled"]
    assert set(keep(book)) == {"rolled"}  # a fresh rollout is kept too, so that a restart finds it
    book.record(ok(5))
    book.tick()
    assert book.unsaved() == {}  # outcomes and a tick that changes nothing
    clock.now += 10
    book.tick()
    assert keep(book)["rolled"]["step"] == 1
    book.act("rolled", Action.PAUSE)
    assert keep(book)["rolled"]["phase"] == "paused"
    assert book.unsaved() == {}


def test_a_change_made_while_a_snapshot_was_written_is_due_again() -> None:
    book = RolloutBook(config(), ManualClock(), {})
    snapshot = book.unsaved()["rolled"]
    book.act("rolled", Action.PAUSE)  # while the write is on its way
    book.saved("rolled", snapshot)
    assert book.unsaved()["rolled"]["phase"] == "paused"


def test_a_restarted_book_resumes_this_runs_rollouts_and_keeps_the_restore() -> None:
    clock = ManualClock()
    before = RolloutBook(config(), clock, {})
    before.record(ok(2))
    clock.now += 10
    before.tick()
    kept = keep(before)
    clock.now += 3
    after = RolloutBook(config(), clock, kept)
    (rollout,) = after.rollouts()
    assert (rollout.phase, rollout.step) == (Phase.PROGRESSING, 1)
    assert after.weights() == {"rolled": {"stable": 50.0, "canary": 50.0}}
    (state,) = after.states()
    assert state["history"][-1]["reason"].startswith("resumed at step 1 (50%)")
    assert len(keep(after)["rolled"]["history"]) == 3  # started, step passed, resumed


def test_act_on_a_model_with_no_rollout_raises_key_error() -> None:
    with pytest.raises(KeyError):
        RolloutBook(config(), ManualClock(), {}).act("split", Action.PAUSE)
