"""The default graph's LoRA adapters against vLLM's own server started as the graph's `lora` version runs, with the
same adapters as `--lora-modules`: the same answers at temperature 0, under the adapter's name."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.test_default_graph import ADAPTERS, QUESTION
from tests.e2e.test_parity import _content, vllm_server_like

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def vllm_lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with vllm_server_like("lora", tmp_path_factory) as base:
        yield base


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_adapter_answers_what_vllm_answers_with_it(default_graph: str, vllm_lora_server: str, adapter: str) -> None:
    for messages in (QUESTION, [{"role": "user", "content": "Write a haiku about the sea."}]):
        body = {"model": adapter, "temperature": 0, "messages": messages, "max_tokens": 24}
        ours = httpx.post(f"{default_graph}/v1/chat/completions", json=body, timeout=120)
        theirs = httpx.post(f"{vllm_lora_server}/v1/chat/completions", json=body, timeout=120)
        assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
        assert ours.headers["x-served-by"] == f"{adapter}@v1"
        assert _content(ours.json()) == _content(theirs.json())
        assert ours.json()["model"] == adapter


def test_the_models_list_names_each_adapters_parent_as_vllm_does(default_graph: str, vllm_lora_server: str) -> None:
    ours = {m["id"]: m for m in httpx.get(f"{default_graph}/v1/models", timeout=30).json()["data"]}
    theirs = {m["id"]: m for m in httpx.get(f"{vllm_lora_server}/v1/models", timeout=30).json()["data"]}
    assert {name: ours[name]["parent"] for name in ADAPTERS} == {name: theirs[name]["parent"] for name in ADAPTERS}
