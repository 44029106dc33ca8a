"""The one way tests wait for something: retry a check until it passes, or fail saying what was awaited and how the
last try failed.

A check is a function that raises (an `assert`, usually) while the awaited state is not there yet, and returns when it
is; what it returns is returned. Only the exceptions in `retry_on` are retried: any other one means the state cannot
come (a deployment that failed, a server that exited) and is raised at once. The check runs at least once, and once
more at the deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")
Retried = tuple[type[BaseException], ...]
# a check that asks a server over HTTP: the server may not listen yet, or drop the connection while it starts
HTTP_RETRIED: Retried = (AssertionError, httpx.HTTPError)


class _Tries:
    """The deadline and the count of one wait; `failed` says how long to sleep before the next try, or raises."""

    def __init__(self, what: str, timeout_s: float, interval_s: float) -> None:
        self.what, self.timeout_s, self.interval_s = what, timeout_s, interval_s
        self.deadline = time.monotonic() + timeout_s
        self.count = 0

    def failed(self, exc: BaseException) -> float:
        self.count += 1
        left = self.deadline - time.monotonic()
        if left <= 0:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AssertionError(
                f"waited {self.timeout_s:g} s ({self.count} tries) for {self.what}; the last try failed with {failure}"
            ) from exc
        return min(self.interval_s, left)


def eventually(
    check: Callable[[], T],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.2,
    retry_on: Retried = (AssertionError,),
) -> T:
    """`check()`'s value once it returns; `what` completes "waited N s for ..." in the failure."""
    tries = _Tries(what, timeout_s, interval_s)
    while True:
        try:
            return check()
        except retry_on as exc:
            pause = tries.failed(exc)
        time.sleep(pause)


async def eventually_async(
    check: Callable[[], T | Awaitable[T]],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.2,
    retry_on: Retried = (AssertionError,),
) -> T:
    """As `eventually`, inside an event loop: the check may be a coroutine function, and the loop runs between
    tries."""
    tries = _Tries(what, timeout_s, interval_s)
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                return await result
            return result
        except retry_on as exc:
            pause = tries.failed(exc)
        await asyncio.sleep(pause)
