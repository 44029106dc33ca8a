"""The HTTP surface through real Ray Serve on tiny models: endpoints, headers, and every client mistake."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)

CHAT = {
    "model": "tiny-chat",
    "messages": [{"role": "user", "content": "hello there"}],
    "max_tokens": 4,
    "temperature": 0,
}


def post(base: str, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=60, **kwargs)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_health_ready_models(graph: str) -> None:
    assert httpx.get(f"{graph}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{graph}/ready", timeout=10)
    assert ready.status_code == 200
    states = ready.json()["models"]
    assert {"tiny-chat", "tiny-embed", "tiny-rerank"} <= set(states) and all(states.values())
    models = httpx.get(f"{graph}/v1/models").json()
    assert models["object"] == "list"
    assert {"tiny-chat", "tiny-embed", "tiny-rerank", "tiny-flaky"} <= {m["id"] for m in models["data"]}


def test_every_response_names_what_served_it(graph: str) -> None:
    assert post(graph, "/v1/chat/completions", CHAT).headers["x-served-by"] == "tiny-chat@v1"
    emb = post(graph, "/v1/embeddings", {"model": "tiny-embed", "input": "x"})
    assert emb.headers["x-served-by"] == "tiny-embed@v1"
    rr = post(graph, "/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a"]})
    assert rr.headers["x-served-by"] == "tiny-rerank@v1"


def test_malformed_json(graph: str) -> None:
    r = httpx.post(f"{graph}/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_error(r, 400)["message"]


def test_invalid_utf8_and_deep_nesting(graph: str) -> None:
    assert_error(httpx.post(f"{graph}/v1/chat/completions", content=b'{"model": "\xff"}'), 400)
    deep = b"[" * 20_000 + b"]" * 20_000
    assert_error(httpx.post(f"{graph}/v1/chat/completions", content=deep), 400)


@pytest.mark.parametrize(
    "patch, param",
    [
        ({"messages": "hi"}, "messages"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"n": 5}, "n"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
    ],
)
def test_schema_violations_name_the_field(graph: str, patch: dict, param: str) -> None:
    assert_error(post(graph, "/v1/chat/completions", {**CHAT, **patch}), 400, param=param)


def test_not_an_object(graph: str) -> None:
    assert_error(post(graph, "/v1/embeddings", [1, 2]), 400)


def test_unknown_model(graph: str) -> None:
    assert_error(post(graph, "/v1/chat/completions", {**CHAT, "model": "nope"}), 404, "model_not_found", "model")
    assert_error(post(graph, "/v1/embeddings", {"model": "nope", "input": "x"}), 404, "model_not_found")


def test_model_of_the_wrong_role(graph: str) -> None:
    assert_error(post(graph, "/v1/embeddings", {"model": "tiny-chat", "input": "x"}), 400, "model_not_supported")


def test_context_length_exceeded(graph: str) -> None:
    long = {**CHAT, "messages": [{"role": "user", "content": "word " * 400}]}
    error = assert_error(post(graph, "/v1/chat/completions", long), 400, "context_length_exceeded")
    assert "256" in error["message"]


def test_max_tokens_over_the_limit(graph: str) -> None:
    error = assert_error(post(graph, "/v1/chat/completions", {**CHAT, "max_tokens": 65}), 400, param="max_tokens")
    assert "64" in error["message"]


def test_body_over_the_limit(graph: str) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert_error(post(graph, "/v1/chat/completions", big), 413)

    def chunks():  # no content-length: the limit holds while reading
        for _ in range(100):
            yield b"x" * 1024

    assert_error(httpx.post(f"{graph}/v1/chat/completions", content=chunks()), 413)


def test_unknown_route_and_method(graph: str) -> None:
    assert_error(httpx.get(f"{graph}/v1/nothing"), 404)
    assert_error(httpx.get(f"{graph}/v1/chat/completions"), 405)


def test_stream_error_before_the_first_byte_is_a_plain_error(graph: str) -> None:
    long = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "word " * 400}]}
    assert_error(post(graph, "/v1/chat/completions", long), 400, "context_length_exceeded")


def test_bad_requests_do_not_harm_good_ones(graph: str) -> None:
    bad = [{**CHAT, "model": "nope"}, {**CHAT, "max_tokens": 0}, "{", {**CHAT, "max_tokens": 10_000}]
    good = [CHAT] * 4

    def send(body: object) -> int:
        if isinstance(body, str):
            return httpx.post(f"{graph}/v1/chat/completions", content=body, timeout=60).status_code
        return post(graph, "/v1/chat/completions", body).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, bad + good))
    assert all(400 <= s < 500 for s in statuses[: len(bad)])
    assert statuses[len(bad) :] == [200] * len(good)
    assert httpx.get(f"{graph}/ready", timeout=10).status_code == 200


def test_errors_are_json(graph: str) -> None:
    r = post(graph, "/v1/chat/completions", {**CHAT, "model": "nope"})
    assert r.headers["content-type"].startswith("application/json")
    json.loads(r.text)
