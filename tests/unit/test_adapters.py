"""The start-up checks of a LoRA adapter's files against its base, on tiny folders: an adapter_config.json, an empty
weights file, and a base whose safetensors file is only a header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.adapters import AdapterFiles, AdapterMismatch, base_modules, check_adapter, read_adapter

LAYER = "model.layers.{}.self_attn.{}"


def adapter(folder: Path, weights: str | None = "adapter_model.safetensors", **config: Any) -> Path:
    folder.mkdir(parents=True)
    document = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]} | config
    (folder / "adapter_config.json").write_text(json.dumps(document))
    if weights is not None:
        (folder / weights).write_bytes(b"")  # its tensors are not read
    return folder


def safetensors_header(path: Path, tensors: dict[str, list[int]], metadata: bool = True) -> Path:
    header: dict[str, Any] = {
        name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()
    }
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    return path


def base(folder: Path, layers: int = 2) -> Path:
    """A Llama-like base: attention and MLP projections per layer, norms, embeddings."""
    folder.mkdir(parents=True)
    tensors = {"model.embed_tokens.weight": [32, 4], "model.norm.weight": [4]}
    for i in range(layers):
        tensors |= {f"{LAYER.format(i, p)}.weight": [4, 4] for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
        tensors |= {f"model.layers.{i}.mlp.{p}.weight": [4, 4] for p in ("gate_proj", "up_proj", "down_proj")}
        tensors[f"model.layers.{i}.input_layernorm.weight"] = [4]
    safetensors_header(folder / "model.safetensors", tensors)
    return folder


# --- read_adapter ------------------------------------------------------------------------------------------


def test_an_adapter_s_rank_and_target_modules_are_read(tmp_path: Path) -> None:
    assert read_adapter(adapter(tmp_path / "a")) == AdapterFiles(8, frozenset({"q_proj", "v_proj"}))


def test_the_largest_per_module_rank_is_the_adapter_s_rank(tmp_path: Path) -> None:
    files = read_adapter(adapter(tmp_path / "a", r=8, rank_pattern={"q_proj": 32, "v_proj": 4}))
    assert files.rank == 32
    assert read_adapter(adapter(tmp_path / "b", r=16, rank_pattern={"v_proj": 4})).rank == 16


def test_a_string_of_target_modules_is_a_regex_on_full_names(tmp_path: Path) -> None:
    files = read_adapter(adapter(tmp_path / "a", target_modules=r".*\.(q|v)_proj"))
    assert files == AdapterFiles(8, frozenset({r".*\.(q|v)_proj"}), pattern=True)
    assert files.matches(r".*\.(q|v)_proj", LAYER.format(0, "q_proj"))
    assert not files.matches(r".*\.(q|v)_proj", LAYER.format(0, "k_proj"))
    assert not files.matches(r"(q|v)_proj", LAYER.format(0, "q_proj"))  # a full match, not a search


def test_a_plain_target_matches_the_last_components_of_a_module_s_name() -> None:
    files = AdapterFiles(8, frozenset({"q_proj", "self_attn.v_proj"}))
    module = LAYER.format(3, "q_proj")
    assert files.matches("q_proj", module) and files.matches("self_attn.v_proj", LAYER.format(3, "v_proj"))
    assert files.matches(module, module)
    assert not files.matches("proj", module)  # whole components only, as peft matches
    assert files.unmatched([module]) == ["self_attn.v_proj"]


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"r": 0}, r"has no rank `r` \(a positive integer\): 0"),
        ({"r": "8"}, r"has no rank `r` .*'8'"),
        ({"r": True}, r"has no rank `r`"),
        ({"rank_pattern": {"q_proj": -1}}, "rank_pattern that is not a map to positive integers"),
        ({"target_modules": []}, r"has no target_modules .*\[\]"),
        ({"target_modules": None}, "has no target_modules"),
        ({"peft_type": "IA3"}, "is a 'IA3' adapter, not LoRA"),
    ],
)
def test_an_unusable_adapter_config_is_named(tmp_path: Path, config: dict[str, Any], named: str) -> None:
    folder = adapter(tmp_path / "a", **config)
    with pytest.raises(AdapterMismatch, match=named) as err:
        read_adapter(folder)
    assert str(folder / "adapter_config.json") in str(err.value)


def test_a_missing_or_broken_adapter_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterMismatch, match=f"no adapter_config.json in {tmp_path / 'empty'}"):
        read_adapter(tmp_path / "empty")
    broken = adapter(tmp_path / "broken")
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterMismatch, match=f"cannot read {broken / 'adapter_config.json'}: Expecting"):
        read_adapter(broken)
    (broken / "adapter_config.json").write_text("[8]")
    with pytest.raises(AdapterMismatch, match="is not a JSON object"):
        read_adapter(broken)


# --- base_modules ------------------------------------------------------------------------------------------


def test_a_base_s_modules_are_its_2d_weights_by_name(tmp_path: Path) -> None:
    modules = base_modules(base(tmp_path / "base", layers=1))
    assert LAYER.format(0, "q_proj") in modules and "model.layers.0.mlp.down_proj" in modules
    assert "model.embed_tokens" in modules
    assert "model.norm" not in modules and "model.layers.0.input_layernorm" not in modules  # 1-D: not Linear
    assert "__metadata__" not in modules and not any(m.endswith(".weight") for m in modules)
    assert len(modules) == 8


def test_a_sharded_base_s_modules_come_from_every_shard(tmp_path: Path) -> None:
    folder = tmp_path / "base"
    folder.mkdir()
    safetensors_header(folder / "model-00001-of-00002.safetensors", {f"{LAYER.format(0, 'q_proj')}.weight": [4, 4]})
    safetensors_header(
        folder / "model-00002-of-00002.safetensors", {"lm_head.weight": [32, 4], "lm_head.bias": [32]}, metadata=False
    )
    assert base_modules(folder) == {LAYER.format(0, "q_proj"), "lm_head"}


def test_a_base_without_readable_safetensors_is_named(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(AdapterMismatch, match=f"the base at {tmp_path / 'none'} has no \\*.safetensors files"):
        base_modules(tmp_path / "none")
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "model.safetensors").write_bytes(b"\1\0")
    with pytest.raises(AdapterMismatch, match="shorter than its 8-byte header length"):
        base_modules(tmp_path / "short")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.safetensors").write_bytes((100).to_bytes(8, "little") + b"{}")
    with pytest.raises(AdapterMismatch, match="is truncated: its header says 100 bytes, 2 follow"):
        base_modules(tmp_path / "cut")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "model.safetensors").write_bytes((4).to_bytes(8, "little") + b"nope")
    with pytest.raises(AdapterMismatch, match="its header is not JSON"):
        base_modules(tmp_path / "text")


# --- check_adapter -----------------------------------------------------------------------------------------


def test_an_adapter_that_fits_its_base_passes(tmp_path: Path) -> None:
    folder = base(tmp_path / "base")
    four = ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert check_adapter("a", adapter(tmp_path / "a"), folder, max_rank=8).rank == 8
    files = check_adapter("b", adapter(tmp_path / "b", "adapter_model.bin", r=16, target_modules=four), folder, 16)
    assert files == AdapterFiles(16, frozenset(four))
    regex = adapter(tmp_path / "c", target_modules=r"model\.layers\.\d+\.mlp\.(gate|up)_proj")
    assert check_adapter("c", regex, folder, 8).pattern
    assert check_adapter("d", adapter(tmp_path / "d", target_modules="all-linear"), folder, 8).pattern is False


def test_an_adapter_without_its_config_or_weights_is_named(tmp_path: Path) -> None:
    folder = base(tmp_path / "base")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(AdapterMismatch, match=r"^adapter my-lora:v2: no adapter_config.json in "):
        check_adapter("my-lora:v2", tmp_path / "nothing", folder, 16)
    with pytest.raises(
        AdapterMismatch, match=r"^adapter my-lora:v2: no adapter weights in .*adapter_model.safetensors"
    ):
        check_adapter("my-lora:v2", adapter(tmp_path / "config-only", weights=None), folder, 16)


def test_a_rank_above_the_limit_is_named_with_both_numbers(tmp_path: Path) -> None:
    folder = base(tmp_path / "base")
    with pytest.raises(
        AdapterMismatch, match=r"^adapter big: its rank 32 \(in .*adapter_config.json\) is above the max_rank 16"
    ):
        check_adapter("big", adapter(tmp_path / "big", r=32), folder, 16)
    with pytest.raises(AdapterMismatch, match=r"its rank 64 .* above the max_rank 16"):
        check_adapter("pattern", adapter(tmp_path / "pattern", r=8, rank_pattern={"v_proj": 64}), folder, 16)


def test_targets_the_base_lacks_are_listed_with_some_the_base_has(tmp_path: Path) -> None:
    folder = base(tmp_path / "base")
    lora = adapter(tmp_path / "a", target_modules=["q_proj", "query_key_value", "c_attn"])
    with pytest.raises(AdapterMismatch) as err:
        check_adapter("gpt-style", lora, folder, 16)
    message = str(err.value)
    assert message.startswith(f"adapter gpt-style: the base at {folder} has no module matching its target modules ")
    assert "c_attn, query_key_value (" in message and "q_proj (" not in message
    assert message.endswith(
        "(the base has down_proj, embed_tokens, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj)"
    )
    regex = adapter(tmp_path / "r", target_modules=r".*\.attn\.c_proj")
    with pytest.raises(AdapterMismatch, match=r"its target module pattern .*\\.attn\\.c_proj \(the base has "):
        check_adapter("regex", regex, folder, 16)


def test_the_base_s_files_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "hubless").mkdir()
    with pytest.raises(AdapterMismatch, match=r"^adapter a: the base at .*hubless has no \*\.safetensors files"):
        check_adapter("a", adapter(tmp_path / "a"), tmp_path / "hubless", 16)


def test_many_base_modules_are_shown_a_few_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "base"
    folder.mkdir()
    safetensors_header(folder / "model.safetensors", {f"model.layers.0.m{i:02}.weight": [2, 2] for i in range(12)})
    with pytest.raises(AdapterMismatch, match=r"\(the base has m00, m01, .*, m07 and 4 more\)$"):
        check_adapter("a", adapter(tmp_path / "a"), folder, 16)
