"""A completion served through the chat template: the planner turns it into a chat request with the prompt as one
user message, and the answer goes back to the client in the completion's shape. Decided once, by the planner; the
replicas, the token counts and the cache only ever see a chat request."""

from __future__ import annotations

import json
from typing import Any, Protocol

from app.errors import InvalidRequest
from app.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, VllmSampling

# what a completion and a chat request share: the spec's sampling fields and vLLM's extra sampling parameters
_SHARED = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
    "stop",
    "stream",
    "stream_options",
    "logit_bias",
    "user",
    *VllmSampling.model_fields,
)


class AnswerShape(Protocol):
    """How the answer of the request that was served reaches the client."""

    def reply(self, content: bytes) -> bytes:
        """A unary answer's JSON."""
        ...

    def event(self, event: str) -> str:
        """One server-sent event (`data: ...\\n\\n`)."""
        ...


class AsServed:
    """The answer as the replica gave it."""

    def reply(self, content: bytes) -> bytes:
        return content

    def event(self, event: str) -> str:
        return event


AS_SERVED = AsServed()


def as_chat(request: CompletionRequest) -> ChatCompletionRequest:
    """The chat request that serves a completion. Its fields were validated as the completion's, so they are copied
    as they are (a completion's `max_tokens` may be 0, which a chat request's schema would refuse)."""
    prompts = request.prompts()
    if len(prompts) != 1 or not isinstance(prompts[0], str):
        raise InvalidRequest("A completion served through the chat template takes one text prompt.", param="prompt")
    for name in ("logprobs", "response_format"):
        if getattr(request, name) is not None:
            raise InvalidRequest(f"{name} is not served when a completion goes through the chat template.", param=name)
    shared = [name for name in _SHARED if name in request.model_fields_set or name in ("model", "max_tokens")]
    fields: dict[str, Any] = {name: getattr(request, name) for name in shared}
    fields["messages"] = [ChatMessage(role="user", content=prompts[0])]
    return ChatCompletionRequest.model_construct(_fields_set={*shared, "messages"}, **fields)


class CompletionFromChat:
    """A chat answer in the shape of a text completion (`object: text_completion`, `choices[].text`); with `echo`,
    the prompt leads the text."""

    def __init__(self, request: CompletionRequest) -> None:
        self._echo = request.prompt_text() if request.echo else ""

    def reply(self, content: bytes) -> bytes:
        chat = json.loads(content)
        choices = [
            {
                "index": c["index"],
                "text": self._echo + (c["message"].get("content") or ""),
                "finish_reason": c["finish_reason"],
                "logprobs": None,
            }
            for c in chat["choices"]
        ]
        return json.dumps(self._completion(chat, choices, chat.get("usage"))).encode()

    def event(self, event: str) -> str:
        """`event` may hold several events (a replica merges its opening ones)."""
        return "".join(self._one(e + "\n\n") for e in event.split("\n\n") if e)

    def _one(self, event: str) -> str:
        payload = event.removeprefix("data: ").rstrip("\n")
        chunk = json.loads(payload)
        if "choices" not in chunk:  # an error event
            return event
        choices = []
        for c in chunk["choices"]:
            text = (c.get("delta") or {}).get("content") or ""
            if "role" in c["delta"]:  # the first chunk: the echoed prompt goes with it
                text = self._echo + text
            choices.append({"index": c["index"], "text": text, "finish_reason": c["finish_reason"], "logprobs": None})
        return f"data: {json.dumps(self._completion(chunk, choices, chunk.get('usage')))}\n\n"

    @staticmethod
    def _completion(chat: dict[str, Any], choices: list[dict[str, Any]], usage: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "cmpl-" + str(chat["id"]).removeprefix("chatcmpl-"),
            "object": "text_completion",
            "created": chat["created"],
            "model": chat["model"],
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return body
