"""What vLLM's own OpenAI server serves, the default graph serves, through the clients people use: structured
outputs, tools, logprobs, several choices and prompts, token ids, vLLM's parameters, LangChain, instructor, Cohere's
v2 rerank and vLLM's own benchmark client. Requests go through the default 90/10 split unpinned: capability routing
keeps them off the transformers canary."""

from __future__ import annotations

import argparse
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import numpy as np
import openai
import pydantic
import pytest

from tests.e2e.test_default_graph import CHAT_MODEL, EMBED_MODEL, QUESTION, RERANK_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


class City(pydantic.BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def client(default_graph: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_graph}/v1", api_key="unused", max_retries=0, timeout=120)


def canary_user(client: openai.OpenAI) -> str:
    """A user the sticky 90/10 split sends to the transformers canary."""
    for i in range(200):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=QUESTION, max_tokens=1, user=f"user-{i}"
        )
        if raw.headers["x-served-by"].endswith("@v2"):
            return f"user-{i}"
    raise AssertionError("no user of 200 went to the canary")


def test_parse_with_a_pydantic_model_even_for_a_canary_user(client: openai.OpenAI) -> None:
    user = canary_user(client)
    raw = client.chat.completions.with_raw_response.parse(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name a large city and its country."}],
        response_format=City,
        temperature=0,
        max_tokens=60,
        user=user,
    )
    assert raw.headers["x-served-by"] == f"{CHAT_MODEL}@v1"  # the canary cannot serve response_format
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name and parsed.country


def test_json_object_mode(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Reply with a JSON object with one key, name, holding a cat's name."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
    )
    assert answer.choices[0].finish_reason == "stop", answer
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_have_arguments_that_validate(client: openai.OpenAI, choice: Any) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=choice, temperature=0, max_tokens=60
    )  # type: ignore[call-overload]
    calls = answer.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])  # type: ignore[index]


def test_a_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=60
    )  # type: ignore[call-overload]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    history = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 31, "sky": "sunny"}'},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=history, tools=[WEATHER], temperature=0, max_tokens=40
    )  # type: ignore[call-overload]
    assert raw.headers["x-served-by"] == f"{CHAT_MODEL}@v1"
    answer = raw.parse()
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.choices[0].message.content or answer.choices[0].message.tool_calls


def test_logprobs_in_chat_and_completions(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, logprobs=True, top_logprobs=2, temperature=0, max_tokens=4
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    text = client.completions.create(model=CHAT_MODEL, prompt="The capital of France is", logprobs=2, max_tokens=3)
    assert text.choices[0].logprobs is not None and len(text.choices[0].logprobs.top_logprobs or []) == 3


def test_several_choices_and_several_prompts(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, n=2, temperature=0.8, seed=1, max_tokens=8
    )
    assert [c.index for c in chat.choices] == [0, 1]
    two = client.completions.create(model=CHAT_MODEL, prompt=["Hello, my name is", "Paris is"], max_tokens=4)
    assert sorted(c.index for c in two.choices) == [0, 1] and all(c.text for c in two.choices)
    ids = client.completions.create(model=CHAT_MODEL, prompt=[504, 3575, 282, 4649, 314], max_tokens=4, temperature=0)
    assert ids.usage is not None and ids.usage.prompt_tokens == 5 and ids.choices[0].text


def test_vllm_parameters_are_honoured(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True, "min_tokens": 12, "top_k": 5, "repetition_penalty": 1.1},
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 12


def test_embeddings_of_token_ids_match_their_text(client: openai.OpenAI) -> None:
    ids = client.embeddings.create(model=EMBED_MODEL, input=[[101, 7592, 2088, 102]])  # [CLS] hello world [SEP]
    text = client.embeddings.create(model=EMBED_MODEL, input=["hello world"])
    assert ids.usage.prompt_tokens == 4
    assert np.dot(ids.data[0].embedding, text.data[0].embedding) > 0.999


def test_cohere_v2_client_reranks(default_graph: str) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key="unused", base_url=default_graph)
    documents = ["The Eiffel Tower is in Paris.", "Bananas are yellow.", "Paris is the capital of France."]
    result = co.rerank(model=RERANK_MODEL, query="What is the capital of France?", documents=documents, top_n=2)
    assert [r.index for r in result.results] == [2, 0]


def test_langchain_structured_output_and_tools(default_graph: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=CHAT_MODEL, base_url=f"{default_graph}/v1", api_key="unused", temperature=0, max_tokens=60)
    city = llm.with_structured_output(City, method="json_schema").invoke("Name a large city and its country.")
    assert isinstance(city, City)

    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return "sunny"

    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert isinstance(message.tool_calls[0]["args"]["city"], str)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor(default_graph: str, mode: str) -> None:
    import instructor

    raw = openai.OpenAI(base_url=f"{default_graph}/v1", api_key="unused", max_retries=0, timeout=120)
    patched = instructor.from_openai(raw, mode=getattr(instructor.Mode, mode))
    city = patched.chat.completions.create(
        model=CHAT_MODEL,
        response_model=City,
        messages=[{"role": "user", "content": "Name a large city and its country."}],
        temperature=0,
        max_tokens=60,
        max_retries=0,
    )
    assert isinstance(city, City) and city.name


def test_vllm_bench_serve_with_its_defaults_loses_no_request(default_graph: str, tmp_path: Any) -> None:
    from vllm.benchmarks import serve as bench

    parser = argparse.ArgumentParser()
    bench.add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend", "openai-chat", "--base-url", default_graph, "--endpoint", "/v1/chat/completions",
            "--model", CHAT_MODEL, "--tokenizer", str(_weights()), "--dataset-name", "random",
            "--random-input-len", "32", "--random-output-len", "8", "--num-prompts", "8", "--max-concurrency", "4",
            "--save-result", "--result-dir", str(tmp_path), "--result-filename", "bench.json", "--disable-tqdm",
        ]
    )  # fmt: skip
    bench.main(args)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["completed"] == 8 and result.get("failed", 0) == 0, result


def _weights() -> Any:
    from app.config import load_config
    from tests.e2e.conftest import default_args

    config = load_config(default_args())
    model = config.model(CHAT_MODEL)
    assert model is not None
    return model.serving_version.weights.local_path(config.resolved_weights_dir())


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"n": 17}, "n"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
        "response_format",
    ),
]


def test_bad_input_is_a_400_naming_the_field_while_other_requests_run(default_graph: str) -> None:
    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=default_graph, timeout=120) as http:
            good = {"model": CHAT_MODEL, "messages": QUESTION, "max_tokens": 16, "temperature": 0}
            goods = [http.post("/v1/chat/completions", json=good) for _ in range(4)]
            bads = [
                http.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": QUESTION, **fields})
                for fields, _ in BAD * 2
            ]
            answers = await asyncio.gather(*goods, *bads)
            return list(answers[:4]), list(answers[4:])

    with ThreadPoolExecutor(1) as pool:
        goods, bads = pool.submit(asyncio.run, run()).result(timeout=600)
    assert [r.status_code for r in goods] == [200] * 4
    for response, (_, field) in zip(bads, BAD * 2, strict=True):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith(field), response.text


def test_tools_requests_never_reach_the_transformers_canary(client: openai.OpenAI) -> None:
    """Users the split sends to the canary for plain chat are served by the vLLM version when they send tools."""
    canaries = []
    for i in range(300):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=QUESTION, max_tokens=1, user=f"tools-{i}"
        )
        if raw.headers["x-served-by"].endswith("@v2"):
            canaries.append(f"tools-{i}")
        if len(canaries) == 5:
            break
    assert len(canaries) == 5
    for user in canaries:
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=ASK_WEATHER, tools=[WEATHER], max_tokens=30, user=user
        )  # type: ignore[call-overload]
        assert raw.headers["x-served-by"] == f"{CHAT_MODEL}@v1", user
