"""AdapterRegistry: one replica, off the request path. Holds the adapters loaded at run time, which every ingress
replica pulls (`entries`) with its rollout sync, so a load on one ingress is served by all."""

from __future__ import annotations

from ray import serve

from app.serving.adapter_admin import RuntimeAdapter


@serve.deployment(num_replicas=1, max_ongoing_requests=1000)
class AdapterRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, RuntimeAdapter] = {}

    def add(self, entry: RuntimeAdapter) -> bool:
        """False when the name is taken (by a load on another ingress)."""
        if entry.name in self._entries:
            return False
        self._entries[entry.name] = entry
        return True

    def remove(self, name: str) -> bool:
        return self._entries.pop(name, None) is not None

    def entries(self) -> list[RuntimeAdapter]:
        return list(self._entries.values())
