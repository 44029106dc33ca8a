"""Fault injection for a model version, as a service mesh does it: delay every call, fail a share of them; and, for
streams, slow every event and fail a share of streams after their first event."""

from __future__ import annotations

import asyncio
import random

from app.config import FaultConfig
from app.errors import ErrorInfo


class FaultInjector:
    def __init__(self, config: FaultConfig | None, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    async def check(self) -> ErrorInfo | None:
        """None to go on; an error (500) for a call chosen to fail."""
        if self._config is None:
            return None
        if self._config.delay_ms:
            await asyncio.sleep(self._config.delay_ms / 1000)
        if self._rng.random() * 100 < self._config.abort_percent:
            return _injected("Injected fault.")
        return None

    def stream_gaps(self) -> StreamGaps:
        """The faults between one stream's events (whether this stream fails is decided now, once)."""
        if self._config is None:
            return StreamGaps(0.0, False)
        doomed = self._rng.random() * 100 < self._config.mid_stream_abort_percent
        return StreamGaps(self._config.event_delay_ms / 1000, doomed)


class StreamGaps:
    def __init__(self, delay_s: float, doomed: bool) -> None:
        self._delay_s = delay_s
        self._doomed = doomed

    async def next(self) -> ErrorInfo | None:
        """Before each item after the first (the engine's final report included): None to go on, or the error
        event that ends a doomed stream."""
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        return _injected("Injected fault inside the stream.") if self._doomed else None


def _injected(message: str) -> ErrorInfo:
    return ErrorInfo(status=500, message=message, type="server_error", code="injected_fault")
