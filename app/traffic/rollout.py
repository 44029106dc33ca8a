"""Progressive rollout of a canary: step its weight up while its gates hold; roll back at once when not.

The state machine is pure: outcomes are recorded, `tick()` judges, a clock is passed in. The RolloutController
deployment owns one Rollout per model and runs `tick()` off the request path. `snapshot()` is what a restarted
controller needs to go on where it was (`Rollout.resumed`); the controller keeps it outside itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from app.config import RolloutConfig


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    ABORTED = "aborted"


class Action(StrEnum):
    PROMOTE = "promote"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


FINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED})
SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class Outcome:
    """One finished try, as an ingress saw it. `incident` names the lost replica (its actor) whose death or outage
    failed it, a failure that every request it held shares."""

    model: str
    version: str
    ok: bool
    latency_ms: float
    incident: str | None = None


@dataclass
class Window:
    """One version's outcomes in the current step. A lost replica is not an answer of the version: its failed tries
    (retried elsewhere) are not errors here; the replica is counted once, by its actor id, which every ingress
    names alike, and judged by its own gate (as the version's breaker counts it once)."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    lost_replicas: set[str] = field(default_factory=set)

    def add(self, outcome: Outcome) -> None:
        if not outcome.ok and outcome.incident is not None:
            self.lost_replicas.add(outcome.incident)
            return
        self.requests += 1
        if outcome.ok:
            self.latencies_ms.append(outcome.latency_ms)
        else:
            self.errors += 1

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float:
        """Nearest-rank p99 of successful requests' latency; 0 when there are none."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass(frozen=True)
class GateReading:
    canary_requests: int
    canary_error_rate: float
    canary_p99_ms: float
    stable_requests: int
    stable_error_rate: float
    stable_p99_ms: float
    failed: tuple[str, ...] = ()
    canary_replicas_lost: int = 0


@dataclass(frozen=True)
class Event:
    at: float
    phase: Phase
    step: int
    canary_weight: float
    reason: str
    reading: GateReading | None = None


class InvalidTransition(ValueError):
    """An action that the rollout's phase does not allow (e.g. resuming a promoted rollout)."""


class Rollout:
    def __init__(self, model: str, stable: str, config: RolloutConfig, clock: Callable[[], float]) -> None:
        self.model = model
        self.stable = stable
        self.canary = config.canary
        self._config = config
        self._clock = clock
        self.phase = Phase.PROGRESSING if config.auto_start else Phase.PAUSED
        self._started = config.auto_start
        self.step = 0
        self._step_started = clock()
        self._canary = Window()
        self._stable = Window()
        self.history: list[Event] = []
        self._log("started" if config.auto_start else "waiting for resume")

    @classmethod
    def resumed(
        cls,
        model: str,
        stable: str,
        config: RolloutConfig,
        clock: Callable[[], float],
        snapshot: Mapping[str, Any] | None,
    ) -> Rollout:
        """The rollout that `snapshot` recorded, at its phase and step (a final phase stays final) and with its
        history; the step starts again, its timer and gate windows anew, as the outcomes since the snapshot are gone.
        A fresh rollout when there is no snapshot, or it is of another rollout (stable, canary, steps or gates
        changed) or unreadable."""
        rollout = cls(model, stable, config, clock)
        if snapshot is None or snapshot.get("format") != SNAPSHOT_FORMAT or snapshot.get("rollout") != rollout._what():
            return rollout
        try:
            phase, step, started = Phase(snapshot["phase"]), int(snapshot["step"]), bool(snapshot["started"])
            history = [_event(e) for e in snapshot["history"]]
        except (KeyError, TypeError, ValueError):
            return rollout
        if not 0 <= step < len(config.steps):
            return rollout
        rollout.phase, rollout.step, rollout._started, rollout.history = phase, step, started, history
        rollout._new_step()
        where = f"step {step} ({rollout.canary_weight:g}%)"
        if phase is Phase.PROGRESSING:
            rollout._log(f"resumed at {where} after a controller restart; the step starts again")
        elif phase is Phase.PAUSED:
            rollout._log(f"restored at {where}, paused, after a controller restart")
        else:
            rollout._log(f"restored as {phase.value} after a controller restart")
        return rollout

    def snapshot(self) -> dict[str, Any]:
        """What `resumed` needs, JSON-able: the phase, step and history, and what this rollout is (so a snapshot is
        not applied to another). The step's gate windows are left out: a resumed step starts again."""
        return {
            "format": SNAPSHOT_FORMAT,
            "rollout": self._what(),
            "phase": self.phase.value,
            "step": self.step,
            "started": self._started,
            "history": [asdict(e) for e in self.history],
        }

    def _what(self) -> dict[str, Any]:
        config = self._config
        return {
            "model": self.model,
            "stable": self.stable,
            "canary": self.canary,
            "steps": list(config.steps),
            "gates": config.gates.model_dump(mode="json"),
        }

    @property
    def canary_weight(self) -> float:
        if self.phase is Phase.PROMOTED:
            return 100.0
        if self.phase in FINAL or not self._started:
            return 0.0
        return self._config.steps[self.step]

    def weights(self) -> dict[str, float]:
        w = self.canary_weight
        return {self.stable: 100.0 - w, self.canary: w}

    def record(self, outcome: Outcome) -> None:
        if self.phase in FINAL:
            return
        if outcome.version == self.canary:
            self._canary.add(outcome)
        elif outcome.version == self.stable:
            self._stable.add(outcome)

    def reading(self) -> GateReading:
        c, s = self._canary, self._stable
        return GateReading(
            c.requests,
            c.error_rate,
            c.p99_ms,
            s.requests,
            s.error_rate,
            s.p99_ms,
            self._failures(),
            len(c.lost_replicas),
        )

    def _failures(self) -> tuple[str, ...]:
        gates, c, s = self._config.gates, self._canary, self._stable
        lost = len(c.lost_replicas)
        if lost > gates.max_replicas_lost:  # judged at once: a canary that kills its replicas may never reach min
            return (f"{lost} canary replicas lost > {gates.max_replicas_lost}",)
        if c.requests < gates.min_requests:
            return ()
        failed = []
        if c.error_rate > gates.max_error_rate:
            failed.append(f"error rate {c.error_rate:.3f} > {gates.max_error_rate}")
        if c.p99_ms > gates.max_p99_ms:
            failed.append(f"p99 {c.p99_ms:.0f} ms > {gates.max_p99_ms:.0f} ms")
        if s.requests >= gates.min_requests:
            if c.error_rate - s.error_rate > gates.max_error_rate_increase:
                failed.append(
                    f"error rate {c.error_rate:.3f} exceeds stable's {s.error_rate:.3f} by more than "
                    f"{gates.max_error_rate_increase}"
                )
            if s.p99_ms > 0 and c.p99_ms > gates.max_p99_ratio * s.p99_ms:
                failed.append(f"p99 {c.p99_ms:.0f} ms > {gates.max_p99_ratio} x stable's {s.p99_ms:.0f} ms")
        return tuple(failed)

    def tick(self) -> None:
        """Judge the gates: a failure rolls back at once; a step that held for its duration moves on."""
        if self.phase is not Phase.PROGRESSING:
            return
        reading = self.reading()
        if reading.failed:
            self.phase = Phase.ROLLED_BACK
            self._log("gate failed: " + "; ".join(reading.failed), reading)
            return
        held = self._clock() - self._step_started >= self._config.step_duration_s
        if not held or reading.canary_requests < self._config.gates.min_requests:
            return
        if self.step == len(self._config.steps) - 1:
            self.phase = Phase.PROMOTED
            self._log("passed every step", reading)
            return
        self.step += 1
        self._new_step()
        self._log(f"step passed; canary to {self.canary_weight:g}%", reading)

    def act(self, action: Action) -> None:
        if self.phase in FINAL:
            raise InvalidTransition(f"rollout of {self.model} is {self.phase.value}; it cannot {action.value}")
        if action is Action.PROMOTE:
            self.phase = Phase.PROMOTED
        elif action is Action.ABORT:
            self.phase = Phase.ABORTED
        elif action is Action.PAUSE:
            if self.phase is not Phase.PROGRESSING:
                raise InvalidTransition(f"rollout of {self.model} is {self.phase.value}, not progressing")
            self.phase = Phase.PAUSED
        elif action is Action.RESUME:
            if self.phase is not Phase.PAUSED:
                raise InvalidTransition(f"rollout of {self.model} is {self.phase.value}, not paused")
            self.phase = Phase.PROGRESSING
            self._started = True
            self._new_step()
        self._log(f"{action.value} by hand", self.reading())

    def _new_step(self) -> None:
        self._step_started = self._clock()
        self._canary = Window()
        self._stable = Window()

    def _log(self, reason: str, reading: GateReading | None = None) -> None:
        self.history.append(Event(self._clock(), self.phase, self.step, self.canary_weight, reason, reading))

    def state(self) -> dict[str, Any]:
        """What GET /admin/rollouts shows."""
        return {
            "model": self.model,
            "stable": self.stable,
            "canary": self.canary,
            "phase": self.phase.value,
            "step": self.step,
            "steps": list(self._config.steps),
            "weights": self.weights(),
            "gates": self._config.gates.model_dump(),
            "reading": asdict(self.reading()),
            "history": [asdict(e) for e in self.history],
        }


def _event(saved: Mapping[str, Any]) -> Event:
    reading = saved.get("reading")
    return Event(
        at=float(saved["at"]),
        phase=Phase(saved["phase"]),
        step=int(saved["step"]),
        canary_weight=float(saved["canary_weight"]),
        reason=str(saved["reason"]),
        reading=None if reading is None else GateReading(**{**reading, "failed": tuple(reading.get("failed", ()))}),
    )
