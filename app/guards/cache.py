"""Response cache for deterministic requests: in memory (per ingress replica) or in Redis. A cache that is slow or
down is bypassed, never an error."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from app.config import CacheBackend, CacheConfig
from app.protocol import ChatCompletionRequest, CompletionRequest, ModelRequest

logger = logging.getLogger(__name__)

# Fields that do not change the answer: left out of the key.
_NOT_IN_KEY = {
    "user",
    "stream",
    "stream_options",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "parallel_tool_calls",
}


def cache_key(model: str, version: str, endpoint: str, body: ModelRequest) -> str | None:
    """The key of a cacheable request, or None: generation is cached only when it is deterministic (temperature 0
    or a fixed seed) and not streamed; embeddings and rerank always are."""
    if isinstance(body, (ChatCompletionRequest, CompletionRequest)) and not _deterministic(body):
        return None
    payload = body.model_dump(mode="json", exclude=_NOT_IN_KEY, exclude_none=True)
    blob = json.dumps([model, version, endpoint, payload], sort_keys=True, separators=(",", ":"))
    return "ig:resp:" + hashlib.sha256(blob.encode()).hexdigest()


def _deterministic(body: ChatCompletionRequest | CompletionRequest) -> bool:
    return not body.stream and (body.temperature == 0 or body.seed is not None)


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class MemoryStore:
    """Least-recently-used entries with a time to live."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self._items[key] = (self._clock() + self._ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class RedisStore:
    def __init__(self, url: str, ttl_s: float) -> None:
        import redis.asyncio as redis

        self._client: Any = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._ttl_ms = int(ttl_s * 1000)

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes) -> None:
        await self._client.set(key, value, px=self._ttl_ms)


class ResponseCache:
    """Wraps a store so that a failure or a slow answer is a miss (or a skipped write), never an error."""

    def __init__(self, store: CacheStore, timeout_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self.errors = 0

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.wait_for(self._store.get(key), self._timeout_s)
        except Exception as exc:
            self._note(exc)
            return None

    async def set(self, key: str, value: bytes) -> None:
        try:
            await asyncio.wait_for(self._store.set(key, value), self._timeout_s)
        except Exception as exc:
            self._note(exc)

    def _note(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            logger.warning("response cache bypassed (%d failures so far): %r", self.errors, exc)


def build_cache(config: CacheConfig) -> ResponseCache | None:
    if not config.enabled:
        return None
    if config.backend is CacheBackend.REDIS:
        store: CacheStore = RedisStore(config.redis_url or "", config.ttl_s)
    else:
        store = MemoryStore(config.ttl_s, config.max_entries)
    return ResponseCache(store, config.timeout_s)
