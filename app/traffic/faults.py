"""Fault injection for a model version, as a service mesh does it: delay every call, fail a share of them."""

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
            return ErrorInfo(status=500, message="Injected fault.", type="server_error", code="injected_fault")
        return None
