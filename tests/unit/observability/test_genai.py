"""GenAI span attributes: the request's, the response's details, and the text of streamed events."""

from __future__ import annotations

import json

from app.observability.genai import request_attributes, response_details, sse_text
from app.protocol import EmbeddingRequest, EngineAnswer
from tests.unit.observability.helpers import chat_body, paris_reply


def test_request_attributes_follow_the_genai_conventions() -> None:
    attrs = request_attributes(chat_body(max_tokens=9, temperature=0.5, seed=3, stop=["x", "y"]), "chat")
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 9,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 1.0,
        "gen_ai.request.presence_penalty": 0.0,
        "gen_ai.request.frequency_penalty": 0.0,
        "gen_ai.request.seed": 3,
        "gen_ai.request.stop_sequences": ["x", "y"],
    }
    embedding = EmbeddingRequest.model_validate({"model": "e", "input": "a", "encoding_format": "base64"})
    assert request_attributes(embedding, "embeddings")["gen_ai.request.encoding_formats"] == ["base64"]


def test_response_details_and_stream_text() -> None:
    response = paris_reply("chatcmpl-1", prompt_tokens=1)
    assert response_details(response) == ("chatcmpl-1", ("stop",), "Paris")
    chunk = {"choices": [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]}
    assert sse_text(f"data: {json.dumps(chunk)}\n\n") == "Par"
    assert sse_text('data: {"choices": [{"index": 0, "text": "is", "finish_reason": null}]}\n\n') == "is"
    assert sse_text("data: [DONE]\n\n") == "" and sse_text("data: {broken\n\n") == ""
    opening = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    merged = f"data: {json.dumps(opening)}\n\ndata: {json.dumps(chunk)}\n\n"  # a replica's first event
    assert sse_text(merged) == "Par"


def test_details_of_an_engines_own_answer() -> None:
    chat = {
        "id": "c1",
        "choices": [{"index": 0, "message": {"content": "Hi", "tool_calls": []}, "finish_reason": "stop"}],
    }
    assert response_details(EngineAnswer.model_validate(chat)) == ("c1", ("stop",), "Hi")
    calls = {"id": "c2", "choices": [{"index": 0, "message": {"content": None}, "finish_reason": "tool_calls"}]}
    assert response_details(EngineAnswer.model_validate(calls)) == ("c2", ("tool_calls",), "")
    text = {"id": "t", "choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b", "finish_reason": "length"}]}
    assert response_details(EngineAnswer.model_validate(text)) == ("t", ("length",), "ab")
