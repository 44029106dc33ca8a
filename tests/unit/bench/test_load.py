"""The load generator: its statistics, and that every request it starts yields exactly one sample."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiohttp import web

from bench.load import Call, LoadResult, Progress, Sample, Summary, percentile, run_load


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy(size: int, q: float) -> None:
    values = [random.Random(size).uniform(0, 1000) for _ in range(size)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    assert percentile([5.0, 1.0], 50) == 3.0  # order does not matter
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def sample(index: int, status: int = 200, e2e: float = 0.1, **extra: object) -> Sample:
    return Sample(index=index, status=status, e2e_s=e2e, **extra)  # type: ignore[arg-type]


def test_summary_counts_only_successes_in_rates_and_latencies() -> None:
    good = [sample(i, e2e=(i + 1) / 10, ttft_s=(i + 1) / 100, output_tokens=5) for i in range(10)]
    bad = [sample(10, status=503, e2e=9.0, error="busy"), sample(11, status=200, e2e=8.0, error="mid-stream")]
    summary = Summary.of(LoadResult(samples=good + bad, wall_s=2.0, planned=12))
    assert (summary.sent, summary.ok, summary.failed) == (12, 10, 2)
    assert summary.requests_per_s == pytest.approx(10 / 2.0)
    assert summary.tokens_per_s == pytest.approx(50 / 2.0)
    e2e_ms = [(i + 1) * 100 for i in range(10)]
    assert summary.e2e_ms == pytest.approx(tuple(float(np.percentile(e2e_ms, q)) for q in (50, 95, 99)))
    assert summary.ttft_ms[0] == pytest.approx(float(np.percentile([(i + 1) * 10 for i in range(10)], 50)))


def test_summary_without_streams_has_no_ttft() -> None:
    summary = Summary.of(LoadResult(samples=[sample(0)], wall_s=1.0, planned=1))
    assert all(math.isnan(v) for v in summary.ttft_ms)
    assert summary.e2e_ms[0] == pytest.approx(100.0)


def test_progress_line() -> None:
    out = io.StringIO()
    bar = Progress("run", total=4, out=out, every_s=0)
    for i in range(4):
        bar.update(sample(i, status=200 if i else 500))
    assert "4/4" in out.getvalue() and "failed 1" in out.getvalue()
    assert "#" * 30 in bar.line(1.0)


# ---- against a local aiohttp server (no Ray) ---------------------------------------------------------------------


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    delay = float(request.headers.get("x-delay", "0"))
    await asyncio.sleep(delay)
    if body.get("fail"):
        return web.json_response({"error": {"message": "nope", "type": "server_error"}}, status=503)
    if not body.get("stream"):
        return web.json_response({"id": f"r{body['n']}", "usage": {"completion_tokens": 3}})
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-served-by": "m@v1"})
    await response.prepare(request)
    events: list[dict[str, object]] = [
        {"id": f"s{body['n']}", "choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"id": f"s{body['n']}", "choices": [{"delta": {"content": "a"}}]},
        {"id": f"s{body['n']}", "choices": [{"delta": {"content": "b"}}]},
    ]
    if body.get("broken"):
        events.append({"error": {"message": "replica gone"}})
    else:
        events.append({"id": f"s{body['n']}", "choices": [], "usage": {"completion_tokens": 7}})
    for event in events:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    if not body.get("truncated"):
        await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_every_request_gets_exactly_one_sample(base: str) -> None:
    def make(i: int) -> Call:
        return Call("/v1/chat/completions", {"n": i, "stream": i % 2 == 1, "fail": i % 7 == 0})

    result = await run_load(base, make, requests=50, concurrency=8, duration_s=30)
    assert [s.index for s in result.samples] == list(range(50))
    failed = [s.index for s in result.samples if not s.ok]
    assert failed == [i for i in range(50) if i % 7 == 0]
    assert all(s.error == "nope" and s.status == 503 for s in result.samples if not s.ok)
    streamed = [s for s in result.samples if s.index % 2 == 1 and s.ok]
    assert streamed and all(s.done and s.output_tokens == 7 and s.ttft_s is not None for s in streamed)
    assert all(s.ttft_s is not None and s.ttft_s <= s.e2e_s for s in streamed)
    plain = [s for s in result.samples if s.index % 2 == 0 and s.ok]
    assert all(s.output_tokens == 3 and s.response_id == f"r{s.index}" and s.ttft_s is None for s in plain)


async def test_stream_errors_and_truncation_are_failures(base: str) -> None:
    def make(i: int) -> Call:
        return Call("/v1/chat/completions", {"n": i, "stream": True, "broken": i == 0, "truncated": i == 1})

    broken, truncated = (await run_load(base, make, requests=2, concurrency=1, duration_s=30)).samples
    assert broken.status == 200 and broken.done and broken.error == "replica gone" and not broken.ok
    assert truncated.error == "the stream ended without [DONE]" and not truncated.ok


async def test_time_limit_stops_new_requests(base: str) -> None:
    def make(i: int) -> Call:
        return Call("/v1/chat/completions", {"n": i}, headers={"x-delay": "0.2"})

    result = await run_load(base, make, requests=1000, concurrency=2, duration_s=0.5)
    assert 2 <= len(result.samples) <= 10  # ~0.5 s of 0.2 s requests, two at a time
    assert [s.index for s in result.samples] == list(range(len(result.samples)))
    assert result.planned == 1000 and all(s.ok for s in result.samples)


async def test_client_timeout_is_a_sample_not_an_exception(base: str) -> None:
    def make(i: int) -> Call:
        return Call("/v1/chat/completions", {"n": i}, headers={"x-delay": "1"})

    (only,) = (await run_load(base, make, requests=1, concurrency=1, duration_s=10, timeout_s=0.2)).samples
    assert only.status == 0 and only.error is not None and "Timeout" in only.error


async def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_load("http://example.com", lambda i: Call("/", b""), requests=1, concurrency=1, duration_s=1)
