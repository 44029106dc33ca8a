"""The RolloutController killed in the middle of a rollout (ray.kill on its actor): while it is down the graph keeps
serving with the last weights, and the replica Serve starts in its place resumes the rollout at its phase and step,
with its history, instead of starting it again from step 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import GraphConfig, load_config
from tests.eventually import HTTP_RETRIED, eventually
from tests.serve.conftest import app_beside, drive_rollout, rollout_state, tiny_chat_version

pytestmark = pytest.mark.timeout(300)
APP, MODEL = "rollout-restart", "tiny-resumed"
RESTORED = "restored at step 1 (50%), paused, after a controller restart"


def config(chat_path: Path) -> GraphConfig:
    rollout = {
        "canary": "canary",
        "steps": [25, 50, 100],
        "step_duration_s": 1.0,
        "auto_start": False,  # started by hand, so that the test knows when step 0 began
        "gates": {"min_requests": 3, "max_error_rate": 0.1, "max_p99_ratio": 20},
    }
    model = {
        "name": MODEL,
        "role": "chat",
        "default_version": "stable",
        "versions": [tiny_chat_version(chat_path, "stable"), tiny_chat_version(chat_path, "canary")],
        "rollout": rollout,
    }
    return load_config({"ingress": {"num_cpus": 0.1}, "models": [model], "routing": {"sync_interval_s": 0.1}})


def chat(base: str, user: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "user": user}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def act(base: str, action: str) -> dict[str, Any]:
    response = httpx.post(f"{base}/admin/rollouts/{MODEL}/{action}", timeout=30)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def controller_replicas() -> set[str]:
    """The live RolloutController actors of APP (Serve names them SERVE_REPLICA::app#deployment#id)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP}#RolloutController#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def held_at_step_one(base: str) -> dict[str, Any]:
    """Started by hand, driven by requests to step 1 (50 %) and paused there, before step 2 could come."""
    assert act(base, "resume")["weights"] == {"stable": 75.0, "canary": 25.0}
    sent: list[int] = []

    def at_step_one() -> None:
        for _ in range(2):
            sent.append(chat(base, f"u{len(sent)}").status_code)
        assert rollout_state(base, MODEL)["step"] >= 1

    eventually(at_step_one, what=f"the rollout of {MODEL} to reach step 1", timeout_s=90, interval_s=0)
    assert set(sent) == {200}
    return act(base, "pause")


def test_a_killed_controller_is_restarted_at_the_rollouts_step_with_its_history(
    ray_cluster: str, tiny_paths: tuple[Path, Path]
) -> None:
    import ray

    with app_beside(ray_cluster, config(tiny_paths[0]), APP) as base:
        held = held_at_step_one(base)
        assert (held["phase"], held["step"], held["weights"]) == ("paused", 1, {"stable": 50.0, "canary": 50.0})
        before = held["history"]
        assert [e["reason"] for e in before][-1] == "pause by hand"

        (victim,) = controller_replicas()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        # the ingress routes with the weights it last got: every request answers, and both versions do
        answers = [chat(base, f"while-down-{i}") for i in range(12)]
        assert [r.status_code for r in answers] == [200] * 12
        assert {r.headers["x-served-by"] for r in answers} == {f"{MODEL}@stable", f"{MODEL}@canary"}

        def restarted() -> dict[str, Any]:
            assert controller_replicas() - {victim}, "no new RolloutController yet"
            response = httpx.get(f"{base}/admin/rollouts", timeout=15)  # the dead one cannot answer
            assert response.status_code == 200, response.text[:200]
            (state,) = response.json()["rollouts"]
            return dict(state)

        state = eventually(
            restarted, what="a new RolloutController to answer", timeout_s=90, interval_s=0.5, retry_on=HTTP_RETRIED
        )
        assert (state["phase"], state["step"], state["weights"]) == ("paused", 1, {"stable": 50.0, "canary": 50.0})
        assert state["history"][:-1] == before
        assert (state["history"][-1]["reason"], state["history"][-1]["step"]) == (RESTORED, 1)

        assert act(base, "resume")["step"] == 1  # and it goes on from there
        done, statuses = drive_rollout(base, MODEL, lambda i: chat(base, f"after-{i}"))
        assert done["phase"] == "promoted", done["history"]
        assert set(statuses) == {200}
        reasons = [e["reason"] for e in done["history"]]
        assert reasons[: len(before) + 1] == [e["reason"] for e in before] + [RESTORED]
        assert reasons[len(before) + 1 :] == ["resume by hand", "step passed; canary to 100%", "passed every step"]
