"""The checks the graph runs on a LoRA adapter's files before it serves them on a base model.

An adapter that does not fit its base fails late and far away otherwise: vLLM refuses a rank above
`--max-lora-rank` only when the first request loads it, and peft or vLLM skip or reject target modules the base
does not have. So the graph reads the adapter's `adapter_config.json` and the base's safetensors headers at start-up
and names what is wrong, adapter by adapter.

Pure and cheap: no torch, no peft, no Ray. A base model's module names come from the JSON headers of its
`*.safetensors` files (8 bytes of header length, then the header), never from its tensors.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")  # what peft's save_pretrained writes
ALL_LINEAR = "all-linear"  # peft's shorthand for every Linear layer but the output head
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on a header
_SHOWN_BASE_MODULES = 8


class AdapterMismatch(ValueError):
    """An adapter's files cannot run on its base: missing or unreadable, a rank too large, or target modules the base
    lacks. The message names the adapter and what is wrong."""


@dataclass(frozen=True)
class AdapterFiles:
    """What an adapter's `adapter_config.json` says about the modules it changes.

    `target_modules` holds module names, each matched as peft does against the last components of a module's full
    name (`q_proj` matches `model.layers.0.self_attn.q_proj`). When `pattern` is true it holds one regular
    expression instead (peft's `target_modules` given as a string), matched with `re.fullmatch` against full names.
    """

    rank: int
    target_modules: frozenset[str]
    pattern: bool = False

    def matches(self, target: str, module: str) -> bool:
        """Whether `target` (one of `target_modules`) selects the module with the full name `module`."""
        if self.pattern:
            return re.fullmatch(target, module) is not None
        return module == target or module.endswith("." + target)

    def unmatched(self, modules: Iterable[str]) -> list[str]:
        """The targets that select none of `modules`, sorted."""
        names = list(modules)
        if self.target_modules == {ALL_LINEAR} and not self.pattern:
            return [] if names else [ALL_LINEAR]
        return sorted(t for t in self.target_modules if not any(self.matches(t, m) for m in names))


def read_adapter(path: Path) -> AdapterFiles:
    """The rank and target modules in the adapter folder `path`.

    The rank is the largest of `r` and the values of `rank_pattern` (per-module ranks), which is what a server's
    rank limit has to hold. Raises `AdapterMismatch` when `adapter_config.json` is missing, is not JSON, is not a
    LoRA config, or lacks a usable `r` or `target_modules`.
    """
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise AdapterMismatch(f"no {CONFIG_NAME} in {path}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterMismatch(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterMismatch(f"{config_path} is not a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterMismatch(f"{config_path} is a {peft_type!r} adapter, not LoRA")
    rank = _rank(config, config_path)
    targets = config.get("target_modules")
    if isinstance(targets, str) and targets:
        return AdapterFiles(rank, frozenset({targets}), pattern=targets != ALL_LINEAR)
    if isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets):
        return AdapterFiles(rank, frozenset(targets))
    raise AdapterMismatch(f"{config_path} has no target_modules (a list of module names or a regex): {targets!r}")


def _rank(config: dict[str, Any], config_path: Path) -> int:
    r = config.get("r")
    if not _is_rank(r):
        raise AdapterMismatch(f"{config_path} has no rank `r` (a positive integer): {r!r}")
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict) or not all(_is_rank(v) for v in pattern.values()):
        raise AdapterMismatch(f"{config_path} has a rank_pattern that is not a map to positive integers: {pattern!r}")
    return max([int(r), *(int(v) for v in pattern.values())])


def _is_rank(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def base_modules(path: Path) -> frozenset[str]:
    """The full names of the modules with 2-D weights (Linear layers, and embeddings) in the base model folder
    `path`, from its safetensors headers: `model.layers.0.self_attn.q_proj` for the key
    `model.layers.0.self_attn.q_proj.weight`.

    Raises `AdapterMismatch` when the folder holds no `*.safetensors` file or a header cannot be read.
    """
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise AdapterMismatch(f"the base at {path} has no *.safetensors files to check the adapter against")
    modules: set[str] = set()
    for file in files:
        for key, info in _header(file).items():
            shape = info.get("shape") if isinstance(info, dict) else None
            if key.endswith(".weight") and isinstance(shape, list) and len(shape) == 2:
                modules.add(key.removesuffix(".weight"))
    return frozenset(modules)


def _header(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            prefix = stream.read(8)
            if len(prefix) != 8:
                raise AdapterMismatch(f"{file} is not a safetensors file: shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise AdapterMismatch(f"{file} is not a safetensors file: a header of {length} bytes")
            raw = stream.read(length)
        if len(raw) != length:
            raise AdapterMismatch(f"{file} is truncated: its header says {length} bytes, {len(raw)} follow")
        header = json.loads(raw)
    except OSError as exc:
        raise AdapterMismatch(f"cannot read {file}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterMismatch(f"{file} is not a safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise AdapterMismatch(f"{file} is not a safetensors file: its header is not a JSON object")
    header.pop("__metadata__", None)
    return header


def check_adapter(name: str, adapter_path: Path, base_path: Path, max_rank: int) -> AdapterFiles:
    """The adapter `name`'s files at `adapter_path`, once they are found to run on the base model at `base_path`
    under a rank limit of `max_rank`.

    Raises `AdapterMismatch`, its message naming the adapter, when `adapter_config.json` is missing or unreadable,
    there is no adapter weights file, the rank is above `max_rank`, or a target module matches none of the base's.
    """
    try:
        files = read_adapter(adapter_path)
    except AdapterMismatch as exc:
        raise AdapterMismatch(f"adapter {name}: {exc}") from None
    if not any((Path(adapter_path) / weights).is_file() for weights in WEIGHTS_NAMES):
        raise AdapterMismatch(
            f"adapter {name}: no adapter weights in {adapter_path} (looked for {', '.join(WEIGHTS_NAMES)})"
        )
    if files.rank > max_rank:
        raise AdapterMismatch(
            f"adapter {name}: its rank {files.rank} (in {Path(adapter_path) / CONFIG_NAME}) is above the "
            f"max_rank {max_rank} its base's replicas accept"
        )
    try:
        modules = base_modules(base_path)
    except AdapterMismatch as exc:
        raise AdapterMismatch(f"adapter {name}: {exc}") from None
    missing = files.unmatched(modules)
    if missing:
        kind = "target module pattern" if files.pattern else "target modules"
        raise AdapterMismatch(
            f"adapter {name}: the base at {base_path} has no module matching its {kind} {', '.join(missing)} "
            f"(the base has {_some_of(modules)})"
        )
    return files


def _some_of(modules: frozenset[str]) -> str:
    """A few of the base's modules by their last name (`q_proj`, ...), the way target_modules usually names them."""
    if not modules:
        return "no 2-D weights"
    short = sorted({module.rsplit(".", 1)[-1] for module in modules})
    shown = ", ".join(short[:_SHOWN_BASE_MODULES])
    return shown + (f" and {len(short) - _SHOWN_BASE_MODULES} more" if len(short) > _SHOWN_BASE_MODULES else "")
