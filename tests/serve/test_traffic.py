"""Traffic patterns through real Ray Serve: rewrite rules, tiers, experiments, retries and breakers, rollouts."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.eventually import eventually
from tests.serve.conftest import drive_rollout, rollout_state

pytestmark = pytest.mark.timeout(300)


def chat(
    base: str, model: str, content: str = "hi", headers: dict[str, str] | None = None, **extra: object
) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 3,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)


def test_legacy_prefix_is_rewritten(graph: str) -> None:
    r = httpx.post(
        f"{graph}/openai/v1/chat/completions",
        timeout=60,
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-rewrite"] == "legacy-prefix"
    assert r.json()["object"] == "chat.completion"


def test_completion_served_as_chat_keeps_the_clients_shape(graph: str) -> None:
    body = {"model": "tiny-chat", "prompt": "hello", "max_tokens": 3, "temperature": 0}
    plain = httpx.post(f"{graph}/v1/completions", json=body, timeout=60)
    as_chat = httpx.post(f"{graph}/v1/completions", json=body, headers={"x-model-type": "chat"}, timeout=60)
    assert as_chat.status_code == 200, as_chat.text
    assert as_chat.headers["x-rewrite"] == "completions-as-chat" and "x-rewrite" not in plain.headers
    assert as_chat.json()["object"] == "text_completion"
    # the chat template wraps the prompt as one user message: more prompt tokens than the bare prompt
    assert as_chat.json()["usage"]["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"]
    streamed = httpx.post(
        f"{graph}/v1/completions", json={**body, "stream": True}, headers={"x-model-type": "chat"}, timeout=60
    )
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all(json.loads(e)["object"] == "text_completion" for e in events[:-1])


def test_model_alias_rule(graph: str) -> None:
    r = chat(graph, "gpt-4o-mini")
    assert r.status_code == 200 and r.headers["x-served-by"] == "tiny-chat@v1"
    assert r.headers["x-rewrite"] == "alias"


def test_auto_routes_by_token_count(graph: str) -> None:
    short = chat(graph, "auto", "hi")
    assert short.status_code == 200, short.text
    assert short.headers["x-route-tier"] == "small"
    long = chat(graph, "auto", "hello " * 40)
    assert long.headers["x-route-tier"] == "large"
    assert long.json()["model"] == "tiny-chat"
    explicit = chat(graph, "tiny-chat", "hi")
    assert "x-route-tier" not in explicit.headers


def test_header_experiment_pins_a_version(graph: str) -> None:
    pinned = [chat(graph, "tiny-chat", headers={"x-experiment": "tiny-next"}) for _ in range(3)]
    assert {r.headers["x-served-by"] for r in pinned} == {"tiny-chat@v2"}
    assert pinned[0].headers["x-experiment"] == "tiny-next"
    unknown = chat(graph, "tiny-chat", headers={"x-experiment": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "x-experiment"


def test_failing_version_is_retried_and_its_breaker_sends_traffic_to_stable(graph: str) -> None:
    responses = [chat(graph, "tiny-flaky", user=f"user-{i}") for i in range(20)]
    assert [r.status_code for r in responses] == [200] * 20  # every failure on `bad` was retried on `stable`
    assert {r.headers["x-served-by"] for r in responses} == {"tiny-flaky@stable"}
    streamed = chat(graph, "tiny-flaky", stream=True, user="streamer")
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")


def served_by(graph: str, model: str, user: str) -> str:
    return chat(graph, model, user=user).headers["x-served-by"]


def test_faulty_canary_is_rolled_back_and_clients_see_no_failures(graph: str) -> None:
    model = "tiny-faulty-canary"
    state, statuses = drive_rollout(graph, model, lambda i: chat(graph, model, user=f"u{i}"))
    assert state["phase"] == "rolled-back"
    assert state["weights"] == {"stable": 100.0, "canary": 0.0}
    assert "gate failed: error rate" in state["history"][-1]["reason"]
    assert set(statuses) == {200}  # retries on stable hid every canary failure

    def all_on_stable() -> None:  # ingresses follow the controller's weights within a sync interval
        assert {served_by(graph, model, f"late-{i}") for i in range(10)} == {f"{model}@stable"}

    eventually(all_on_stable, what="the ingresses to send every user to stable", timeout_s=10)


def test_healthy_canary_is_promoted_through_every_step(graph: str) -> None:
    model = "tiny-healthy-canary"
    state, statuses = drive_rollout(graph, model, lambda i: chat(graph, model, user=f"u{i}"))
    assert state["phase"] == "promoted", state["history"]
    assert state["weights"] == {"stable": 0.0, "canary": 100.0}
    reasons = [e["reason"] for e in state["history"]]
    assert reasons[0] == "started" and "step passed; canary to 100%" in reasons and reasons[-1] == "passed every step"
    assert set(statuses) == {200}

    def on_canary() -> None:  # ingresses follow the controller's weights within a sync interval
        assert served_by(graph, model, "new") == f"{model}@canary"

    eventually(on_canary, what="the ingresses to send a new user to the canary", timeout_s=10)


def test_rollout_admin_actions(graph: str) -> None:
    def act(model: str, action: str) -> httpx.Response:
        return httpx.post(f"{graph}/admin/rollouts/{model}/{action}", timeout=30)

    waiting = rollout_state(graph, "tiny-manual-canary")
    assert (waiting["phase"], waiting["weights"]["canary"]) == ("paused", 0.0)
    assert act("tiny-manual-canary", "resume").json()["weights"] == {"stable": 50.0, "canary": 50.0}
    assert act("tiny-manual-canary", "pause").json()["phase"] == "paused"
    promoted = act("tiny-manual-canary", "promote").json()
    assert (promoted["phase"], promoted["weights"]["canary"]) == ("promoted", 100.0)
    assert promoted["history"][-1]["reason"] == "promote by hand"
    late = act("tiny-manual-canary", "resume")
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_transition"
    assert chat(graph, "tiny-manual-canary").headers["x-served-by"] == "tiny-manual-canary@canary"
    unknown = act("tiny-chat", "pause")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert act("tiny-manual-canary", "launch").status_code == 404
