"""Prefix-cache routing through real Ray Serve: two replicas of one tiny chat version under the prefix policy;
requests that share a prefix reach one replica, unrelated ones spread over both. The replica that served each request
is read from the request log.

A fourth application under the route prefix /prefix, next to the tiny graph."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import load_config
from tests.eventually import eventually
from tests.serve.conftest import app_beside, tiny_chat_version

pytestmark = pytest.mark.timeout(300)
APP = "prefix"
SYSTEMS = [f"You answer questions about topic {n}. " * 6 for n in ("alpha", "beta", "gamma", "delta")]


@pytest.fixture(scope="module")
def prefix(graph: str, tiny_paths: tuple[Path, Path]) -> Iterator[str]:
    version = tiny_chat_version(
        tiny_paths[0], num_replicas=2, request_router={"policy": "prefix", "block_chars": 32, "max_imbalance": 4}
    )
    model = {"name": "p-chat", "role": "chat", "versions": [version]}
    config = load_config({"ingress": {"num_cpus": 0.05}, "models": [model]})
    with app_beside(graph, config, APP) as base:
        yield base


def ask(base: str, messages: list[dict[str, str]]) -> str:
    request_id = uuid.uuid4().hex
    body = {"model": "p-chat", "messages": messages, "max_tokens": 1, "temperature": 0}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"x-request-id": request_id}, timeout=60)
    assert response.status_code == 200, response.text
    return request_id


def replicas_of(log: Path, request_ids: list[str], timeout_s: float = 20) -> list[str]:
    """The replica that served each request, from the request log (written by the ingress's writer thread)."""

    def logged() -> list[str]:
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        served = {e["request_id"]: e.get("replica") for e in lines}
        missing = [r for r in request_ids if not served.get(r)]
        assert not missing, f"no replica logged for {missing}"
        return [served[r] for r in request_ids]

    return eventually(logged, what="the request log to name the replica of each request", timeout_s=timeout_s)


def test_requests_sharing_a_prefix_reach_one_replica_and_unrelated_ones_spread(
    prefix: str, request_log_path: Path
) -> None:
    def with_system(system: str, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    shared = {n: [ask(prefix, with_system(s, f"question {i}")) for i in range(5)] for n, s in enumerate(SYSTEMS)}
    unrelated = [ask(prefix, [{"role": "user", "content": uuid.uuid4().hex * 4}]) for _ in range(16)]
    for ids in shared.values():
        assert len(set(replicas_of(request_log_path, ids))) == 1  # every request of one prefix on one replica
    assert len(set(replicas_of(request_log_path, unrelated))) == 2  # no shared prefix: spread over both
