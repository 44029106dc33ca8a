import json

from app.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    CompletionRequest,
    Usage,
)
from app.serving.completion_as_chat import AS_SERVED, CompletionFromChat, as_chat


def test_the_chat_request_carries_the_prompt_and_the_sampling_fields() -> None:
    completion = CompletionRequest.model_validate(
        {"model": "m", "prompt": ["Say hi"], "max_tokens": 0, "temperature": 0, "stop": "x", "stream": True}
    )
    chat = as_chat(completion)
    assert [(m.role, m.text()) for m in chat.messages] == [("user", "Say hi")]
    assert (chat.max_tokens, chat.temperature, chat.stop, chat.stream) == (0, 0, "x", True)
    assert chat.requested_max_tokens() == 0


def chat_answer() -> bytes:
    return (
        ChatCompletionResponse(
            id="chatcmpl-7",
            created=5,
            model="m",
            choices=[ChatChoice(message=AssistantMessage(content="Paris"), finish_reason="stop")],
            usage=Usage(prompt_tokens=4, completion_tokens=1, total_tokens=5),
        )
        .model_dump_json()
        .encode()
    )


def test_a_unary_answer_in_the_completions_shape_with_echo() -> None:
    shape = CompletionFromChat(CompletionRequest(model="m", prompt="Q: ", echo=True))
    body = json.loads(shape.reply(chat_answer()))
    assert body["object"] == "text_completion" and body["id"] == "cmpl-7" and body["created"] == 5
    assert body["choices"] == [{"index": 0, "text": "Q: Paris", "finish_reason": "stop", "logprobs": None}]
    assert body["usage"]["total_tokens"] == 5
    assert AS_SERVED.reply(chat_answer()) == chat_answer()


def test_stream_events_in_the_completions_shape() -> None:
    shape = CompletionFromChat(CompletionRequest(model="m", prompt="Q: ", echo=True, stream=True))
    base = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 5, "model": "m"}
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Pa"}, "finish_reason": None}]}
    last = {**base, "choices": [{"index": 0, "delta": {"content": "ris"}, "finish_reason": "stop"}]}
    usage = {**base, "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}
    error = 'data: {"error": {"message": "boom"}}\n\n'
    out = [shape.event(f"data: {json.dumps(c)}\n\n") for c in (first, last, usage)]
    chunks = [json.loads(e[6:]) for e in out]
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["Q: Pa", "ris"]
    assert chunks[1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[0]
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["total_tokens"] == 5
    assert all(c["object"] == "text_completion" and c["id"] == "cmpl-7" for c in chunks)
    assert shape.event(error) == error
