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
        ({"n": 2}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": []}, "tools"),
        ({"messages": []}, "messages"),
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
    assert EmbeddingRequest.model_validate({"model": "e", "input": "a"}).texts() == ["a"]
    for bad in ([], [""], ""):
        with pytest.raises(ValidationError):
            EmbeddingRequest.model_validate({"model": "e", "input": bad})


def test_stream_delta_omits_unset_fields() -> None:
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChatChunkChoice(delta=ChatDelta(content="x"))])
    dumped = chunk.model_dump()
    assert dumped["choices"][0]["delta"] == {"content": "x"}
    assert dumped["choices"][0]["finish_reason"] is None
