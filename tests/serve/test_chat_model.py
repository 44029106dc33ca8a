"""Chat and completions through the graph on the transformers engine (tiny random Llama)."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import httpx
import pytest

from app.tokenizer import HFTokenizer

pytestmark = pytest.mark.timeout(300)


def post(base: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=120)


def test_chat_usage_counts_real_tokens(graph: str, tiny_paths: tuple[Path, Path]) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = post(
        graph, "/v1/chat/completions", {"model": "tiny-chat", "messages": messages, "max_tokens": 5, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-chat"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    expected_prompt = len(HFTokenizer(tiny_paths[0]).render_chat(messages))
    assert body["usage"]["prompt_tokens"] == expected_prompt
    assert 1 <= body["usage"]["completion_tokens"] <= 5
    assert body["usage"]["total_tokens"] == expected_prompt + body["usage"]["completion_tokens"]


def test_greedy_is_deterministic(graph: str) -> None:
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "count"}], "max_tokens": 8, "temperature": 0}
    first = post(graph, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    assert post(graph, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"] == first


def test_completions(graph: str) -> None:
    r = post(graph, "/v1/completions", {"model": "tiny-chat", "prompt": "once upon", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] <= 3


def sse_events(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_chat_stream_ends_with_done(graph: str) -> None:
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    with httpx.stream("POST", f"{graph}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-served-by"] == "tiny-chat@v1"
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    plain = post(graph, "/v1/chat/completions", {**body, "stream": False, "stream_options": None}).json()
    assert streamed == plain["choices"][0]["message"]["content"]


def test_concurrent_requests_all_answer(graph: str) -> None:
    def ask(i: int) -> int:
        body = {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": f"q{i}"}],
            "max_tokens": 4,
            "temperature": 0.7,
            "seed": i,
        }
        return post(graph, "/v1/chat/completions", body).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        assert list(pool.map(ask, range(12))) == [200] * 12


def test_transformers_engine_batches_concurrent_requests(graph: str) -> None:
    from ray import serve

    def ask(i: int) -> int:
        body = {
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": f"q{i}"}],
            "max_tokens": 4,
            "temperature": 0,
        }
        return post(graph, "/v1/chat/completions", body).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(16))) == [200] * 16
    handle = serve.get_deployment_handle("chat-tiny-chat-v1", app_name="tiny-graph")
    sizes = handle.recent_batch_sizes.remote().result(timeout_s=30)
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 8  # max_batch_size from the config, applied through user_config
