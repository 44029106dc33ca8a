"""What each chat engine can serve of a request. vLLM versions serve through vLLM's own OpenAI layer, so they serve
everything the protocol declares; the transformers engine serves a subset. The planner keeps a request among the
versions that can serve it, and a version that cannot refuses it by name rather than half-serve it."""

from __future__ import annotations

from typing import Any

from app.config import EngineKind
from app.protocol import ChatCompletionRequest, CompletionRequest, ModelRequest, TextFormat

# Fields the transformers engine honours, or accepts as hints with no effect on the output.
_TRANSFORMERS_CHAT = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "presence_penalty",
        "frequency_penalty", "seed", "stop", "stream", "stream_options", "user", "parallel_tool_calls", "metadata",
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "store",
        "service_tier", "modalities", "reasoning_effort", "function_call", "functions", "audio", "prediction",
        "verbosity", "web_search_options", "moderation",
    }
)  # fmt: skip
_TRANSFORMERS_COMPLETION = frozenset(
    {
        "model", "prompt", "max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed",
        "stop", "stream", "stream_options", "user", "echo", "best_of", "suffix",
    }
)  # fmt: skip


def fields_beyond(engine: EngineKind, body: ModelRequest) -> list[str]:
    """The fields of `body` that `engine` cannot serve (empty when it serves the whole request)."""
    if engine is EngineKind.VLLM:
        return []
    if isinstance(body, ChatCompletionRequest):
        return _beyond(body, _TRANSFORMERS_CHAT) + _tool_messages(body)
    if isinstance(body, CompletionRequest):
        several = len(body.prompts()) > 1 or not isinstance(body.prompts()[0], str)
        return _beyond(body, _TRANSFORMERS_COMPLETION) + (["prompt"] if several else [])
    return []


def _beyond(body: ModelRequest, served: frozenset[str]) -> list[str]:
    """Fields the client set to something other than a no-op."""
    fields = type(body).model_fields
    return sorted(
        name
        for name in body.model_fields_set - served
        if name in fields and not _inert(name, getattr(body, name), fields[name].default, body)
    )


def _inert(name: str, value: Any, default: Any, body: ModelRequest) -> bool:
    if value == default or value in (None, [], {}):
        return True
    if name == "response_format":
        return isinstance(value, TextFormat)
    if name == "tool_choice":  # "none", or "auto" with no tools, changes nothing
        return value == "none" or (value == "auto" and not getattr(body, "tools", None))
    return False


def _tool_messages(body: ChatCompletionRequest) -> list[str]:
    return ["messages"] if any(m.role == "tool" or m.tool_calls for m in body.messages) else []
