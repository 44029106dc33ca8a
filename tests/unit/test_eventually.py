"""tests/eventually.py, the tests' one way to wait: it retries until the check passes, and otherwise fails naming what
was awaited and the last failure."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from tests.eventually import eventually, eventually_async


def passes_on_try(n: int) -> tuple[Callable[[], int], list[float]]:
    """A check that fails its first n - 1 tries and then returns n; and the times of its tries."""
    tries: list[float] = []

    def check() -> int:
        tries.append(time.monotonic())
        assert len(tries) >= n, f"try {len(tries)} of {n}"
        return len(tries)

    return check, tries


def test_a_passing_check_runs_once_and_its_value_is_returned() -> None:
    check, tries = passes_on_try(1)
    assert eventually(check, what="the first try", timeout_s=5, interval_s=5) == 1
    assert len(tries) == 1


def test_a_failing_check_is_retried_every_interval_until_it_passes() -> None:
    check, tries = passes_on_try(4)
    assert eventually(check, what="the fourth try", timeout_s=5, interval_s=0.02) == 4
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert len(gaps) == 3 and all(g >= 0.02 for g in gaps)


def test_past_the_timeout_it_fails_with_what_was_awaited_and_the_last_failure() -> None:
    check, tries = passes_on_try(10**6)
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        eventually(check, what="a state that never comes", timeout_s=0.1, interval_s=0.02)
    assert 0.1 <= time.monotonic() - started < 1
    message = str(failure.value)
    assert "a state that never comes" in message and "0.1 s" in message and f"({len(tries)} tries)" in message
    assert f"AssertionError: try {len(tries)} of {10**6}" in message  # the last try's, not the first's
    assert isinstance(failure.value.__cause__, AssertionError)


def test_the_last_try_comes_at_the_deadline_however_long_the_interval() -> None:
    started = time.monotonic()

    def check() -> None:
        assert time.monotonic() - started >= 0.1

    eventually(check, what="the deadline", timeout_s=0.1, interval_s=60)
    assert time.monotonic() - started < 1


def test_a_check_runs_at_least_once_even_with_no_time() -> None:
    check, tries = passes_on_try(2)
    with pytest.raises(AssertionError, match=r"\(1 tries\)"):
        eventually(check, what="no time", timeout_s=0, interval_s=0.01)
    assert len(tries) == 1


def test_other_exceptions_are_raised_at_once() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        raise RuntimeError("deployment failed")

    with pytest.raises(RuntimeError, match="deployment failed"):
        eventually(check, what="a deployment", timeout_s=5, interval_s=0.01)
    assert calls == [1]


def test_retry_on_names_what_else_is_retried() -> None:
    answers = iter([KeyError("not exported yet"), ConnectionError("refused"), None])

    def check() -> str:
        answer = next(answers)
        if answer is not None:
            raise answer
        return "scraped"

    assert eventually(check, what="a scrape", timeout_s=5, interval_s=0.01, retry_on=(KeyError, OSError)) == "scraped"
    with pytest.raises(AssertionError, match=r"KeyError: 'missing'"):
        eventually(lambda: {}["missing"], what="a key", timeout_s=0.05, interval_s=0.01, retry_on=(KeyError,))


async def test_the_async_variant_lets_the_loop_run_between_tries() -> None:
    done: list[int] = []

    async def work() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            done.append(i)

    task = asyncio.create_task(work())

    def check() -> int:
        assert len(done) == 3
        return len(done)

    assert await eventually_async(check, what="the work", timeout_s=5, interval_s=0.01) == 3
    await task


async def test_the_async_variant_awaits_coroutine_checks_and_times_out_the_same_way() -> None:
    tries = []

    async def check() -> None:
        tries.append(1)
        await asyncio.sleep(0)
        raise AssertionError("still waiting")

    last = r"for a coroutine; the last try failed with AssertionError: still waiting"
    with pytest.raises(AssertionError, match=last):
        await eventually_async(check, what="a coroutine", timeout_s=0.05, interval_s=0.01)
    assert len(tries) >= 2
