"""EngineStats: one engine request counted as started, then finished or aborted, however its body ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from app.engines.base import EngineStats


def test_a_body_that_completes_is_finished() -> None:
    stats = EngineStats()
    with stats.counting():
        assert (stats.started, stats.running) == (1, 1)
    assert (stats.started, stats.finished, stats.aborted, stats.running) == (1, 1, 0, 0)


def test_a_body_that_raises_is_aborted_and_the_error_goes_on() -> None:
    stats = EngineStats()
    with pytest.raises(RuntimeError, match="engine failed"), stats.counting():
        raise RuntimeError("engine failed")
    assert (stats.started, stats.finished, stats.aborted, stats.running) == (1, 0, 1, 0)


async def test_a_cancelled_body_is_aborted() -> None:
    stats = EngineStats()

    async def wait_forever() -> None:
        with stats.counting():
            await asyncio.Event().wait()

    task = asyncio.create_task(wait_forever())
    await asyncio.sleep(0)
    assert stats.running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (stats.finished, stats.aborted, stats.running) == (0, 1, 0)


async def counted_words(stats: EngineStats, words: int) -> AsyncGenerator[str, None]:
    with stats.counting():
        for i in range(words):
            yield f"w{i}"


async def test_a_generator_read_to_its_end_is_finished() -> None:
    stats = EngineStats()
    assert [w async for w in counted_words(stats, 3)] == ["w0", "w1", "w2"]
    assert (stats.finished, stats.aborted) == (1, 0)


async def test_a_generator_closed_inside_its_body_is_aborted_even_after_its_last_item() -> None:
    stats = EngineStats()
    early, last = counted_words(stats, 3), counted_words(stats, 1)
    await anext(early)
    await anext(last)  # its one item read, but the body has not completed
    await early.aclose()
    await last.aclose()
    assert (stats.started, stats.finished, stats.aborted, stats.running) == (2, 0, 2, 0)


def test_requests_in_flight_are_running() -> None:
    stats = EngineStats()
    with stats.counting(), stats.counting():
        assert stats.running == 2
    with pytest.raises(ValueError), stats.counting():
        raise ValueError
    assert (stats.started, stats.finished, stats.aborted, stats.running) == (3, 2, 1, 0)
