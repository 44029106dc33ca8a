"""Per-model version choice at the ingress: live weights, experiments, sticky splits, breakers, and versions set
aside after losing a replica."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from app.config import ModelConfig
from app.traffic.breaker import BreakerState, CircuitBreaker
from app.traffic.rollout import Outcome
from app.traffic.split import choose_version


class VersionRouter:
    def __init__(self, model: ModelConfig, clock: Callable[[], float], rng: random.Random) -> None:
        self.model = model
        self.stable = model.stable_version
        self.weights: dict[str, float] = model.initial_weights()
        self._rng = rng
        self._breakers = {v.version: CircuitBreaker(model.breaker, clock) for v in model.versions}
        # the weight line: every non-stable version first, so a rising canary share only takes users from stable
        self._order = [v.version for v in model.versions if v.version != self.stable] + [self.stable]
        self._incidents: deque[str] = deque(maxlen=256)
        self._set_aside: set[str] = set()  # lost a replica: no traffic until a readiness probe answers

    def choose(
        self,
        user: str | None,
        pinned: str | None = None,
        exclude: Iterable[str] = (),
        unable: frozenset[str] = frozenset(),
    ) -> tuple[str, str]:
        """(version, why): the pinned or split version if its breaker lets it through, else the stable one.
        `unable` are the versions that cannot serve this request: the split runs among the others, with the same
        weights and stickiness (the planner has refused a request that no version, or a pinned one, cannot serve)."""
        excluded = set(exclude) | unable
        order = [v for v in self._order if v not in unable]
        wanted = pinned or choose_version(self.model.name, self.weights, user, self._rng, self._order)
        why = "experiment" if pinned else "split"
        if wanted in unable and order:
            wanted, why = self._capable_choice(user, order), "capability"
        excluded |= self._set_aside
        if wanted not in excluded and self._breakers[wanted].allow():
            return wanted, why
        for fallback in [self.stable, *order]:
            if fallback != wanted and fallback not in excluded and self._breakers[fallback].allow():
                return fallback, "fallback"
        return (self.stable if self.stable not in unable or not order else order[-1]), "fallback"

    def _capable_choice(self, user: str | None, order: list[str]) -> str:
        if sum(max(0.0, self.weights.get(v, 0.0)) for v in order) <= 0:  # the capable versions hold no weight
            return self.stable if self.stable in order else order[-1]
        return choose_version(self.model.name, self.weights, user, self._rng, order)

    def record(self, version: str, ok: bool, incident: str | None = None) -> None:
        """One answer's outcome. `incident` names a lost replica, whose death fails every request it held at once: it
        counts against the version's breaker once, not once per request, and a version other than the stable one is
        set aside (its share goes to the stable version, its requests do not wait in Serve's queue for a replica
        to start) until `readmit`. The stable version is never set aside: everything falls back to it."""
        breaker = self._breakers[version]
        if ok:
            breaker.record_success()
            return
        if incident is not None:
            if incident in self._incidents:
                return
            self._incidents.append(incident)
            if version != self.stable:
                self._set_aside.add(version)
        breaker.record_failure()

    @property
    def set_aside(self) -> frozenset[str]:
        """Versions that lost a replica and wait for a readiness probe to answer."""
        return frozenset(self._set_aside)

    def readmit(self, version: str) -> None:
        """A set-aside version answered its readiness probe: it takes its share again."""
        self._set_aside.discard(version)

    def release(self, version: str) -> None:
        """A request that `choose` sent to `version` ended with no verdict on it."""
        self._breakers[version].release()

    def can_serve(self) -> bool:
        return any(b.state is not BreakerState.OPEN for b in self._breakers.values())

    def breaker_states(self) -> dict[str, str]:
        return {version: b.state.value for version, b in self._breakers.items()}

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights = {**{v: 0.0 for v in self._order}, **weights}


class OutcomeLog:
    """Outcomes an ingress saw since its last report to the rollout controller."""

    def __init__(self, limit: int = 50_000) -> None:
        self._items: list[Outcome] = []
        self._limit = limit

    def add(self, outcome: Outcome) -> None:
        if len(self._items) < self._limit:
            self._items.append(outcome)

    def drain(self) -> list[Outcome]:
        items, self._items = self._items, []
        return items
