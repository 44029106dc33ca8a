"""The Redis backend against a real redis-server, started on a free loopback port (`make test` installs
redis-server: scripts/system-packages.sh)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from app.config import CacheConfig
from app.guards.cache import build_cache
from tests.eventually import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (`make test` installs it: scripts/system-packages.sh)"
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()

    try:
        what = f"redis-server to listen on port {port}"
        eventually(listening, what=what, timeout_s=10, interval_s=0.05, retry_on=(OSError,))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_round_trip_and_ttl(redis_url: str) -> None:
    cache = build_cache(CacheConfig(enabled=True, backend="redis", redis_url=redis_url, ttl_s=0.3, timeout_s=1))
    assert cache is not None
    assert await cache.get("k") is None
    await cache.set("k", b'{"answer": 42}')
    assert await cache.get("k") == b'{"answer": 42}'
    await asyncio.sleep(0.4)  # the 0.3 s TTL must pass
    assert await cache.get("k") is None
    assert cache.errors == 0


async def test_a_redis_that_is_down_is_bypassed() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = build_cache(CacheConfig(enabled=True, backend="redis", redis_url=url, timeout_s=0.5))
    assert cache is not None
    started = time.monotonic()
    assert await cache.get("k") is None
    await cache.set("k", b"v")
    assert cache.errors == 2
    assert time.monotonic() - started < 2
