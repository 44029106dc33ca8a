"""The guards in front of every model call, in one place for the ingress: who calls (keys), may they (limits),
which class (priority), is there room (admission), and is the answer already known (cache)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from app.config import GraphConfig, Priority
from app.errors import InvalidRequest
from app.guards.admission import Admission
from app.guards.auth import Caller, KeyRing, RateLimiter
from app.guards.cache import ResponseCache, build_cache, cache_key
from app.protocol import ModelRequest


class Gate:
    def __init__(
        self, config: GraphConfig, clock: Callable[[], float] = time.monotonic, env: Mapping[str, str] | None = None
    ) -> None:
        guards = config.guards
        self._auth = guards.auth
        self._keys = KeyRing(guards.auth, env) if guards.auth.enabled else None
        self._limits = RateLimiter(guards.auth, clock)
        self._priority_header = guards.priority_header.lower()
        self._default_priority = guards.default_priority
        self.admission = Admission()
        self.cache: ResponseCache | None = build_cache(guards.cache)

    def caller(self, headers: Mapping[str, str], admin: bool = False) -> Caller | None:
        """The caller of a request when keys are on (raises 401/403/429), else None."""
        if self._keys is None:
            return None
        caller = self._keys.identify(headers.get("authorization"))
        if admin:
            KeyRing.require_admin(caller)
        else:
            self._limits.admit(caller.key_id)
        return caller

    def charge(self, caller: Caller | None, tokens: int) -> None:
        if caller is not None:
            self._limits.charge(caller.key_id, tokens)

    def priority(self, headers: Mapping[str, str]) -> Priority:
        value = headers.get(self._priority_header)
        if value is None:
            return self._default_priority
        try:
            return Priority(value.strip().lower())
        except ValueError:
            raise InvalidRequest(
                f"Unknown priority '{value}'; use one of {[p.value for p in Priority]}.", param=self._priority_header
            ) from None

    def key(self, model: str, version: str, endpoint: str, body: ModelRequest) -> str | None:
        return cache_key(model, version, endpoint, body) if self.cache is not None else None
