"""vLLM versions' answers against OpenAI's published spec: tool calls, logprobs, several choices, several prompts,
plain and streamed. The graph relays vLLM's answers as vLLM gives them; vLLM adds fields of its own (allowed by the
spec's open objects), a few of them are null where the spec has no null, and its chat `logprobs` objects lack the
spec's `refusal`: exactly those deviations are allowed, and the README lists them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.test_default_graph import CHAT_MODEL, QUESTION
from tests.e2e.test_vllm_surface import ASK_WEATHER, WEATHER
from tests.spec import errors
from tests.unit.test_conformance import completion_chunk_errors

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# vLLM's own nulls where the spec's schema has no null (path suffix: message)
VLLM_NULLS = {
    "annotations", "audio", "function_call", "service_tier", "stop_reason", "prompt_tokens_details",
    "completion_tokens_details",
}  # fmt: skip


def vllm_deviations(problems: list[str]) -> list[str]:
    """The problems left once vLLM's known nulls are allowed."""
    return [p for p in problems if not (p.split(": ", 1)[0].rsplit("/", 1)[-1] in VLLM_NULLS and "None" in p)]


def with_logprobs_refusal(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's chat `logprobs` objects leave out `refusal`, which the spec requires (null when there is none): the
    answer with it added, so that the rest of the object is still checked."""
    for choice in body.get("choices", []):
        if isinstance(choice.get("logprobs"), dict):
            assert "refusal" not in choice["logprobs"]
            choice["logprobs"]["refusal"] = None
    return body


CHATS: dict[str, dict[str, Any]] = {
    "tool-calls": {"messages": ASK_WEATHER, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 40},
    "logprobs": {"messages": QUESTION, "logprobs": True, "top_logprobs": 2, "max_tokens": 4},
    "two-choices": {"messages": QUESTION, "n": 2, "temperature": 0.8, "seed": 1, "max_tokens": 4},
}


@pytest.mark.parametrize("feature", list(CHATS))
def test_chat_answers_and_chunks_conform(default_graph: str, feature: str) -> None:
    body = {"model": CHAT_MODEL, "temperature": 0, **CHATS[feature]}
    plain = httpx.post(f"{default_graph}/v1/chat/completions", json=body, timeout=120)
    assert plain.status_code == 200, plain.text
    assert vllm_deviations(errors("CreateChatCompletionResponse", with_logprobs_refusal(plain.json()))) == []
    with httpx.stream("POST", f"{default_graph}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert chunks
    for chunk in chunks:
        assert vllm_deviations(errors("CreateChatCompletionStreamResponse", with_logprobs_refusal(chunk))) == [], chunk


def test_several_completion_prompts_conform(default_graph: str) -> None:
    body = {"model": CHAT_MODEL, "prompt": ["Hello, my name is", "Paris is"], "max_tokens": 4, "logprobs": 1}
    plain = httpx.post(f"{default_graph}/v1/completions", json=body, timeout=120)
    assert plain.status_code == 200, plain.text
    assert len(plain.json()["choices"]) == 2
    assert vllm_deviations(errors("CreateCompletionResponse", plain.json())) == []
    with httpx.stream("POST", f"{default_graph}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    for chunk in chunks:
        assert vllm_deviations(completion_chunk_errors(chunk, last=chunk is chunks[-1])) == [], chunk
