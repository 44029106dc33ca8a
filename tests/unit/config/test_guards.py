import pytest

from app.config import ConfigError, GuardsConfig, Priority, load_config
from tests.unit.config.samples import chat_model


def test_guards_default_to_open_realtime_and_uncached() -> None:
    guards = GuardsConfig()
    assert (guards.auth.enabled, guards.cache.enabled, guards.log_prompts) == (False, False, False)
    assert guards.default_priority is Priority.REALTIME


def test_the_redis_cache_needs_its_url() -> None:
    with pytest.raises(ConfigError, match=r"guards\.cache: Value error, backend 'redis' needs redis_url"):
        load_config({"models": [chat_model()], "guards": {"cache": {"enabled": True, "backend": "redis"}}})
    cache = load_config(
        {"models": [chat_model()], "guards": {"cache": {"backend": "redis", "redis_url": "redis://localhost:6379/0"}}}
    ).guards.cache
    assert cache.redis_url == "redis://localhost:6379/0"


def test_an_unknown_priority_is_named() -> None:
    with pytest.raises(ConfigError, match=r"guards\.default_priority: Input should be 'realtime' or 'batch'"):
        load_config({"models": [chat_model()], "guards": {"default_priority": "urgent"}})
