from pathlib import Path

import pytest

from app.config import AuthConfig
from app.errors import Forbidden, RateLimited, Unauthorized
from app.guards.auth import KeyRing, RateLimiter
from tests.fakes import ManualClock


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# client keys\nfile-key\n\n")
    ring = KeyRing(
        AuthConfig(enabled=True, keys_file=str(secret)),
        env={"INFERENCE_GRAPH_API_KEYS": "k1, k2", "INFERENCE_GRAPH_ADMIN_KEYS": "root"},
    )
    assert ring.identify("Bearer k2").admin is False
    assert ring.identify("bearer file-key").admin is False
    admin = ring.identify("Bearer root")
    assert admin.admin and admin.key_id == "key-0"
    KeyRing.require_admin(admin)
    with pytest.raises(Forbidden):
        KeyRing.require_admin(ring.identify("Bearer k1"))
    for bad in (None, "", "Bearer", "Basic k1", "Bearer k3", "Bearer k1x"):
        with pytest.raises(Unauthorized):
            ring.identify(bad)


def test_enabled_without_keys_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="no keys were found"):
        KeyRing(AuthConfig(enabled=True), env={})


def test_requests_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(AuthConfig(requests_per_minute=2), clock)
    limiter.admit("a")
    limiter.admit("a")
    limiter.admit("b")  # limits are per key
    with pytest.raises(RateLimited) as err:
        limiter.admit("a")
    assert err.value.status == 429 and err.value.retry_after_s == 60
    clock.now = 60
    limiter.admit("a")


def test_tokens_per_minute() -> None:
    clock = ManualClock()
    limiter = RateLimiter(AuthConfig(tokens_per_minute=100), clock)
    limiter.admit("a")
    limiter.charge("a", 120)
    clock.now = 30
    with pytest.raises(RateLimited, match="Token limit") as err:
        limiter.admit("a")
    assert err.value.info().retry_after_s == 30
    clock.now = 61
    limiter.admit("a")
