"""build_chat_backend: the engine and the service a chat version's settings name, with the engines' own loaders
replaced by test doubles (no weights, no vLLM engine)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.config import ModelConfig
from app.engines import factory
from app.engines.transformers_chat import Submit
from app.errors import ErrorInfo
from app.observability.metering import metering
from app.protocol import ChatCompletionRequest, ChatCompletionResponse
from tests.fakes import CharTokenizer, ScriptedEngine

WEIGHTS = Path("/weights/m")


def chat_model(engine: str, **version: Any) -> ModelConfig:
    settings = {"version": "v1", "engine": engine, "weights": {"path": str(WEIGHTS)}, **version}
    return ModelConfig.model_validate({"name": "m", "role": "chat", "versions": [settings]})


def ask(max_tokens: int) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return ChatCompletionRequest.model_validate(body)


async def test_a_vllm_version_serves_through_vllm_started_with_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, Any] = {}
    vllm = object()

    async def start(argv: list[str], max_output_tokens: int, prefix_cache: Callable[[int, int], None] | None) -> Any:
        started.update(argv=argv, max_output_tokens=max_output_tokens, prefix_cache=prefix_cache)
        return vllm

    monkeypatch.setattr(factory.VllmChat, "start", start)
    model = chat_model("vllm", max_model_len=512, max_output_tokens=128)

    def report(queried: int, hit: int) -> None:
        return None

    backend = await factory.build_chat_backend(model, model.versions[0], WEIGHTS, prefix_cache=report)
    assert backend.engine is vllm and backend.service is vllm
    flags = dict(itertools.pairwise(started["argv"]))
    assert (flags["--model"], flags["--served-model-name"], flags["--max-model-len"]) == (str(WEIGHTS), "m", "512")
    assert started["max_output_tokens"] == 128 and started["prefix_cache"] is report


async def test_a_transformers_version_serves_through_the_generation_service(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[Path, str, Submit | None]] = []

    def load(path: Path, *, device: str, submit: Submit | None) -> ScriptedEngine:
        built.append((path, device, submit))
        return ScriptedEngine("Paris is the capital of France")

    monkeypatch.setattr(factory, "TransformersChatEngine", load)
    monkeypatch.setattr(factory, "HFTokenizer", lambda path: CharTokenizer())
    model = chat_model("transformers", device="cpu", max_model_len=256, max_output_tokens=4)

    async def submit(call: Any) -> Any:
        raise AssertionError("the scripted engine never submits")

    backend = await factory.build_chat_backend(model, model.versions[0], WEIGHTS, submit=submit)
    assert built == [(WEIGHTS, "cpu", submit)]
    with metering() as meter:
        answer = await backend.service.create(ask(max_tokens=3))
    assert isinstance(answer, ChatCompletionResponse) and answer.choices[0].message.content == "Paris is the"
    assert meter.completion_tokens == 3 and meter.prompt_tokens == answer.usage.prompt_tokens  # metered engine
    assert backend.engine.stats.finished == 1
    over = await backend.service.create(ask(max_tokens=5))  # over the version's max_output_tokens
    assert isinstance(over, ErrorInfo) and over.status == 400 and over.param == "max_tokens"


@pytest.mark.parametrize(("engine", "role"), [("sentence-transformers", "embedding"), ("cross-encoder", "rerank")])
async def test_an_encoder_engine_cannot_serve_chat(engine: str, role: str) -> None:
    settings = {"version": "v1", "engine": engine, "weights": {"path": str(WEIGHTS)}}
    model = ModelConfig.model_validate({"name": "e", "role": role, "versions": [settings]})
    with pytest.raises(ValueError, match="cannot serve chat"):
        await factory.build_chat_backend(model, model.versions[0], WEIGHTS)
