"""Live batching settings for a replica's @serve.batch method: size and wait from `user_config`, and, when adaptive,
a wait that follows the arrival rate (app/batching.py)."""

from __future__ import annotations

import time
from typing import Any

from app.batching import AdaptiveWindow
from app.config import BatchingConfig


class BatchTuner:
    def __init__(self, batched: Any) -> None:
        self._batched = batched  # the bound @serve.batch method
        self._window: AdaptiveWindow | None = None

    def configure(self, user_config: dict[str, Any]) -> None:
        batching = BatchingConfig.model_validate(user_config.get("batching", {}))
        self._batched.set_max_batch_size(batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        self._window = (
            AdaptiveWindow(batching.min_wait_s, batching.batch_wait_timeout_s, batching.max_batch_size, time.monotonic)
            if batching.adaptive
            else None
        )

    def arrive(self) -> None:
        """Called once per queued item; with an adaptive window, moves the batcher's wait to the current rate."""
        if self._window is not None:
            self._batched.set_batch_wait_timeout_s(self._window.arrive())
