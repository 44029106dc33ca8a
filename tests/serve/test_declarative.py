"""The graph deployed from a config, as `serve deploy` and KubeRay deploy it: batching settings changed through a
deployment's `user_config` take effect in the running replica (no restart), and streamed answers count toward a
key's token limit.

A third application under the route prefix /declarative, next to the tiny graph."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.eventually import eventually
from tests.serve.conftest import file_keys_auth, tiny_chat_version, tiny_encoder_version

pytestmark = pytest.mark.timeout(300)
APP = "declarative"
EMBED_DEPLOYMENT = "embedding-d-embed-v1"
STREAM_KEY, EMBED_KEY = "stream-key", "embed-key"  # limits are per key


def app_config(chat: Path, embed: Path, secrets: Path, deployments: list[dict[str, Any]]) -> dict[str, Any]:
    """One application of a Serve config file: our graph config in `args`, Ray's overrides in `deployments`."""
    return {
        "name": APP,
        "route_prefix": f"/{APP}",
        "import_path": "deployments.graph:build_app",
        "args": {
            "ingress": {"num_cpus": 0.05},
            "models": [
                {
                    "name": "d-chat",
                    "role": "chat",
                    "versions": [tiny_chat_version(chat)],
                },
                {
                    "name": "d-embed",
                    "role": "embedding",
                    "versions": [
                        tiny_encoder_version(embed, batching={"max_batch_size": 1, "batch_wait_timeout_s": 0.05})
                    ],
                },
            ],
            "guards": {"auth": file_keys_auth(secrets, tokens_per_minute=150)},
        },
        "deployments": deployments,
    }


def deploy(config: dict[str, Any], timeout_s: float = 120) -> None:
    """What `serve deploy` asks the controller through the dashboard, then a wait for the app to run."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate({"applications": [config]}))

    def running() -> None:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RuntimeError(app.message)  # it will not run: no use waiting
        assert app is not None and app.status == "RUNNING", app
        assert all(d.status == "HEALTHY" for d in app.deployments.values()), app

    eventually(running, what=f"{APP} to run with every deployment healthy", timeout_s=timeout_s, interval_s=0.5)


@pytest.fixture(scope="module")
def declarative(
    graph: str, tiny_paths: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any]]:
    """The app's base URL, and a function that re-deploys it with other deployment overrides."""
    from ray import serve

    secrets = tmp_path_factory.mktemp("declarative-secrets")
    (secrets / "keys").write_text(f"{STREAM_KEY}\n{EMBED_KEY}\n")

    def redeploy(deployments: list[dict[str, Any]]) -> None:
        deploy(app_config(*tiny_paths, secrets, deployments))

    redeploy([])
    try:
        yield f"{graph}/{APP}", redeploy
    finally:
        serve.delete(APP)


def embed_burst(base: str, n: int) -> list[int]:
    def one(i: int) -> int:
        body = {"model": "d-embed", "input": f"sentence {i}"}
        return httpx.post(
            f"{base}/v1/embeddings", json=body, headers={"authorization": f"Bearer {EMBED_KEY}"}, timeout=60
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_batching_changes_live_without_restart(declarative: tuple[str, Any]) -> None:
    from ray import serve

    base, redeploy = declarative
    handle = serve.get_deployment_handle(EMBED_DEPLOYMENT, app_name=APP)
    replica = handle.placement.remote().result(timeout_s=30)["replica"]
    assert embed_burst(base, 12) == [200] * 12
    before = handle.recent_batch_sizes.remote().result(timeout_s=30)
    assert before and max(before) == 1, before  # max_batch_size 1 from the graph config

    live = {"batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2}}
    redeploy([{"name": EMBED_DEPLOYMENT, "user_config": live}])
    assert embed_burst(base, 12) == [200] * 12
    after = handle.recent_batch_sizes.remote().result(timeout_s=30)
    assert handle.placement.remote().result(timeout_s=30)["replica"] == replica  # the same replica, reconfigured
    assert after[: len(before)] == before  # its history survived: no restart
    new = after[len(before) :]
    assert new and 1 < max(new) <= 8, new


def test_streamed_answers_count_toward_the_token_limit(declarative: tuple[str, Any]) -> None:
    base, _ = declarative
    body = {
        "model": "d-chat",
        "messages": [{"role": "user", "content": "count my tokens"}],
        "max_tokens": 30,
        "stream": True,
        "temperature": 0,
    }
    auth = {"authorization": f"Bearer {STREAM_KEY}"}
    statuses = []
    for _ in range(30):  # far more than the limit allows, even for streams that end at their first token
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth, timeout=60) as response:
            response.read()
            statuses.append(response.status_code)
        if response.status_code != 200:
            break
    # each stream costs its prompt (with the chat template) and up to 30 tokens: the 150-token minute runs out
    assert statuses[-1] == 429 and statuses.count(200) >= 2, statuses
    assert response.json()["error"]["code"] == "tokens_per_minute"
