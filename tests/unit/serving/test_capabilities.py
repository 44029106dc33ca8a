from typing import Any

import pytest

from app.config import EngineKind
from app.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from app.serving.capabilities import fields_beyond
from app.serving.completion_as_chat import as_chat

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize(
    "fields, beyond",
    [
        ({"tools": [TOOL]}, ["tools"]),
        ({"tools": [TOOL], "tool_choice": "required"}, ["tool_choice", "tools"]),
        ({"logprobs": True, "top_logprobs": 2}, ["logprobs", "top_logprobs"]),
        ({"n": 3}, ["n"]),
        ({"logit_bias": {"5": 1}}, ["logit_bias"]),
        ({"response_format": {"type": "json_object"}}, ["response_format"]),
        ({"top_k": 4, "ignore_eos": True}, ["ignore_eos", "top_k"]),
        ({"echo": True}, ["echo"]),
    ],
)
def test_what_transformers_cannot_serve_is_named(fields: dict[str, Any], beyond: list[str]) -> None:
    request = chat(**fields)
    assert fields_beyond(EngineKind.TRANSFORMERS, request) == beyond
    assert fields_beyond(EngineKind.VLLM, request) == []


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"temperature": 0, "top_p": 0.5, "seed": 1, "stop": ["x"], "max_tokens": 3, "user": "u"},
        {"n": 1, "logprobs": False, "tools": [], "logit_bias": {}, "response_format": {"type": "text"}},
        {"tool_choice": "none", "ignore_eos": False, "top_k": None, "metadata": {"a": "b"}},
        {"tool_choice": "auto"},  # without tools, auto calls nothing
    ],
)
def test_no_ops_and_honoured_fields_need_nothing_more(fields: dict[str, Any]) -> None:
    assert fields_beyond(EngineKind.TRANSFORMERS, chat(**fields)) == []


def test_a_tool_history_needs_vllm() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": messages})
    assert fields_beyond(EngineKind.TRANSFORMERS, request) == ["messages"]


@pytest.mark.parametrize("prompt", [["a", "b"], [1, 2], [[1], [2]]])
def test_completions_transformers_take_one_text_prompt(prompt: Any) -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    assert fields_beyond(EngineKind.TRANSFORMERS, request) == ["prompt"]
    one = CompletionRequest.model_validate({"model": "m", "prompt": ["a"], "echo": True, "max_tokens": 0})
    assert fields_beyond(EngineKind.TRANSFORMERS, one) == []


def test_a_completion_served_as_chat_keeps_vllm_parameters_and_defaults() -> None:
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "p", "ignore_eos": True})
    served = as_chat(completion)
    assert served.ignore_eos and served.max_tokens == 16  # the completion's default carries over
    assert fields_beyond(EngineKind.TRANSFORMERS, served) == ["ignore_eos"]
    assert fields_beyond(EngineKind.TRANSFORMERS, as_chat(CompletionRequest(model="m", prompt="p"))) == []


def test_other_endpoints_need_nothing() -> None:
    assert fields_beyond(EngineKind.SENTENCE_TRANSFORMERS, EmbeddingRequest(model="e", input="x")) == []
