"""Bad input never gets a 500 and never hangs: explicit hostile bodies, then a schema-driven fuzz (hypothesis)
of every model endpoint, with bodies built around each request schema's fields plus arbitrary JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests.reliability.conftest import CHAT, EMBED, MAX_BODY_BYTES, RERANK, chat_body

pytestmark = pytest.mark.timeout(300)
set_hypothesis_home_dir(str(Path(__file__).resolve().parents[2] / ".cache" / "hypothesis"))  # git-ignored
TIMEOUT_S = 30  # a request that takes longer counts as a hang


@pytest.fixture(scope="module")
def client(reliability_graph: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=reliability_graph, timeout=TIMEOUT_S) as c:
        yield c


def assert_clean_error(r: httpx.Response, status: int, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error


def post_raw(client: httpx.Client, content: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return client.post(path, content=content, headers={"content-type": "application/json"})


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    big = json.dumps(chat_body(CHAT, "x" * MAX_BODY_BYTES)).encode()
    assert_clean_error(post_raw(client, big), 413)

    def chunks() -> Iterator[bytes]:  # no content-length: the limit holds while the body streams in
        yield b'{"model": "rel-chat", "messages": [{"role": "user", "content": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b"y" * 1024
        yield b'"}]}'

    streamed = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_clean_error(streamed, 413)


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "rel-chat", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # not UTF-8
        b"",
        b"{",
        b"[]",
        b'"just a string"',
        b"null",
        b"[" * 30_000 + b"]" * 30_000,  # nested too deeply for the parser
        b'{"model": "rel-chat", "max_tokens": 1' + b"0" * 5000 + b"}",  # an integer over Python's digit limit
        b'{"model": "rel-chat", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"model": "rel-chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    ],
    ids=["invalid-utf8", "empty", "truncated", "array", "string", "null", "deep", "huge-int", "nan", "inf"],
)
def test_malformed_bodies_are_400(client: httpx.Client, content: bytes) -> None:
    assert_clean_error(post_raw(client, content), 400)


def test_lone_surrogate_in_a_message_is_not_a_500(client: httpx.Client) -> None:
    body = b'{"model": "rel-chat", "max_tokens": 2, "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    r = post_raw(client, body)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 10**9}, "n"),
        ({"n": 2}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**12}, "max_tokens"),
        ({"max_tokens": 2**64}, "max_tokens"),
        ({"max_completion_tokens": 10**30}, "max_completion_tokens"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"metadata": {"k": [[[[["deep"]]]]]}}, None),
        ({"messages": [{"role": "user", "content": "hi", "extra": True}]}, None),
    ],
    ids=lambda v: json.dumps(v)[:40],
)
def test_out_of_range_and_unknown_fields_are_400(client: httpx.Client, extra: dict[str, Any], param: str) -> None:
    body = {**chat_body(CHAT), **extra}
    r = client.post("/v1/chat/completions", json=body)
    assert_clean_error(r, 400, param)
    assert r.headers.get("x-served-by") is None or r.status_code == 400


def test_deep_nesting_inside_a_field_is_400(client: httpx.Client) -> None:
    nested = "[" * 20_000 + "]" * 20_000
    content = f'{{"model": "rel-chat", "messages": [{{"role": "user", "content": "hi"}}], "metadata": {nested}}}'
    assert_clean_error(post_raw(client, content.encode()), 400)


# ---- the fuzz ------------------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
models = st.sampled_from([CHAT, EMBED, RERANK, "auto", "no-such-model", ""]) | st.text(max_size=20)
small_ints = st.integers(min_value=-3, max_value=6) | st.integers(min_value=-(2**70), max_value=2**70)
content = st.text(max_size=60) | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": st.text(max_size=20)}),
    max_size=3,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "robot"]), "content": content}
    ),
    max_size=4,
)
# optional fields of each request schema: values of the right kind, out of range, or anything at all
sampling = {
    "max_tokens": small_ints | json_values,
    "max_completion_tokens": small_ints,
    "temperature": st.floats(min_value=-5, max_value=5) | json_values,
    "top_p": st.floats(min_value=-2, max_value=2),
    "n": small_ints,
    "stream": st.booleans() | json_values,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | json_values,
    "seed": small_ints,
    "presence_penalty": st.floats(min_value=-5, max_value=5),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_values}),
    "logprobs": json_values,
    "tools": json_values,
    "user": st.text(max_size=10) | json_values,
}
unknown = st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=2)


def body_of(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]) -> Any:
    shaped = st.builds(
        lambda base, extra: {**base, **extra},
        st.fixed_dictionaries(required, optional=optional),
        unknown | st.just({}),
    )
    return shaped | json_values


ENDPOINTS = {
    "/v1/chat/completions": body_of({"model": models, "messages": messages | json_values}, sampling),
    "/v1/completions": body_of(
        {"model": models, "prompt": st.text(max_size=60) | st.lists(st.text(max_size=10), max_size=3) | json_values},
        {**sampling, "echo": st.booleans() | json_values, "best_of": small_ints},
    ),
    "/v1/embeddings": body_of(
        {"model": models, "input": st.text(max_size=60) | st.lists(st.text(max_size=20), max_size=4) | json_values},
        {"encoding_format": st.sampled_from(["float", "base64", "hex"]) | json_values, "dimensions": small_ints},
    ),
    "/v1/rerank": body_of(
        {"model": models, "query": st.text(max_size=30) | json_values, "documents": st.lists(st.text(max_size=20))},
        {"top_n": small_ints, "return_documents": st.booleans() | json_values},
    ),
}


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith("data: [DONE]"), r.text[-200:]
    else:
        r.json()


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_fuzzed_bodies_get_no_500_and_no_hang(client: httpx.Client, path: str) -> None:
    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure reproduces
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=ENDPOINTS[path])
    def fuzz(body: Any) -> None:
        check_answer(client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}))

    fuzz()
