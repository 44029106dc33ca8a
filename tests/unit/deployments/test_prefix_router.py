"""The prefix-cache router's glue with fake replicas and no cluster, as Ray Serve's own router tests do: ranks from
the policy over the loads in Serve's queue-length cache, load alone for prompts it cannot read, and Serve's default
choice (never a failed request) when the policy fails."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from app.protocol import ChatCompletionRequest, EmbeddingRequest
from app.traffic.prefix_affinity import PrefixAffinity
from deployments.prefix_router import PrefixCacheRouter

SYSTEM = "You answer questions about the bank's cards. " * 10


@dataclass(frozen=True)
class FakeReplica:
    replica_id: Any
    max_ongoing_requests: int = 8


class QueueLens:
    def __init__(self, lens: dict[str, int]) -> None:
        self._lens = lens

    def get(self, replica_id: Any) -> int | None:
        return self._lens.get(replica_id.unique_id)


class Decisions:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def prefix_route(self, target: str, reason: str) -> None:
        self.reasons.append(reason)


def router(lens: dict[str, int]) -> PrefixCacheRouter:
    r = PrefixCacheRouter.__new__(PrefixCacheRouter)  # Serve's constructor needs a cluster; the state is ours
    r._block_chars = 32
    r._policy = PrefixAffinity(max_imbalance=4, ttl_s=60, max_entries=1000, clock=time.monotonic, rng=random.Random(0))
    r._metrics = Decisions()  # type: ignore[assignment]
    r._name = "chat-m-v1"
    r._replica_queue_len_cache = QueueLens(lens)  # type: ignore[assignment]
    return r


def replicas(*names: str) -> list[Any]:
    return [FakeReplica(SimpleNamespace(unique_id=n)) for n in names]


def pending(body: object) -> Any:
    return SimpleNamespace(args=[body], kwargs={})


def chat(question: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}
    )


async def test_a_routed_prefix_is_ranked_first_next_time() -> None:
    r, candidates = router({"a": 0, "b": 0}), replicas("a", "b")
    first = await r.choose_replicas(candidates, pending(chat("q1")))
    assert len(first) == 2 and len(first[0]) == 1
    chosen = first[0][0]
    r.on_request_routed(pending(chat("q1")), chosen.replica_id, None)  # type: ignore[arg-type]
    for i in range(5):
        again = await r.choose_replicas(candidates, pending(chat(f"q{i + 2}")))
        assert again[0] == [chosen]
    assert r._metrics.reasons == ["least-loaded"] + ["prefix"] * 5  # type: ignore[attr-defined]


async def test_a_prompt_that_cannot_be_read_is_routed_by_load() -> None:
    r, candidates = router({"a": 3, "b": 0}), replicas("a", "b")
    ranks = await r.choose_replicas(candidates, pending(EmbeddingRequest(model="m", input="x")))
    assert ranks == [candidates] and r._metrics.reasons == ["by-load"]  # type: ignore[attr-defined]


async def test_a_failing_policy_falls_back_to_serves_choice() -> None:
    r, candidates = router({"a": 0, "b": 0}), replicas("a", "b")

    def broken(*args: object) -> None:
        raise RuntimeError("policy bug")

    r._policy.choose = broken  # type: ignore[method-assign]
    ranks = await r.choose_replicas(candidates, pending(chat("q")))
    assert ranks == [candidates] and r._metrics.reasons == ["error"]  # type: ignore[attr-defined]


async def test_loads_come_from_serves_queue_length_cache() -> None:
    lens = {"a": 0, "b": 0}
    r, candidates = router(lens), replicas("a", "b")
    r.on_request_routed(pending(chat("q")), candidates[0].replica_id, None)  # type: ignore[arg-type]
    assert (await r.choose_replicas(candidates, pending(chat("q2"))))[0] == [candidates[0]]
    lens["a"] = 6  # over the least loaded by more than max_imbalance (4)
    assert (await r.choose_replicas(candidates, pending(chat("q3"))))[0] == [candidates[1]]
    assert r._metrics.reasons[-1] == "overloaded"  # type: ignore[attr-defined]
