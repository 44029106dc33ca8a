"""Loading an adapter at run time: the request's checks, each refusal naming its field, and the model it becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import parse_config
from app.errors import InvalidRequest
from app.serving.adapter_admin import LoadLoraAdapter, plan_load
from app.serving.adapters import AdapterRef
from tests.fakes import fake_adapter_folder, fake_base_folder


def graph(base: Path, *lora_versions: str) -> Any:
    versions = [
        {"version": v, "engine": "transformers", "weights": {"path": str(base)}, "lora": {"max_rank": 8}}
        for v in lora_versions
    ]
    plain = {"version": "plain", "engine": "transformers", "weights": {"path": str(base)}}
    return parse_config({"models": [{"name": "m", "role": "chat", "versions": [*versions, plain]}]})


def load(name: str, path: Path, base: str | None = None) -> LoadLoraAdapter:
    return LoadLoraAdapter(lora_name=name, lora_path=str(path), base_model=base)


def test_a_runtime_adapter_becomes_a_model_on_its_base(tmp_path: Path) -> None:
    config = graph(fake_base_folder(tmp_path / "base"), "v1")
    entry = plan_load(config, load("ft", fake_adapter_folder(tmp_path / "ft")), loaded=[])
    assert (entry.base_model, entry.base_version, entry.rank) == ("m", "v1", 8)
    model = entry.model(config)
    (version,) = model.versions
    assert model.name == "ft" and version.adapter is not None and version.adapter.base == "m/v1"
    assert entry.ref(config) == AdapterRef("ft:v1", str(tmp_path / "ft"), "ft")


@pytest.mark.parametrize(
    ("name", "base", "param", "message"),
    [
        ("m", None, "lora_name", "already exists"),
        ("taken", None, "lora_name", "already exists"),
        ("ft", "nope", "base_model", "'nope' is not a configured model"),
        ("ft", "m/v9", "base_model", "'m/v9' is not a configured model"),
        ("ft", "m/plain", "base_model", "m/plain does not serve adapters"),
    ],
)
def test_a_load_is_refused_naming_the_field(
    tmp_path: Path, name: str, base: str | None, param: str, message: str
) -> None:
    config = graph(fake_base_folder(tmp_path / "base"), "v1")
    with pytest.raises(InvalidRequest, match=message) as refused:
        plan_load(config, load(name, fake_adapter_folder(tmp_path / "ft"), base), loaded=["taken"])
    assert refused.value.param == param


def test_the_base_must_be_named_where_several_versions_serve_adapters(tmp_path: Path) -> None:
    config = graph(fake_base_folder(tmp_path / "base"), "v1", "v2")
    with pytest.raises(InvalidRequest, match=r"\['m/v1', 'm/v2'\]"):
        plan_load(config, load("ft", fake_adapter_folder(tmp_path / "ft")), loaded=[])
    assert plan_load(config, load("ft", tmp_path / "ft", "m/v2"), loaded=[]).base_version == "v2"
    assert plan_load(config, load("ft", tmp_path / "ft", "m"), loaded=[]).base_version == "v1"  # the stable one


def test_adapter_files_that_do_not_fit_are_refused_on_lora_path(tmp_path: Path) -> None:
    config = graph(fake_base_folder(tmp_path / "base"), "v1")
    with pytest.raises(InvalidRequest, match="ft") as refused:
        plan_load(config, load("ft", fake_adapter_folder(tmp_path / "ft", rank=32)), loaded=[])
    assert refused.value.param == "lora_path"
    with pytest.raises(InvalidRequest) as absent:
        plan_load(config, load("ft", tmp_path / "none"), loaded=[])
    assert absent.value.param == "lora_path"
