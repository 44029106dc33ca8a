"""Keys, limits, priorities, the response cache, warm-up and live batching settings, through real Ray Serve.

A second application under the route prefix /guarded, next to the tiny graph."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import load_config
from tests.serve.conftest import app_beside, file_keys_auth, tiny_chat_version, tiny_encoder_version

pytestmark = pytest.mark.timeout(300)
APP = "guarded"


@pytest.fixture(scope="module")
def guarded(graph: str, tiny_paths: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "keys").write_text("client-key\nlimited-key\n")
    (secrets / "admin").write_text("admin-key\n")
    chat, embed = tiny_paths
    version = tiny_chat_version(chat, warmup={"texts": ["warm up"], "max_tokens": 2}, faults={"delay_ms": 300})
    encoder = tiny_encoder_version(
        embed,
        warmup={"texts": ["warm up"]},
        batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.05, "adaptive": True, "min_wait_s": 0.001},
    )
    config = load_config(
        {
            "ingress": {"num_cpus": 0.05},
            "models": [
                {
                    "name": "g-chat",
                    "role": "chat",
                    "versions": [version],
                    "queue": {"max_in_flight": 2, "realtime_max_in_flight": 3},
                },
                {"name": "g-embed", "role": "embedding", "versions": [encoder]},
            ],
            "guards": {
                "auth": file_keys_auth(secrets, admin_keys_file=str(secrets / "admin"), requests_per_minute=1000),
                "cache": {"enabled": True, "ttl_s": 60},
            },
        }
    )
    with app_beside(graph, config, APP) as base:
        yield base


def chat(
    base: str, key: str | None = "client-key", headers: dict[str, str] | None = None, **extra: object
) -> httpx.Response:
    body = {
        "model": "g-chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "temperature": 0,
        **extra,
    }
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers={**auth, **(headers or {})}, timeout=60)


def test_replicas_warm_up_before_they_take_traffic(guarded: str) -> None:
    from ray import serve

    # runs first: no client request has reached the replicas yet, only their warm-up
    chat_stats = serve.get_deployment_handle("chat-g-chat-v1", app_name=APP).stats.remote().result(timeout_s=30)
    assert (chat_stats.started, chat_stats.finished) == (1, 1)
    embed = serve.get_deployment_handle("embedding-g-embed-v1", app_name=APP)
    assert embed.recent_batch_sizes.remote().result(timeout_s=30) == [1]
    ready = httpx.get(f"{guarded}/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["models"] == {"g-chat": True, "g-embed": True}


def test_keys_are_required_and_checked(guarded: str) -> None:
    missing = chat(guarded, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert chat(guarded, key="wrong").status_code == 401
    assert chat(guarded).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/rerank"),
    ],
)
def test_every_v1_path_needs_a_key(guarded: str, method: str, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.request(method, f"{guarded}{path}", json={"model": "g-chat"}, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    listed = httpx.get(f"{guarded}/v1/models", headers={"authorization": "Bearer client-key"}, timeout=30)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["g-chat", "g-embed"]


def test_admin_endpoints_need_an_admin_key(guarded: str) -> None:
    client = httpx.get(f"{guarded}/admin/rollouts", headers={"authorization": "Bearer client-key"}, timeout=30)
    assert client.status_code == 403 and client.json()["error"]["code"] == "admin_key_required"
    admin = httpx.get(f"{guarded}/admin/rollouts", headers={"authorization": "Bearer admin-key"}, timeout=30)
    assert admin.status_code == 200 and admin.json() == {"rollouts": []}
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        body = {"lora_name": "x", "lora_path": "/nowhere"}
        load = httpx.post(f"{guarded}{path}", json=body, headers={"authorization": "Bearer client-key"}, timeout=30)
        assert load.status_code == 403 and load.json()["error"]["code"] == "admin_key_required", path


def test_deterministic_answers_are_cached(guarded: str) -> None:
    first = chat(guarded, messages=[{"role": "user", "content": "cache me"}])
    second = chat(guarded, messages=[{"role": "user", "content": "cache me"}])
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.json() == first.json()
    sampled = chat(guarded, temperature=0.9, messages=[{"role": "user", "content": "cache me"}])
    assert "x-cache" not in sampled.headers
    body = {"model": "g-embed", "input": ["same text"]}
    auth = {"authorization": "Bearer client-key"}
    embeds = [httpx.post(f"{guarded}/v1/embeddings", json=body, headers=auth, timeout=30) for _ in range(2)]
    assert [r.headers["x-cache"] for r in embeds] == ["miss", "hit"]


def test_batch_is_shed_first_and_nothing_is_lost(guarded: str) -> None:
    def send(priority: str, i: int) -> int:
        return chat(
            guarded, headers={"x-priority": priority}, messages=[{"role": "user", "content": f"q{i}"}], temperature=0.5
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        batch = list(pool.map(lambda i: send("batch", i), range(8)))
        mixed = list(pool.map(lambda i: send("realtime" if i % 2 else "batch", i), range(12)))
    assert set(batch) <= {200, 429} and 429 in batch  # the queue holds 2: the rest is shed, with a status
    assert set(mixed) <= {200, 429, 503}
    assert len(batch) == 8 and len(mixed) == 12  # every request got exactly one answer
    shed = chat(guarded, headers={"x-priority": "nope"})
    assert shed.status_code == 400 and shed.json()["error"]["param"] == "x-priority"


def test_a_shed_request_says_when_to_retry(guarded: str) -> None:
    def send(i: int) -> httpx.Response:
        return chat(
            guarded, headers={"x-priority": "batch"}, messages=[{"role": "user", "content": f"r{i}"}], temperature=0.5
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    shed = [r for r in responses if r.status_code == 429]
    assert shed and all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "shed" for r in shed)
