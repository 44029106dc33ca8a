"""OpenAI conformance through the real HTTP graph on tiny models: every kind of response and every error body
validated against the spec's component schemas (`tests/spec.py`), and request fields honoured or rejected end to
end, as the README's compatibility tables say."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.spec import assert_conforms, errors, spec
from tests.unit.test_conformance import completion_chunk_errors

pytestmark = pytest.mark.timeout(300)

CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
COMPLETION = {"model": "tiny-chat", "prompt": "once upon", "max_tokens": 4}
EMBEDDING = {"model": "tiny-embed", "input": ["a cat", "a dog"]}

# every no-op or ignored value of the chat table, and a value for each honoured sampling field
ACCEPTED_CHAT_FIELDS: dict[str, Any] = {
    "temperature": 0.7,
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "seed": 3,
    "stop": ["\n\n"],
    "max_completion_tokens": 5,
    "n": 1,
    "logprobs": False,
    "logit_bias": {},
    "tools": [],
    "tool_choice": "none",
    "parallel_tool_calls": True,
    "response_format": {"type": "text"},
    "modalities": ["text"],
    "reasoning_effort": "none",
    "service_tier": "auto",
    "store": False,
    "metadata": {"team": "a"},
    "user": "user-1",
    "safety_identifier": "user-1",
    "prompt_cache_key": "k",
    "prompt_cache_retention": "in_memory",
    "audio": None,
    "verbosity": None,
}


def post(base: str, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=60)


def streamed(base: str, path: str, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", f"{base}{path}", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]


def test_models_list_conforms(graph: str) -> None:
    listed = httpx.get(f"{graph}/v1/models", timeout=10).json()
    assert_conforms("ListModelsResponse", listed)
    assert {"tiny-chat", "tiny-embed", "tiny-rerank"} <= {m["id"] for m in listed["data"]}


def test_chat_completion_conforms_with_every_accepted_field(graph: str) -> None:
    body = {**CHAT, **ACCEPTED_CHAT_FIELDS}
    assert_conforms("CreateChatCompletionRequest", body)
    r = post(graph, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert_conforms("CreateChatCompletionResponse", r.json())
    assert r.json()["usage"]["completion_tokens"] <= 5


def test_every_chat_chunk_conforms_with_the_usage_chunk(graph: str) -> None:
    events = streamed(graph, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


@pytest.mark.parametrize("fields", [{}, {"echo": True}, {"max_tokens": 0}])
def test_completion_conforms(graph: str, fields: dict[str, Any]) -> None:
    r = post(graph, "/v1/completions", {**COMPLETION, **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_conforms("CreateCompletionResponse", body)
    assert body["choices"][0]["text"].startswith("once upon") == bool(fields.get("echo"))
    if fields.get("max_tokens") == 0:
        assert (body["choices"][0]["text"], body["usage"]["completion_tokens"]) == ("", 0)


def test_every_completion_chunk_conforms_but_for_null_finish_reason(graph: str) -> None:
    body = {**COMPLETION, "echo": True, "stream_options": {"include_usage": True}}
    events = streamed(graph, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texted = [c for c in chunks if c["choices"]]
    opening = texted[0]["choices"][0]
    # the echoed prompt opens the stream together with the first generated text
    assert opening["text"].startswith("once upon") and len(opening["text"]) > len("once upon")
    assert (opening["index"], opening["logprobs"]) == (0, None)
    for chunk in chunks:
        assert completion_chunk_errors(chunk, last=chunk is texted[-1] or not chunk["choices"]) == []
    assert texted[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 4


def test_embeddings_conform_as_float_and_decoded_base64(graph: str) -> None:
    plain = post(graph, "/v1/embeddings", EMBEDDING).json()
    assert_conforms("CreateEmbeddingResponse", plain)
    packed = post(graph, "/v1/embeddings", {**EMBEDDING, "encoding_format": "base64", "user": "u"}).json()
    assert all(isinstance(item["embedding"], str) for item in packed["data"])
    for item in packed["data"]:
        item["embedding"] = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").tolist()
    assert_conforms("CreateEmbeddingResponse", packed)
    assert np.allclose([d["embedding"] for d in packed["data"]], [d["embedding"] for d in plain["data"]], atol=1e-6)


LONG = [{"role": "user", "content": "word " * 400}]
TOOLS = [{"type": "function", "function": {"name": "f"}}]
ERRORS: list[tuple[str, str, object, int, str | None]] = [
    # method, path, body (bytes are sent as they are), status, param
    ("POST", "/v1/chat/completions", {**CHAT, "model": "nope"}, 404, "model"),
    ("POST", "/v1/embeddings", {"model": "tiny-chat", "input": "x"}, 400, "model"),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": LONG}, 400, "messages"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 65}, 400, "max_tokens"),
    ("POST", "/v1/chat/completions", {**CHAT, "surprise": 1}, 400, "surprise"),
    ("POST", "/v1/chat/completions", {**CHAT, "logprobs": True}, 400, "logprobs"),
    ("POST", "/v1/chat/completions", {**CHAT, "top_logprobs": 3}, 400, "top_logprobs"),
    ("POST", "/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, 400, "response_format"),
    ("POST", "/v1/chat/completions", {**CHAT, "tools": TOOLS}, 400, "tools"),
    ("POST", "/v1/chat/completions", {**CHAT, "n": 2}, 400, "n"),
    ("POST", "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("POST", "/v1/chat/completions", {**CHAT, "top_p": 1.5}, 400, "top_p"),
    ("POST", "/v1/completions", {**COMPLETION, "prompt": [1, 2, 3]}, 400, "prompt"),
    ("POST", "/v1/completions", {**COMPLETION, "suffix": "end"}, 400, "suffix"),
    ("POST", "/v1/completions", {**COMPLETION, "best_of": 3}, 400, "best_of"),
    ("POST", "/v1/embeddings", {**EMBEDDING, "input": [[10**9]]}, 400, "input"),  # outside the vocabulary
    ("POST", "/v1/embeddings", {**EMBEDDING, "dimensions": 8}, 400, "dimensions"),
    ("POST", "/v1/rerank", {"model": "tiny-rerank", "query": "", "documents": ["a"]}, 400, "query"),
    ("POST", "/v1/chat/completions", b'{"model": ', 400, None),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}, 413, None),
    ("GET", "/v1/nothing", None, 404, None),
    ("GET", "/v1/chat/completions", None, 405, None),
]


@pytest.mark.parametrize("method, path, body, status, param", ERRORS, ids=[f"{e[3]}-{e[4]}" for e in ERRORS])
def test_every_error_conforms(graph: str, method: str, path: str, body: object, status: int, param: str | None) -> None:
    content = body if isinstance(body, bytes) else None
    payload = None if isinstance(body, bytes) or body is None else body
    r = httpx.request(method, f"{graph}{path}", json=payload, content=content, timeout=60)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert_conforms("ErrorResponse", r.json())
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_a_streamed_request_that_fails_before_the_first_byte_conforms(graph: str) -> None:
    r = post(graph, "/v1/chat/completions", {**CHAT, "stream": True, "messages": LONG})
    assert r.status_code == 400
    assert_conforms("ErrorResponse", r.json())


def test_penalties_reach_the_transformers_engine(graph: str) -> None:
    """Greedy, so only the penalty can change the text; -2 makes the tiny model repeat itself."""

    def answer(**fields: float) -> str:
        body = {**CHAT, "max_tokens": 24, "temperature": 0, **fields}
        r = post(graph, "/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    plain = answer()
    assert answer(frequency_penalty=-2) != plain
    assert answer(presence_penalty=2) != plain
    assert answer(frequency_penalty=0, presence_penalty=0) == plain


def test_top_p_zero_is_greedy(graph: str) -> None:
    greedy = post(graph, "/v1/chat/completions", {**CHAT, "max_tokens": 8, "temperature": 0}).json()
    top_p_zero = post(graph, "/v1/chat/completions", {**CHAT, "max_tokens": 8, "temperature": 1.5, "top_p": 0}).json()
    assert top_p_zero["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


def test_rerank_is_not_in_the_spec(graph: str) -> None:
    """The README's note: rerank has no OpenAI schema; its answers are ours, its errors OpenAI's."""
    assert not any("rerank" in path for path in spec()["paths"])
    r = post(graph, "/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a", "b"], "top_n": 1})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"id", "model", "results", "usage"} and len(r.json()["results"]) == 1
    assert errors("ErrorResponse", r.json())  # a success body is not mistaken for an error
