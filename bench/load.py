"""An async load generator for the graph's OpenAI API: a fixed number of requests, at most `concurrency` at once,
stopped early at a time limit; loopback targets only. Each request becomes one Sample, whatever happens to it."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Call:
    """One request: a JSON body (or raw bytes) POSTed to `path`; a streamed body is read as server-sent events."""

    path: str
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))


@dataclass(frozen=True)
class Sample:
    """What one request got. `status` 0: no HTTP answer (connection error or client timeout)."""

    index: int
    status: int
    e2e_s: float
    ttft_s: float | None = None  # streams: until the first event that carries text
    output_tokens: int = 0
    error: str | None = None  # a transport failure, or the message of an error event inside a stream
    served_by: str | None = None  # the x-served-by header
    response_id: str | None = None  # the body's `id`, when it has one
    done: bool = False  # a stream ended with `data: [DONE]`

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None


@dataclass(frozen=True)
class LoadResult:
    samples: list[Sample]
    wall_s: float
    planned: int  # requests the run was allowed to send; fewer are sent when the time limit hits first


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    sent: int
    ok: int
    failed: int
    wall_s: float
    requests_per_s: float  # successful requests per second of wall time
    tokens_per_s: float  # output tokens of successful requests per second of wall time
    ttft_ms: tuple[float, float, float]  # p50, p95, p99 (NaN without streams)
    e2e_ms: tuple[float, float, float]
    first_error: str | None = None  # of the first failed request: its status and message

    @staticmethod
    def of(result: LoadResult) -> Summary:
        good = [s for s in result.samples if s.ok]
        wall = max(result.wall_s, 1e-9)
        ttft = [s.ttft_s * 1000 for s in good if s.ttft_s is not None]
        e2e = [s.e2e_s * 1000 for s in good]
        return Summary(
            sent=len(result.samples),
            ok=len(good),
            failed=len(result.samples) - len(good),
            wall_s=result.wall_s,
            requests_per_s=len(good) / wall,
            tokens_per_s=sum(s.output_tokens for s in good) / wall,
            ttft_ms=(percentile(ttft, 50), percentile(ttft, 95), percentile(ttft, 99)),
            e2e_ms=(percentile(e2e, 50), percentile(e2e, 95), percentile(e2e, 99)),
            first_error=next((f"{s.status}: {s.error}" for s in result.samples if not s.ok), None),
        )


class Progress:
    """A one-line progress bar on stderr, redrawn at most every `every_s` seconds."""

    def __init__(self, label: str, total: int, out: TextIO | None = None, every_s: float = 0.25) -> None:
        self.label, self.total, self.done, self.failed = label, total, 0, 0
        self._out = out if out is not None else sys.stderr
        self._every, self._last, self._start = every_s, 0.0, time.monotonic()

    def update(self, sample: Sample) -> None:
        self.done += 1
        self.failed += 0 if sample.ok else 1
        now = time.monotonic()
        if now - self._last >= self._every or self.done == self.total:
            self._last = now
            self._out.write("\r" + self.line(now - self._start))
            self._out.flush()

    def line(self, elapsed_s: float) -> str:
        width = 30
        filled = width * self.done // max(self.total, 1)
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        return (
            f"  {self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{rate:7.1f} req/s  failed {self.failed}"
        )

    def close(self) -> None:
        self._out.write("\n")
        self._out.flush()


def check_loopback(base_url: str) -> None:
    host = urlsplit(base_url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback addresses, not {host!r}")


async def run_load(
    base_url: str,
    make_call: Callable[[int], Call],
    *,
    requests: int,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 120.0,
    progress: Progress | None = None,
) -> LoadResult:
    """Sends up to `requests` calls (`make_call(i)` builds the i-th), `concurrency` at a time, starting none after
    `duration_s`; every call started yields exactly one Sample, in the order of `index`."""
    check_loopback(base_url)
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    next_index = 0
    samples: list[Sample] = []
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.monotonic()
    deadline = started + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < requests and time.monotonic() < deadline:
            index, next_index = next_index, next_index + 1
            sample = await send(session, base_url, index, make_call(index))
            samples.append(sample)
            if progress is not None:
                progress.update(sample)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(concurrency, requests))))
    wall = time.monotonic() - started
    if progress is not None:
        progress.close()
    samples.sort(key=lambda s: s.index)
    return LoadResult(samples=samples, wall_s=wall, planned=requests)


async def send(session: aiohttp.ClientSession, base_url: str, index: int, call: Call) -> Sample:
    started = time.monotonic()
    data = call.body if isinstance(call.body, bytes) else json.dumps(call.body).encode()
    headers = {"content-type": "application/json", **call.headers}
    try:
        async with session.post(base_url + call.path, data=data, headers=headers) as response:
            served_by = response.headers.get("x-served-by")
            if call.stream and response.status == 200:
                return await _read_stream(response, index, started, served_by)
            body = await response.read()
            parsed = _json_or_none(body)
            fields = parsed if isinstance(parsed, dict) else {}
            usage = fields.get("usage")
            return Sample(
                index=index,
                status=response.status,
                e2e_s=time.monotonic() - started,
                output_tokens=int(usage.get("completion_tokens") or 0) if isinstance(usage, dict) else 0,
                error=None if response.status < 400 else _error_message(fields, body),
                served_by=served_by,
                response_id=fields.get("id") if isinstance(fields.get("id"), str) else None,
            )
    except Exception as exc:  # any failure is this request's Sample: none is lost
        return Sample(index=index, status=0, e2e_s=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")


async def _read_stream(response: aiohttp.ClientResponse, index: int, started: float, served_by: str | None) -> Sample:
    ttft: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    error: str | None = None
    response_id: str | None = None
    done = False
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        event = _json_or_none(payload)
        if not isinstance(event, dict):
            error = error or "an event that is not a JSON object"
            continue
        if "error" in event:
            error = error or _error_message(event, payload)
            continue
        response_id = response_id or event.get("id")
        if _has_text(event):
            chunks += 1
            if ttft is None:
                ttft = time.monotonic() - started
        usage = event.get("usage")
        if isinstance(usage, dict):
            usage_tokens = int(usage.get("completion_tokens") or 0)
    if not done and error is None:
        error = "the stream ended without [DONE]"
    return Sample(
        index=index,
        status=response.status,
        e2e_s=time.monotonic() - started,
        ttft_s=ttft,
        output_tokens=usage_tokens if usage_tokens is not None else chunks,
        error=error,
        served_by=served_by,
        response_id=response_id,
        done=done,
    )


def _error_message(fields: dict[str, Any], raw: bytes) -> str:
    """An OpenAI error's message, else the start of the raw body."""
    error = fields.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return raw[:200].decode("utf-8", "replace") or "no body"


def _has_text(event: dict[str, Any]) -> bool:
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if (isinstance(delta, dict) and delta.get("content")) or choice.get("text"):
            return True
    return False


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
