"""A request governed for its whole life, through real Ray Serve: streams hold their admission slot to the last byte,
fail against their version's breaker and gates when they fail mid-way, and end within `limits.request_timeout_s`;
priority comes from the headers as the rewrite rules leave them; the tiers' tokenizers are ready before the ingress.

A third application under the route prefix /lifecycle, next to the tiny graph."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app.config import load_config
from tests.eventually import eventually
from tests.serve.conftest import app_beside, drive_rollout, tiny_chat_version

pytestmark = pytest.mark.timeout(300)
APP = "lifecycle"
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def lifecycle(graph: str, tiny_paths: tuple[Path, Path]) -> Iterator[str]:
    chat_path, _ = tiny_paths

    def version(label: str = "v1", **faults: float) -> dict[str, object]:
        return tiny_chat_version(chat_path, label, **({"faults": faults} if faults else {}))

    def pair(doomed: str, **traffic: object) -> dict[str, object]:
        """A stable and a second version; `doomed` names the one whose streams fail after their first event."""
        labels = ("stable", "canary")
        versions = [version(v, **({"mid_stream_abort_percent": 100} if v == doomed else {})) for v in labels]
        return {"role": "chat", "default_version": "stable", "versions": versions, **traffic}

    config = load_config(
        {
            "ingress": {"num_cpus": 0.05},
            "limits": {"request_timeout_s": TIMEOUT_S},
            "models": [
                {"name": "l-slow-call", "role": "chat", "versions": [version(delay_ms=6000)]},
                {"name": "l-slow-stream", "role": "chat", "versions": [version(event_delay_ms=6000)]},
                {
                    "name": "l-held",
                    "role": "chat",
                    "versions": [version(event_delay_ms=2000)],
                    "queue": {"max_in_flight": 2, "realtime_max_in_flight": 3},
                },
                {
                    "name": "l-mid-fail",
                    **pair("stable", weights={"stable": 100, "canary": 0}),
                    "breaker": {"failure_threshold": 2, "recovery_time_s": 60},
                },
                {
                    "name": "l-canary",
                    **pair(
                        "canary",
                        rollout={
                            "canary": "canary",
                            "steps": [50, 100],
                            "step_duration_s": 1.0,
                            "gates": {"min_requests": 4, "max_error_rate": 0.1, "max_p99_ratio": 20},
                        },
                    ),
                },
            ],
            "routing": {
                "rules": [
                    {
                        "name": "bulk-is-batch",
                        "match": {"headers": {"x-tenant": {"exact": "bulk"}}},
                        "actions": {"add_headers": {"x-priority": "batch"}},
                    }
                ],
                "tiers": [
                    {"name": "small", "model": "l-mid-fail", "max_tokens": 120},
                    {"name": "large", "model": "l-slow-stream"},
                ],
                "sync_interval_s": 0.1,
            },
        }
    )
    with app_beside(graph, config, APP) as base:
        yield base


def body(model: str, stream: bool = False, content: str = "hi", **extra: object) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


def post(base: str, payload: dict[str, object], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=payload, headers=headers, timeout=60)


def events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def test_a_burst_of_auto_requests_right_after_start_up_gets_no_500(lifecycle: str) -> None:
    """Runs first: the tiers' tokenizers count 128 prompts of 56 to about 210 tokens from 32 threads at once, just
    after /ready (the tiny model's context is 256 tokens)."""
    prompts = [" ".join(f"w{i % 10}x{j}" for j in range(10 + i % 34)) for i in range(128)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(
            pool.map(lambda p: post(lifecycle, {**body("auto", content=p), "max_tokens": 1}), prompts)
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 128, {s: statuses.count(s) for s in set(statuses)}
    tiers = {r.headers["x-route-tier"] for r in responses}
    assert tiers == {"small", "large"}  # exact counts sent short prompts to one tier and long ones to the other


def test_a_unary_call_past_the_request_timeout_is_a_504_within_the_bound(lifecycle: str) -> None:
    started = time.monotonic()
    response = post(lifecycle, body("l-slow-call"))
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout", response.text
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.5


def test_a_stream_past_the_request_timeout_ends_with_an_error_event(lifecycle: str) -> None:
    from ray import serve

    started = time.monotonic()
    response = post(lifecycle, body("l-slow-stream", stream=True))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    data = events(response)
    assert json.loads(data[0])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(data[-2])["error"]["code"] == "timeout" and data[-1] == "[DONE]"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.5
    handle = serve.get_deployment_handle("chat-l-slow-stream-v1", app_name=APP)

    def ended() -> None:
        assert handle.stats.remote().result(timeout_s=10).running == 0

    eventually(ended, what="the replica to end the timed-out stream's request", timeout_s=15)


def test_streams_hold_their_admission_slot_until_they_end(lifecycle: str) -> None:
    with ExitStack() as stack, httpx.Client(timeout=60) as client:
        running = [
            stack.enter_context(client.stream("POST", f"{lifecycle}/v1/chat/completions", json=body("l-held", True)))
            for _ in range(2)
        ]
        assert [r.status_code for r in running] == [200, 200]  # both have sent their first event and go on
        shed = client.post(
            f"{lifecycle}/v1/chat/completions", json=body("l-held"), headers={"x-priority": "batch"}
        )
        assert shed.status_code == 429 and shed.json()["error"]["code"] == "shed", shed.text
        # a rewrite rule's header sets the priority: x-tenant: bulk becomes x-priority: batch
        ruled = client.post(f"{lifecycle}/v1/chat/completions", json=body("l-held"), headers={"x-tenant": "bulk"})
        assert ruled.status_code == 429 and ruled.json()["error"]["code"] == "shed", ruled.text
        realtime = client.post(f"{lifecycle}/v1/chat/completions", json=body("l-held"))
        assert realtime.status_code == 200  # realtime is under its own bound
        for response in running:
            assert "".join(response.iter_text()).rstrip().endswith("data: [DONE]")
    after = post(lifecycle, body("l-held"), headers={"x-tenant": "bulk"})
    assert after.status_code == 200  # the ended streams gave their slots back


def test_streams_that_fail_mid_way_open_their_versions_breaker(lifecycle: str) -> None:
    failed = [post(lifecycle, body("l-mid-fail", stream=True)) for _ in range(2)]
    for response in failed:
        assert response.status_code == 200 and response.headers["x-served-by"] == "l-mid-fail@stable"
        data = events(response)
        assert json.loads(data[-2])["error"]["code"] == "injected_fault" and data[-1] == "[DONE]"
    healed = post(lifecycle, body("l-mid-fail", stream=True))
    assert healed.headers["x-served-by"] == "l-mid-fail@canary"  # the breaker is open: stable is skipped
    assert "error" not in healed.text and events(healed)[-1] == "[DONE]"


def test_a_canary_whose_streams_fail_mid_way_is_rolled_back(lifecycle: str) -> None:
    def send(i: int) -> httpx.Response:
        return post(lifecycle, body("l-canary", stream=True, user=f"u{i}"))

    state, _ = drive_rollout(lifecycle, "l-canary", send)
    assert state["phase"] == "rolled-back", state
    assert "gate failed: error rate" in state["history"][-1]["reason"]
