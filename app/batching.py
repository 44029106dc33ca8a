"""An adaptive batch window: the wait follows the measured arrival rate, between a floor and a ceiling.

A lone request (arrivals sparser than the ceiling) waits only the floor; a burst waits about as long as it takes
to fill the batch at the current rate, but never longer than the ceiling.
"""

from __future__ import annotations

from collections.abc import Callable


class AdaptiveWindow:
    def __init__(
        self, min_wait_s: float, max_wait_s: float, max_batch_size: int, clock: Callable[[], float], alpha: float = 0.2
    ) -> None:
        self.min_wait_s = min_wait_s
        self.max_wait_s = max_wait_s
        self.max_batch_size = max_batch_size
        self._clock = clock
        self._alpha = alpha
        self._last: float | None = None
        self._gap: float | None = None  # smoothed time between arrivals

    def arrive(self) -> float:
        """Note one arrival; return the wait the batcher should use now."""
        now = self._clock()
        if self._last is not None:
            gap = now - self._last
            self._gap = gap if self._gap is None else self._alpha * gap + (1 - self._alpha) * self._gap
        self._last = now
        return self.wait_s()

    def wait_s(self) -> float:
        if self._gap is None or self._gap >= self.max_wait_s:
            return self.min_wait_s
        fill = self._gap * (self.max_batch_size - 1)
        return min(self.max_wait_s, max(self.min_wait_s, fill))
