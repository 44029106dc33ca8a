"""Slow clients do not stall anyone else: streams read slowly, streams dropped mid-way, and bodies sent slowly,
each by more clients at once than the ingress runs requests at once (Serve's default max_ongoing_requests, 5)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from bench.load import Call, run_load
from tests.eventually import HTTP_RETRIED, eventually
from tests.reliability.conftest import CHAT, EMBED, chat_body

pytestmark = pytest.mark.timeout(240)
SLOW_CLIENTS = 8
NORMAL_REQUESTS, NORMAL_TIMEOUT_S = 24, 20


def request_bytes(path: str, body: bytes, declared: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"content-length: {declared if declared is not None else len(body)}\r\n\r\n"
    )
    return head.encode() + body


@contextmanager
def slow_sockets(base: str, payloads: list[bytes]) -> Iterator[list[socket.socket]]:
    """Sockets that send `payloads` and then read nothing until the test says so; closed afterwards."""
    url = urlsplit(base)
    socks = []
    try:
        for payload in payloads:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a small window: the server must wait for us
            s.settimeout(30)
            s.connect((url.hostname or "127.0.0.1", url.port or 80))
            s.sendall(payload)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def normal_load_succeeds(
    base: str, requests: int = NORMAL_REQUESTS, timeout_s: float = NORMAL_TIMEOUT_S
) -> list[tuple[int, str | None]]:
    """Chat and embedding requests next to the slow clients; returns the failures."""

    def make(index: int) -> Call:
        if index % 2:
            return Call("/v1/embeddings", {"model": EMBED, "input": f"sentence {index}"})
        return Call("/v1/chat/completions", chat_body(CHAT, max_tokens=4))

    result = asyncio.run(run_load(base, make, requests=requests, concurrency=4, duration_s=60, timeout_s=timeout_s))
    assert len(result.samples) == requests
    return [(s.status, s.error) for s in result.samples if not s.ok]


def read_to_end(s: socket.socket, deadline_s: float = 60) -> bytes:
    data = b""
    end = time.monotonic() + deadline_s
    while b"data: [DONE]" not in data and time.monotonic() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def stream_request() -> bytes:
    body = json.dumps(chat_body(CHAT, "tell me a long story", max_tokens=200, stream=True)).encode()
    return request_bytes("/v1/chat/completions", body)


def test_slow_stream_readers_do_not_stall_others(reliability_graph: str) -> None:
    with slow_sockets(reliability_graph, [stream_request()] * SLOW_CLIENTS) as readers:
        time.sleep(1)  # the point: the streams run and nobody reads them for a while
        assert normal_load_succeeds(reliability_graph) == []
        for s in readers:  # the slow readers still get their whole stream
            text = read_to_end(s)
            assert text.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in text, text[-300:]


def test_clients_that_drop_their_streams_do_not_stall_others(reliability_graph: str) -> None:
    with slow_sockets(reliability_graph, [stream_request()] * SLOW_CLIENTS) as droppers:
        for s in droppers:
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
            s.close()  # gone mid-stream
        assert normal_load_succeeds(reliability_graph) == []


def test_clients_that_send_slowly_do_not_stall_others(reliability_graph: str) -> None:
    partial = request_bytes("/v1/chat/completions", b'{"model": "rel-', declared=200)
    try:
        with slow_sockets(reliability_graph, [partial] * SLOW_CLIENTS):
            time.sleep(1)  # the point: the bodies stay unfinished for a while
            assert normal_load_succeeds(reliability_graph, requests=4, timeout_s=5) == []
    finally:  # the slots free once those clients are gone

        def answered() -> None:
            response = httpx.post(
                f"{reliability_graph}/v1/chat/completions", json=chat_body(CHAT, max_tokens=2), timeout=10
            )
            assert response.is_success, response.text

        eventually(
            answered, what="the ingress to answer once the slow senders left", timeout_s=60, retry_on=HTTP_RETRIED
        )
