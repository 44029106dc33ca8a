"""Admission by priority class: when a model's queue is full, batch requests are shed first (429); realtime requests
are shed only when realtime itself is over its bound (503). Nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from app.config import Priority, QueueConfig
from app.errors import RateLimited, ServiceUnavailable


class Admission:
    def __init__(self) -> None:
        self._in_flight: Counter[tuple[str, Priority]] = Counter()
        self.shed: Counter[tuple[str, Priority]] = Counter()

    def depth(self, model: str, priority: Priority) -> int:
        return self._in_flight[(model, priority)]

    def enter(self, model: str, priority: Priority, bounds: QueueConfig) -> None:
        """Take a place in the model's queue, or raise: 429 for batch when the queue is full, 503 for realtime
        over its own bound. Every `enter` that returns is paired with one `leave`."""
        total = sum(self._in_flight[(model, p)] for p in Priority)
        if priority is Priority.BATCH and total >= bounds.max_in_flight:
            self.shed[(model, priority)] += 1
            raise RateLimited(
                f"The model '{model}' is at capacity ({total} requests in flight); batch requests are shed first.",
                retry_after_s=1.0,
                code="shed",
            )
        if priority is Priority.REALTIME and self._in_flight[(model, priority)] >= bounds.realtime_max_in_flight:
            self.shed[(model, priority)] += 1
            raise ServiceUnavailable(
                f"The model '{model}' is over its realtime bound ({bounds.realtime_max_in_flight} in flight)."
            )
        self._in_flight[(model, priority)] += 1

    def leave(self, model: str, priority: Priority) -> None:
        self._in_flight[(model, priority)] -= 1

    @contextmanager
    def admit(self, model: str, priority: Priority, bounds: QueueConfig) -> Iterator[None]:
        self.enter(model, priority, bounds)
        try:
            yield
        finally:
            self.leave(model, priority)
