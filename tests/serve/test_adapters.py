"""LoRA adapters through real Ray Serve, on the tiny transformers model: adapters as models and as a canary version,
routed by Serve's model multiplexing to the replica that holds them, at most `lora.max_adapters` per replica (the
least recently used unloaded), and an adapter canary stepped and rolled back like any version.

An application under the route prefix /lora, next to the tiny graph."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import load_config
from tests.eventually import eventually
from tests.serve.conftest import app_beside, drive_rollout, rollout_state, tiny_chat_version
from tests.serve.test_prefix_routing import replicas_of
from tests.tiny_models import build_tiny_lora_adapter

pytestmark = pytest.mark.timeout(300)
APP = "lora"
SHARED = [f"l-a{i}" for i in range(1, 3)]  # adapters on the two-replica base
SOLO = [f"l-s{i}" for i in range(1, 5)]  # four adapters on the one-replica base bounded to three
PROMPT = [{"role": "user", "content": "the cat reads a book and the river"}]


@pytest.fixture(scope="module")
def adapter_paths(tiny_paths: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-adapters")
    names = [*SHARED, *SOLO, "canary", "gated", "runtime", "kept"]
    return {name: build_tiny_lora_adapter(tiny_paths[0], root / name, rank=4, seed=i) for i, name in enumerate(names)}


def adapter(base: str, path: Path) -> dict[str, object]:
    return {
        "version": "v1",
        "engine": "transformers",
        "weights": {"path": str(path)},
        "adapter": {"base": base, "rank": 4},
    }


@pytest.fixture(scope="module")
def lora(graph: str, tiny_paths: tuple[Path, Path], adapter_paths: dict[str, Path]) -> Iterator[str]:
    shared = tiny_chat_version(tiny_paths[0], "v1", num_replicas=2, lora={"max_adapters": 3, "max_rank": 8})
    canary = {**adapter("v1", adapter_paths["canary"]), "version": "v2"}
    rollout = {
        "canary": "v2",
        "steps": [25, 50, 100],
        "step_duration_s": 3.0,
        "auto_start": False,
        "gates": {"min_requests": 3, "max_error_rate": 0.5, "max_p99_ratio": 50},
    }
    gated = {  # a canary whose absolute p99 gate (1 ms) no request can pass: its rollout must roll back
        "canary": "v2",
        "steps": [50, 100],
        "step_duration_s": 30.0,
        "gates": {"min_requests": 3, "max_p99_ms": 1},
    }
    gated_versions = [
        tiny_chat_version(tiny_paths[0], "v1", lora={}),
        {**adapter("v1", adapter_paths["gated"]), "version": "v2"},
    ]
    models: list[dict[str, Any]] = [
        {"name": "l-chat", "role": "chat", "default_version": "v1", "versions": [shared, canary], "rollout": rollout},
        {"name": "l-gated", "role": "chat", "versions": gated_versions, "rollout": gated},
        {"name": "l-solo", "role": "chat", "versions": [tiny_chat_version(tiny_paths[0], lora={"max_adapters": 3})]},
        *({"name": n, "role": "chat", "versions": [adapter("l-chat/v1", adapter_paths[n])]} for n in SHARED),
        *({"name": n, "role": "chat", "versions": [adapter("l-solo/v1", adapter_paths[n])]} for n in SOLO),
    ]
    config = load_config({"ingress": {"num_cpus": 0.05}, "models": models, "routing": {"sync_interval_s": 0.1}})
    with app_beside(graph, config, APP) as base:
        yield base


def chat(base: str, model: str, request_id: str | None = None) -> httpx.Response:
    body = {"model": model, "messages": PROMPT, "max_tokens": 8, "temperature": 0}
    headers = {"x-request-id": request_id or uuid.uuid4().hex}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


def text(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def loaded_on_solo() -> list[str]:
    from ray import serve

    handle = serve.get_deployment_handle("chat-l-solo-v1", app_name=APP)
    names: list[str] = handle.loaded_adapters.remote().result(timeout_s=30)
    return names


def test_each_adapter_answers_differently_from_the_base_under_its_own_name(lora: str) -> None:
    base = text(chat(lora, "l-chat"))
    answers = {}
    for name in SHARED:
        response = chat(lora, name)
        assert response.json()["model"] == name  # the adapter's model name, not its name on the replica
        answers[name] = text(response)
    assert all(answer != base for answer in answers.values()), (base, answers)
    assert len(set(answers.values())) == len(SHARED), answers
    assert text(chat(lora, "l-chat")) == base  # the base is unchanged by the adapters next to it


def test_an_adapter_stream_answers_as_its_unary_call_under_its_name(lora: str) -> None:
    body = {"model": SHARED[0], "messages": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{lora}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    chunks = [json.loads(event) for event in events]
    assert {chunk["model"] for chunk in chunks} == {SHARED[0]}
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == text(chat(lora, SHARED[0]))


def test_requests_for_an_adapter_reach_the_replica_that_holds_it(lora: str, request_log_path: Path) -> None:
    first = uuid.uuid4().hex
    chat(lora, SHARED[1], first)
    (holder,) = replicas_of(request_log_path, [first])
    # Serve routes by the adapter ids each replica reports; once reported, every request goes to the holder
    eventually(
        lambda: _all_on(lora, request_log_path, SHARED[1], holder),
        what=f"requests for {SHARED[1]} to reach its replica {holder}",
        timeout_s=60,
    )


def _all_on(base: str, log: Path, model: str, holder: str) -> None:
    ids = [uuid.uuid4().hex for _ in range(8)]
    for request_id in ids:
        chat(base, model, request_id)
    assert set(replicas_of(log, ids)) == {holder}


def test_a_fourth_adapter_unloads_the_least_recently_used(lora: str) -> None:
    for name in SOLO[:3]:
        chat(lora, name)
    chat(lora, SOLO[0])  # now the second is the least recently used
    assert loaded_on_solo() == sorted(f"{n}:v1" for n in SOLO[:3])
    chat(lora, SOLO[3])
    expected = sorted(f"{n}:v1" for n in (SOLO[0], SOLO[2], SOLO[3]))
    eventually(lambda: _loaded(expected), what=f"l-solo to hold {expected}", timeout_s=30)
    assert text(chat(lora, SOLO[1])) != text(chat(lora, "l-solo"))  # an unloaded adapter loads again on demand


def _loaded(expected: list[str]) -> None:
    assert loaded_on_solo() == expected


def test_an_unknown_adapter_is_a_404_naming_it(lora: str) -> None:
    body = {"model": "l-nope", "messages": PROMPT, "max_tokens": 2}
    response = httpx.post(f"{lora}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 404
    assert "l-nope" in response.json()["error"]["message"]


def test_models_lists_adapters_with_their_parent(lora: str) -> None:
    cards = {c["id"]: c for c in httpx.get(f"{lora}/v1/models", timeout=30).json()["data"]}
    assert {cards[n]["parent"] for n in [*SHARED, *SOLO]} == {"l-chat", "l-solo"}
    assert cards["l-a1"]["parent"] == "l-chat" and cards["l-chat"]["parent"] is None


def test_an_adapter_canary_steps_and_rolls_back(lora: str) -> None:
    def act(action: str) -> dict[str, Any]:
        response = httpx.post(f"{lora}/admin/rollouts/l-chat/{action}", timeout=30)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    assert act("resume")["weights"] == {"v1": 75.0, "v2": 25.0}

    def stepped() -> None:
        for _ in range(6):
            chat(lora, "l-chat")
        assert rollout_state(lora, "l-chat")["weights"]["v2"] >= 50.0

    eventually(stepped, what="the adapter canary's gate to pass a step", timeout_s=90, interval_s=0)
    # held at 50 % (a step needs 3 s and 3 canary requests, and none is sent before the pause)
    assert act("pause")["weights"] == {"v1": 50.0, "v2": 50.0}
    served = {chat(lora, "l-chat").headers["x-served-by"] for _ in range(16)}
    assert served == {"l-chat@v1", "l-chat@v2"}
    aborted = act("abort")
    assert (aborted["phase"], aborted["weights"]["v2"]) == ("aborted", 0.0)
    eventually(
        lambda: _only_stable(lora), what="every request back on the stable version", timeout_s=30, interval_s=0.2
    )


def _only_stable(base: str) -> None:
    assert {chat(base, "l-chat").headers["x-served-by"] for _ in range(8)} == {"l-chat@v1"}


def admin(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=300)


def test_an_adapter_loaded_at_run_time_is_served_listed_and_unloaded(lora: str, adapter_paths: dict[str, Path]) -> None:
    load = {"lora_name": "l-runtime", "lora_path": str(adapter_paths["runtime"]), "base_model": "l-chat/v1"}
    loaded = admin(lora, "/v1/load_lora_adapter", load)
    assert loaded.status_code == 200, loaded.text
    cards = {c["id"]: c for c in httpx.get(f"{lora}/v1/models", timeout=30).json()["data"]}
    assert cards["l-runtime"]["parent"] == "l-chat"
    answer = chat(lora, "l-runtime")
    assert answer.json()["model"] == "l-runtime" and text(answer) != text(chat(lora, "l-solo"))  # the same base
    again = admin(lora, "/v1/load_lora_adapter", load)
    assert again.status_code == 400 and again.json()["error"]["param"] == "lora_name"
    assert admin(lora, "/v1/unload_lora_adapter", {"lora_name": "l-runtime"}).status_code == 200
    body = {"model": "l-runtime", "messages": PROMPT, "max_tokens": 2}
    assert httpx.post(f"{lora}/v1/chat/completions", json=body, timeout=30).status_code == 404
    assert "l-runtime" not in {c["id"] for c in httpx.get(f"{lora}/v1/models", timeout=30).json()["data"]}
    gone = admin(lora, "/v1/unload_lora_adapter", {"lora_name": "l-runtime"})
    assert gone.status_code == 404 and "l-runtime" in gone.json()["error"]["message"]
    configured = admin(lora, "/v1/unload_lora_adapter", {"lora_name": "l-a1"})
    assert configured.status_code == 400 and "serve config" in configured.json()["error"]["message"]


def registry_replicas() -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#AdapterRegistry#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def test_run_time_adapters_outlive_the_registrys_replica(lora: str, adapter_paths: dict[str, Path]) -> None:
    import ray
    from ray import serve

    load = {"lora_name": "l-kept", "lora_path": str(adapter_paths["kept"]), "base_model": "l-chat/v1"}
    assert admin(lora, "/v1/load_lora_adapter", load).status_code == 200
    before = text(chat(lora, "l-kept"))
    (victim,) = registry_replicas()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    def restarted() -> list[str]:
        now = registry_replicas()
        assert now and victim not in now, f"no replacement for {victim}: {now}"
        handle = serve.get_deployment_handle("AdapterRegistry", app_name=APP)
        return [e.name for e in handle.entries.remote().result(timeout_s=10)]

    waited = "the registry's replacement to answer"
    kept = eventually(restarted, what=waited, timeout_s=90, interval_s=0.5, retry_on=(AssertionError, TimeoutError))
    assert kept == ["l-kept"]
    time.sleep(1.0)  # ten of the ingress's syncs with the replacement, which drop what the registry no longer lists
    assert "l-kept" in {c["id"] for c in httpx.get(f"{lora}/v1/models", timeout=30).json()["data"]}
    assert text(chat(lora, "l-kept")) == before
    assert admin(lora, "/v1/unload_lora_adapter", {"lora_name": "l-kept"}).status_code == 200


def test_an_adapter_that_cannot_run_on_its_base_is_refused_by_name_and_the_base_serves_on(
    lora: str, tiny_paths: tuple[Path, Path], adapter_paths: dict[str, Path], tmp_path: Path
) -> None:
    wide = build_tiny_lora_adapter(tiny_paths[0], tmp_path / "wide", rank=16, seed=7)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(adapter_paths["canary"], elsewhere)
    config = json.loads((elsewhere / "adapter_config.json").read_text())
    (elsewhere / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["nope_proj"]}))
    before = text(chat(lora, "l-chat"))
    for name, path, reason in [("l-wide", wide, "16"), ("l-elsewhere", elsewhere, "nope_proj")]:
        refused = admin(
            lora, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path), "base_model": "l-chat"}
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert name in error["message"] and reason in error["message"], error
    missing = admin(lora, "/v1/load_lora_adapter", {"lora_name": "l-x", "lora_path": str(tmp_path / "none")})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "base_model"  # two bases serve adapters
    unnamed = admin(lora, "/v1/load_lora_adapter", {"lora_name": "l-x"})
    assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "lora_path"
    assert text(chat(lora, "l-chat")) == before


def test_an_adapter_canary_that_fails_its_gate_is_rolled_back(lora: str) -> None:
    state, statuses = drive_rollout(lora, "l-gated", lambda i: chat(lora, "l-gated"))
    assert state["phase"] == "rolled-back" and state["weights"]["v2"] == 0.0, state
    assert "p99" in state["history"][-1]["reason"], state["history"]
    assert set(statuses) == {200}  # a rollback by gate loses no request
    _only_stable_of(lora, "l-gated")


def _only_stable_of(base: str, model: str) -> None:
    assert {chat(base, model).headers["x-served-by"] for _ in range(8)} == {f"{model}@v1"}
