"""LoRA in the config: `lora` on a base version, `adapter` on a version that runs on a base's replicas, and the
start-up checks of an adapter's files against its base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError, adapter_name, load_config, parse_config
from app.placement import replicas
from tests.fakes import fake_adapter_folder, fake_base_folder
from tests.unit.config.samples import chat_version


def adapter_version(label: str = "v1", base: str = "base/v1", rank: int = 8, **fields: object) -> dict[str, object]:
    return {
        "version": label,
        "engine": "transformers",
        "weights": {"path": "/nonexistent-adapter"},
        "adapter": {"base": base, "rank": rank},
        **fields,
    }


def graph(*adapters: dict[str, object], lora: dict[str, object] | None = None, **base: object) -> dict[str, Any]:
    base_version = chat_version(**({"lora": lora if lora is not None else {}} | base))
    models: list[dict[str, object]] = [{"name": "base", "role": "chat", "versions": [base_version]}]
    models += [{"name": f"a{i}", "role": "chat", "versions": [a]} for i, a in enumerate(adapters)]
    return {"models": models}


def test_an_adapter_runs_on_its_base_and_has_no_replicas_of_its_own() -> None:
    config = parse_config(graph(adapter_version()))
    model = config.models[1]
    base_model, base = config.base_of(model, model.versions[0])
    assert (base_model.name, base.version) == ("base", "v1")
    assert config.parent(model) == "base" and config.parent(config.models[0]) is None
    assert adapter_name(model, model.versions[0]) == "a0:v1"
    names = [r.name for r in replicas(config)]
    assert names == ["ingress #1", "adapter-registry #1", "chat-base-v1 #1"]  # the adapter adds no replica


def test_an_adapter_version_of_the_same_model_is_a_canary_of_its_base() -> None:
    versions = [chat_version(lora={}), adapter_version("v2", base="v1")]
    config = parse_config(
        {"models": [{"name": "m", "role": "chat", "versions": versions, "weights": {"v1": 90, "v2": 10}}]}
    )
    model = config.models[0]
    assert config.base_of(model, model.version("v2"))[1].version == "v1"
    assert config.parent(model) is None


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (graph(adapter_version(base="nope/v1")), "its base 'nope/v1' is not a configured version"),
        (graph(adapter_version(base="base/v9")), "its base 'base/v9' is not a configured version"),
        (graph(adapter_version(rank=32)), "has rank 32, above its base base@v1's lora.max_rank 16"),
        (graph(adapter_version(engine="vllm")), "names engine 'vllm', but its base base@v1 runs on 'transformers'"),
        (graph(adapter_version(num_replicas=2)), r"\['num_replicas'\] do not apply"),
    ],
)
def test_a_misconfigured_adapter_is_named(document: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config(document)


def test_an_adapter_needs_a_base_that_sets_lora() -> None:
    document = graph(adapter_version())
    del document["models"][0]["versions"][0]["lora"]
    with pytest.raises(ConfigError, match=r"its base base@v1 does not set lora"):
        parse_config(document)


def test_lora_needs_a_chat_engine_and_a_rank_vllm_takes() -> None:
    with pytest.raises(ConfigError, match="max_rank"):
        parse_config(graph(lora={"max_rank": 12}))
    with pytest.raises(ConfigError, match="an adapter: it cannot serve adapters itself"):
        parse_config(graph(adapter_version(lora={})))
    encoder = {"version": "v1", "engine": "sentence-transformers", "weights": {"path": "/x"}, "lora": {}}
    with pytest.raises(ConfigError, match="LoRA needs a chat engine"):
        parse_config({"models": [{"name": "e", "role": "embedding", "versions": [encoder]}]})


def test_start_up_checks_the_adapter_files_against_the_base(tmp_path: Path) -> None:
    base = fake_base_folder(tmp_path / "base")

    def load(folder: Path, rank: int) -> None:
        load_config(graph(adapter_version(weights={"path": str(folder)}, rank=rank), weights={"path": str(base)}))

    load(fake_adapter_folder(tmp_path / "good", 8, ["q_proj", "v_proj"]), 8)
    with pytest.raises(ConfigError, match=r"a0@v1.*rank is 8 in .*adapter_config.json, but adapter.rank says 16"):
        load(tmp_path / "good", 16)
    with pytest.raises(ConfigError, match=r"a0@v1.*gate_proj"):
        load(fake_adapter_folder(tmp_path / "mlp", 8, ["gate_proj"]), 8)
