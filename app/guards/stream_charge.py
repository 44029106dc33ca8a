"""What a streamed answer costs its caller's token limit, charged as the stream goes rather than only at its end."""

from __future__ import annotations

from collections.abc import Callable

from app.observability.metering import EngineReport


class StreamCharge:
    """The first event's report (the prompt and the first tokens) is charged at once; the engine's final report
    charges the rest. A stream that ends without it (the client went away, the replica died) is charged one token
    per event it delivered after the first: each event carries at least one."""

    def __init__(self, charge: Callable[[int], None], first: EngineReport) -> None:
        self._charge = charge
        self._charged = first.prompt_tokens + first.completion_tokens
        self._events = 0
        self._settled = False
        charge(self._charged)

    def event(self) -> None:
        self._events += 1

    def final(self, report: EngineReport) -> None:
        self._settled = True
        self._charge(max(0, report.prompt_tokens + report.completion_tokens - self._charged))

    def close(self) -> None:
        if not self._settled:
            self._settled = True
            self._charge(self._events)
