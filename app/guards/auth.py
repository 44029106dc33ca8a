"""API keys (compared in constant time) and per-key request and token limits per minute."""

from __future__ import annotations

import hmac
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.config import AuthConfig
from app.errors import Forbidden, RateLimited, Unauthorized


@dataclass(frozen=True)
class Caller:
    key_id: str  # a short, non-secret label for logs and limits
    admin: bool


def _read_keys(env: Mapping[str, str], variable: str | None, path: str | None) -> list[str]:
    keys = [k.strip() for k in env.get(variable or "", "").split(",")] if variable else []
    if path:
        keys += [line.strip() for line in Path(path).read_text().splitlines()]
    return [k for k in keys if k and not k.startswith("#")]


class KeyRing:
    def __init__(self, config: AuthConfig, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        admin = _read_keys(env, config.admin_keys_env, config.admin_keys_file)
        client = _read_keys(env, config.keys_env, config.keys_file)
        self._keys = [(k.encode(), True) for k in admin] + [(k.encode(), False) for k in client]
        if config.enabled and not self._keys:
            raise ValueError(
                f"auth is enabled but no keys were found in ${config.keys_env}, ${config.admin_keys_env}, "
                f"{config.keys_file} or {config.admin_keys_file}"
            )

    def identify(self, authorization: str | None) -> Caller:
        """The caller of an `Authorization: Bearer <key>` header; every key is compared, in constant time."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        presented = token.strip().encode()
        found: Caller | None = None
        for index, (key, admin) in enumerate(self._keys):
            if hmac.compare_digest(presented, key) and found is None:
                found = Caller(key_id=f"key-{index}", admin=admin)
        if found is None:
            raise Unauthorized("Incorrect API key provided.")
        return found

    @staticmethod
    def require_admin(caller: Caller) -> None:
        if not caller.admin:
            raise Forbidden("This endpoint needs an admin key.")


class RateLimiter:
    """Sliding one-minute windows per key: requests, and tokens charged once a response's usage is known."""

    def __init__(self, config: AuthConfig, clock: Callable[[], float]) -> None:
        self._rpm = config.requests_per_minute
        self._tpm = config.tokens_per_minute
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    def admit(self, key_id: str) -> None:
        """Count one request, or raise 429 with the seconds until the window has room."""
        now = self._clock()
        if self._tpm is not None:
            used = self._window(self._tokens.setdefault(key_id, deque()), now)
            if sum(n for _, n in used) >= self._tpm:
                raise RateLimited(
                    f"Token limit of {self._tpm} per minute reached for this key.",
                    retry_after_s=max(1.0, used[0][0] + 60 - now),
                    code="tokens_per_minute",
                )
        if self._rpm is not None:
            times = self._requests.setdefault(key_id, deque())
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self._rpm:
                raise RateLimited(
                    f"Request limit of {self._rpm} per minute reached for this key.",
                    retry_after_s=max(1.0, times[0] + 60 - now),
                    code="requests_per_minute",
                )
            times.append(now)

    def charge(self, key_id: str, tokens: int) -> None:
        if self._tpm is not None and tokens > 0:
            self._tokens.setdefault(key_id, deque()).append((self._clock(), tokens))

    @staticmethod
    def _window(items: deque[tuple[float, int]], now: float) -> deque[tuple[float, int]]:
        while items and items[0][0] <= now - 60:
            items.popleft()
        return items
