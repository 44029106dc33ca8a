import pytest
from pydantic import ValidationError

from app.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    CompletionRequest,
    EmbeddingRequest,
)

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_defaults_follow_the_spec() -> None:
    request = chat()
    assert (request.temperature, request.top_p, request.n, request.stream) == (1.0, 1.0, 1, False)
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x"}).max_tokens == 16


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 17}, "n"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),  # no tools to call
        ({"tool_choice": {"type": "function", "function": {"name": "g"}}, "tools": [TOOL]}, "tool_choice"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
            "response_format",
        ),
        ({"temperature": -0.1}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f g"}}]}, "tools"),
        ({"messages": []}, "messages"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # only with stream: true
        ({"surprise": None}, "surprise"),  # a null does not make an unknown field known
    ],
)
def test_invalid_fields_are_rejected(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        chat(**fields)
    assert err.value.errors()[0]["loc"][0] == field


def test_content_parts_and_max_completion_tokens() -> None:
    request = chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        max_tokens=5,
        max_completion_tokens=7,
    )
    assert request.messages[0].text() == "ab"
    assert request.requested_max_tokens() == 7
    assert chat(stop="x").stop_sequences() == ("x",)


def test_embedding_input_rules() -> None:
    assert EmbeddingRequest.model_validate({"model": "e", "input": "a"}).inputs() == ["a"]
    assert EmbeddingRequest.model_validate({"model": "e", "input": [101, 7592]}).inputs() == [[101, 7592]]
    assert EmbeddingRequest.model_validate({"model": "e", "input": [[1], [2, 3]]}).inputs() == [[1], [2, 3]]
    for bad in ([], [""], "", ["a", 1], [[]], [-1], [1.5]):
        with pytest.raises(ValidationError):
            EmbeddingRequest.model_validate({"model": "e", "input": bad})


def test_stream_delta_omits_unset_fields() -> None:
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChatChunkChoice(delta=ChatDelta(content="x"))])
    dumped = chunk.model_dump()
    assert dumped["choices"][0]["delta"] == {"content": "x"}
    assert dumped["choices"][0]["finish_reason"] is None


def test_null_means_the_default() -> None:
    request = chat(temperature=None, top_p=None, n=None, stream=None, logprobs=None, tools=None, seed=None)
    assert (request.temperature, request.top_p, request.n, request.stream, request.seed) == (1.0, 1.0, 1, False, None)
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": None}).max_tokens == 16
    for schema, required in ((CompletionRequest, "prompt"), (EmbeddingRequest, "input")):
        with pytest.raises(ValidationError) as err:  # a required field stays required
            schema.model_validate({"model": "m", required: None})
        assert err.value.errors()[0]["loc"][0] == required


@pytest.mark.parametrize(
    "message, where, words",
    [
        ({"role": "user"}, ("messages", 0, "content"), "needs content"),
        ({"role": "user", "content": []}, ("messages", 0, "content"), "empty"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, ("messages", 0, "content"), "input_audio"),
        ({"role": "assistant", "tool_calls": [{"id": "c"}]}, ("messages", 0, "tool_calls", 0, "function"), "Field"),
        ({"role": "tool", "content": "x"}, ("messages", 0), "tool_call_id"),
        ({"role": "user", "content": "x", "tool_calls": []}, ("messages", 0), "only allowed on assistant"),
        ({"role": "function", "content": "x"}, ("messages", 0, "role"), "'tool'"),
    ],
)
def test_unsupported_messages_name_the_place(message: dict[str, object], where: tuple[object, ...], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        chat(messages=[message])
    first = err.value.errors()[0]
    assert first["loc"] == where and words in first["msg"]


def test_replayed_assistant_messages_with_null_fields_are_accepted() -> None:
    replay = {"role": "assistant", "content": "Paris.", "refusal": None, "tool_calls": None, "audio": None}
    request = chat(messages=[{"role": "user", "content": "capital?"}, replay])
    assert request.messages[1].text() == "Paris."
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage
