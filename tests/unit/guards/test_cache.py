import asyncio

import pytest

from app.config import CacheConfig
from app.guards.cache import MemoryStore, ResponseCache, build_cache, cache_key
from app.protocol import ChatCompletionRequest, EmbeddingRequest
from tests.fakes import ManualClock


def chat(**extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **extra}
    )


def test_only_deterministic_requests_have_a_key() -> None:
    assert cache_key("m", "v1", "/v1/chat/completions", chat()) is not None
    assert cache_key("m", "v1", "/v1/chat/completions", chat(temperature=0.7, seed=3)) is not None
    assert cache_key("m", "v1", "/v1/chat/completions", chat(temperature=0.7)) is None
    assert cache_key("m", "v1", "/v1/chat/completions", chat(stream=True)) is None
    assert cache_key("e", "v1", "/v1/embeddings", EmbeddingRequest(model="e", input="x")) is not None


def test_key_covers_what_changes_the_answer_and_nothing_else() -> None:
    base = cache_key("m", "v1", "/v1/chat/completions", chat())
    assert cache_key("m", "v2", "/v1/chat/completions", chat()) != base
    assert cache_key("m", "v1", "/v1/chat/completions", chat(max_tokens=5)) != base
    assert (
        cache_key("m", "v1", "/v1/chat/completions", chat(messages=[{"role": "user", "content": "hi!"}])) != base
    )
    assert cache_key("m", "v1", "/v1/chat/completions", chat(user="someone")) == base


async def test_memory_store_ttl_and_lru() -> None:
    clock = ManualClock()
    store = MemoryStore(ttl_s=10, max_entries=2, clock=clock)
    await store.set("a", b"1")
    await store.set("b", b"2")
    assert await store.get("a") == b"1"  # a is now the most recent
    await store.set("c", b"3")
    assert await store.get("b") is None and await store.get("a") == b"1"
    clock.now = 10
    assert await store.get("a") is None


class BrokenStore:
    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("down")

    async def set(self, key: str, value: bytes) -> None:
        await asyncio.sleep(10)


async def test_a_broken_or_slow_cache_is_bypassed() -> None:
    cache = ResponseCache(BrokenStore(), timeout_s=0.05)
    assert await cache.get("k") is None
    await asyncio.wait_for(cache.set("k", b"v"), 1)
    assert cache.errors == 2


def test_build() -> None:
    assert build_cache(CacheConfig()) is None
    assert isinstance(build_cache(CacheConfig(enabled=True)), ResponseCache)
    with pytest.raises(ValueError, match="needs redis_url"):
        CacheConfig(enabled=True, backend="redis")
