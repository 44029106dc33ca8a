"""The default graph on real weights, driven by the official openai client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from app.engines.base import EngineStats
from tests.eventually import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
RERANK_MODEL = "minilm-rerank"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
ON_VLLM = {"x-experiment": "smollm2-v1"}  # pins the stable version (vLLM); v2 runs on transformers
ADAPTERS = ["smollm2-lora-a", "smollm2-lora-b"]  # LoRA adapters on v1's replicas


@pytest.fixture(scope="module")
def client(default_graph: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{default_graph}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_are_listed(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {CHAT_MODEL, EMBED_MODEL, RERANK_MODEL, *ADAPTERS}
    assert {getattr(models[name], "parent", None) for name in ADAPTERS} == {CHAT_MODEL}


def test_each_adapter_answers_differently_from_the_base_at_temperature_0(client: openai.OpenAI) -> None:
    prompts = ["Name three colours.", "Write a haiku about the sea.", "Explain what a CPU does in one sentence."]

    def answer(model: str, prompt: str) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=16,
            extra_headers=ON_VLLM if model == CHAT_MODEL else {},
        )  # type: ignore[arg-type]
        assert raw.headers["x-served-by"] == f"{model}@v1"
        completion = raw.parse()
        assert completion.model == model
        return completion.choices[0].message.content or ""

    answers = [{model: answer(model, prompt) for model in [CHAT_MODEL, *ADAPTERS]} for prompt in prompts]
    for each in answers:
        assert all(each[adapter] != each[CHAT_MODEL] for adapter in ADAPTERS), each
    assert any(each[ADAPTERS[0]] != each[ADAPTERS[1]] for each in answers), answers  # two adapters, two behaviours


def test_smollm2_knows_paris(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=16, extra_headers=ON_VLLM
    )  # type: ignore[arg-type]
    assert raw.headers["x-served-by"] == f"{CHAT_MODEL}@v1"  # the experiment header pins it past the 90/10 split
    answer = raw.parse()
    assert "paris" in (answer.choices[0].message.content or "").lower()
    assert answer.usage is not None and answer.usage.prompt_tokens > 10 and answer.usage.completion_tokens >= 1


def test_streaming_matches_plain(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=16,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=ON_VLLM,  # the same version as the plain request below, whatever the 90/10 split picks
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "paris" in text.lower()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    plain = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=16,  # type: ignore[arg-type]
        extra_headers=ON_VLLM,
    )
    assert plain.choices[0].message.content == text


def test_completions(client: openai.OpenAI) -> None:
    out = client.completions.create(model=CHAT_MODEL, prompt="The capital of France is", temperature=0, max_tokens=5)
    assert out.choices[0].text.strip()
    assert out.usage is not None and out.usage.completion_tokens <= 5


def test_paraphrases_are_closer_than_unrelated(client: openai.OpenAI) -> None:
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply on Monday."]
    data = client.embeddings.create(model=EMBED_MODEL, input=texts).data
    v = np.array([d.embedding for d in data])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    packed = client.embeddings.create(model=EMBED_MODEL, input=texts[0], encoding_format="base64").data[0]
    assert isinstance(packed.embedding, str)  # asked for explicitly, the client hands base64 back as is
    assert np.allclose(np.frombuffer(base64.b64decode(packed.embedding), dtype="<f4"), v[0], atol=1e-5)


def test_rerank_puts_the_relevant_document_first(default_graph: str) -> None:
    docs = [
        "Bananas are rich in potassium.",
        "Paris is the capital and largest city of France.",
        "The Great Barrier Reef is off the coast of Australia.",
    ]
    r = httpx.post(
        f"{default_graph}/v1/rerank",
        timeout=60,
        json={"model": RERANK_MODEL, "query": "What is the capital of France?", "documents": docs},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["index"] == 1
    assert [x["relevance_score"] for x in results] == sorted((x["relevance_score"] for x in results), reverse=True)


def test_client_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nope", messages=QUESTION)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hello " * 3000}])
    assert long.value.code == "context_length_exceeded"
    assert "2048" in long.value.message
    with pytest.raises(openai.BadRequestError) as zero:
        client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=0)  # type: ignore[arg-type]
    assert zero.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as over:
        client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=5000)  # type: ignore[arg-type]
    assert over.value.param == "max_tokens"
    with pytest.raises(openai.APIStatusError) as big:
        client.embeddings.create(model=EMBED_MODEL, input=["x" * 600_000, "y" * 600_000])
    assert big.value.status_code == 413
    for version in ({"x-experiment": "smollm2-v1"}, {"x-experiment": "smollm2-v2"}):  # both engines say the same
        with pytest.raises(openai.BadRequestError) as long:
            client.chat.completions.create(
                model=CHAT_MODEL, messages=[{"role": "user", "content": "hello " * 3000}], extra_headers=version
            )
        assert (long.value.code, long.value.param) == ("context_length_exceeded", "messages"), version
        with pytest.raises(openai.BadRequestError) as over:
            client.chat.completions.create(
                model=CHAT_MODEL, messages=QUESTION, max_completion_tokens=5000, extra_headers=version
            )
        assert over.value.param == "max_completion_tokens" and "1024" in over.value.message, version


def test_disconnect_aborts_the_generation(default_graph: str) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("chat-smollm2-135m-instruct-v1", app_name="inference-graph")
    before = handle.stats.remote().result(timeout_s=30)
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 1000,
        "stream": True,
        "temperature": 0.8,
    }
    with httpx.stream("POST", f"{default_graph}/v1/chat/completions", json=body, headers=ON_VLLM, timeout=60) as r:
        lines = r.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    def aborted() -> EngineStats:
        stats = handle.stats.remote().result(timeout_s=30)
        assert stats.aborted > before.aborted and stats.running == 0, stats
        return stats

    stats = eventually(aborted, what="vLLM to abort the request the client left", timeout_s=30, interval_s=0.5)
    assert stats.aborted == before.aborted + 1, stats
    assert stats.running == 0, stats


def test_canary_version_on_transformers_also_knows_paris(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=16,  # type: ignore[arg-type]
        extra_headers={"x-experiment": "smollm2-v2"},
    )
    assert raw.headers["x-served-by"] == f"{CHAT_MODEL}@v2"
    assert "paris" in (raw.parse().choices[0].message.content or "").lower()


def test_split_is_sticky_per_user(client: openai.OpenAI) -> None:
    served = {}
    for user in (f"user-{i}" for i in range(30)):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=1, user=user
        )  # type: ignore[arg-type]
        served[user] = raw.headers["x-served-by"]
    assert set(served.values()) <= {f"{CHAT_MODEL}@v1", f"{CHAT_MODEL}@v2"}
    again = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=1, user="user-7"
    )  # type: ignore[arg-type]
    assert again.headers["x-served-by"] == served["user-7"]


def test_auto_model_routes_to_a_tier(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=QUESTION, temperature=0, max_tokens=16
    )  # type: ignore[arg-type]
    assert raw.headers["x-route-tier"] == "small"
    assert raw.parse().model == CHAT_MODEL


def test_seed_rules(default_graph: str) -> None:
    legacy = openai.OpenAI(base_url=f"{default_graph}/openai/v1", api_key="unused", max_retries=0)
    raw = legacy.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=16
    )  # type: ignore[arg-type]
    assert raw.headers["x-rewrite"] == "legacy-prefix"
    assert "paris" in (raw.parse().choices[0].message.content or "").lower()
    client = openai.OpenAI(base_url=f"{default_graph}/v1", api_key="unused", max_retries=0)
    raw_completion = client.completions.with_raw_response.create(
        model=CHAT_MODEL,
        prompt=QUESTION[0]["content"],
        temperature=0,
        max_tokens=16,
        extra_headers={"x-model-type": "chat", **ON_VLLM},
    )
    assert raw_completion.headers["x-rewrite"] == "completions-as-chat"
    assert "paris" in raw_completion.parse().choices[0].text.lower()
