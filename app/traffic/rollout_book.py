"""Every model's Rollout in one RolloutController: resumed from the snapshots kept for this run, and which of them are
still to be kept.

A snapshot is due when a rollout's phase, step or history moved (a step passed, a gate failed, an admin action, a
restore), never for an outcome alone. The book does no I/O: the controller writes what `unsaved()` gives and says so
with `saved()`, so a write that failed is due again at the next tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app.config import GraphConfig
from app.traffic.rollout import Action, Outcome, Rollout

Mark = tuple[str, int, int]  # phase, step, events in the history: what a kept snapshot was of


class RolloutBook:
    def __init__(self, config: GraphConfig, clock: Callable[[], float], saved: Mapping[str, Mapping[str, Any]]) -> None:
        """`saved`: the snapshots kept for this run, by model; a model with none (or one of another rollout config)
        starts afresh."""
        self._rollouts = {
            m.name: Rollout.resumed(m.name, m.stable_version, m.rollout, clock, saved.get(m.name))
            for m in config.models
            if m.rollout is not None
        }
        self._kept: dict[str, Mark] = {}  # nothing yet: a fresh rollout is kept too, so that a restart finds it

    def rollouts(self) -> Iterable[Rollout]:
        return self._rollouts.values()

    def get(self, model: str) -> Rollout | None:
        return self._rollouts.get(model)

    def record(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            rollout = self._rollouts.get(outcome.model)
            if rollout is not None:
                rollout.record(outcome)

    def tick(self) -> None:
        for rollout in self._rollouts.values():
            rollout.tick()

    def act(self, model: str, action: Action) -> Rollout:
        """Raises KeyError for a model with no rollout, InvalidTransition for a move its phase does not allow."""
        rollout = self._rollouts[model]
        rollout.act(action)
        return rollout

    def weights(self) -> dict[str, dict[str, float]]:
        return {name: r.weights() for name, r in self._rollouts.items()}

    def states(self) -> list[dict[str, Any]]:
        return [r.state() for r in self._rollouts.values()]

    def unsaved(self) -> dict[str, dict[str, Any]]:
        """The snapshot of every rollout that changed since its last kept one, by model."""
        return {
            name: r.snapshot()
            for name, r in self._rollouts.items()
            if self._kept.get(name) != (r.phase.value, r.step, len(r.history))
        }

    def saved(self, model: str, snapshot: Mapping[str, Any]) -> None:
        """`snapshot` (from `unsaved`) is kept; a change made while it was written is due again."""
        self._kept[model] = (snapshot["phase"], snapshot["step"], len(snapshot["history"]))
