"""A request for an adapter on its base's replica: the request under the adapter's name, the answer under the
model's, the adapter loaded once its files fit the base, and unloaded when Serve's multiplexer lets it go."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from app.config import parse_config
from app.errors import InvalidRequest
from app.protocol import ChatCompletionRequest, EngineAnswer
from app.serving.adapters import AdapterLoader, AdapterRef, answered_as, configured_adapters, event_as, for_adapter
from tests.fakes import fake_adapter_folder, fake_base_folder
from tests.unit.config.samples import chat_version

ADAPTER = AdapterRef("m:v2", "/adapters/a", "m")


class RecordingHost:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self._fail = fail

    async def load_adapter(self, name: str, path: str) -> None:
        self.calls.append(("load", name))
        if self._fail is not None:
            raise self._fail

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))


def test_the_engine_sees_the_adapters_name_and_the_client_gets_the_models() -> None:
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert for_adapter(request, ADAPTER).model == "m:v2" and request.model == "m"
    answer = EngineAnswer.model_validate({"id": "x", "model": "m:v2", "choices": []})
    assert answered_as(answer, ADAPTER).model_dump()["model"] == "m"
    event = 'data: {"id":"1","model":"m:v2","choices":[]}data: {"model":"m:v2"}'
    assert event_as(event, ADAPTER) == 'data: {"id":"1","model":"m","choices":[]}data: {"model":"m"}'
    assert event_as('data: {"model":"m:v22"}', ADAPTER) == 'data: {"model":"m:v22"}'  # only the exact name


def test_configured_adapters_are_found_by_model_and_version(tmp_path: Path) -> None:
    versions = [
        chat_version(lora={}),
        {"version": "v2", "engine": "transformers", "weights": {"path": "/a"}, "adapter": {"base": "v1", "rank": 8}},
    ]
    config = parse_config({"models": [{"name": "m", "role": "chat", "versions": versions}]})
    assert configured_adapters(config) == {("m", "v2"): AdapterRef("m:v2", "/a", "m")}


def test_an_adapter_loads_once_its_files_fit_and_unloads_when_released(tmp_path: Path) -> None:
    host = RecordingHost()
    loader = AdapterLoader(host, fake_base_folder(tmp_path / "base"), max_rank=8)
    ref = AdapterRef("m:v2", str(fake_adapter_folder(tmp_path / "a")), "m")

    async def scenario() -> None:
        loaded = await loader.load(ref)
        assert loader.loaded == {"m:v2"}
        await asyncio.to_thread(loaded.__del__)  # as Serve's multiplexer unloads it, from a worker thread
        assert loaded.unloading is not None
        await asyncio.wrap_future(loaded.unloading)
        loaded.__del__()  # the garbage collector's later call does nothing more
        del loaded
        gc.collect()

    asyncio.run(scenario())
    assert host.calls == [("load", "m:v2"), ("unload", "m:v2")]
    assert loader.loaded == set()


@pytest.mark.parametrize(("rank", "targets", "named"), [(16, ("q_proj",), "16"), (8, ("gate_proj",), "gate_proj")])
def test_an_adapter_that_does_not_fit_its_base_is_refused_before_the_engine_sees_it(
    tmp_path: Path, rank: int, targets: tuple[str, ...], named: str
) -> None:
    host = RecordingHost()
    loader = AdapterLoader(host, fake_base_folder(tmp_path / "base"), max_rank=8)
    ref = AdapterRef("m:v2", str(fake_adapter_folder(tmp_path / "a", rank, targets)), "m")
    with pytest.raises(InvalidRequest, match=named):
        asyncio.run(loader.load(ref))
    assert host.calls == [] and loader.loaded == set()


def test_an_engine_failure_to_load_is_a_client_error_naming_the_model(tmp_path: Path) -> None:
    host = RecordingHost(fail=OSError("bad safetensors"))
    loader = AdapterLoader(host, fake_base_folder(tmp_path / "base"), max_rank=8)
    ref = AdapterRef("m:v2", str(fake_adapter_folder(tmp_path / "a")), "m")
    with pytest.raises(InvalidRequest, match=r"'m' could not be loaded: bad safetensors"):
        asyncio.run(loader.load(ref))
    assert loader.loaded == set()
