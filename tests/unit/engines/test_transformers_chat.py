import json
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.engines.base import SamplingSettings
from app.engines.transformers_chat import GenerationCall, TransformersChatEngine, fewest_tokens
from app.errors import InvalidRequest, NotFound, ServiceUnavailable
from app.observability.metering import MeteredChatEngine
from app.protocol import CompletionRequest, CompletionResponse
from app.serving.generation import GenerationService, Limits
from app.tokenizer import HFTokenizer
from tests.tiny_models import build_tiny_chat_model, build_tiny_lora_adapter


def test_fewest_tokens_finds_the_first_prefix_that_reaches_the_stop() -> None:
    for first in range(0, 40):
        asked: list[int] = []

        def reaches(k: int, first: int = first, asked: list[int] = asked) -> bool:
            asked.append(k)
            return k >= first

        assert fewest_tokens(40, reaches) == first
        assert len(asked) <= 6  # log2(40) decodes, not one per prefix


def test_transformers_penalties_follow_openais_formula() -> None:
    import torch

    from app.engines.transformers_chat import Penalties

    prompt = [[5, 5], [5, 5]]  # prompt tokens do not count, only generated ones
    generated = [[1, 1, 2], [1, 1, 2]]
    ids = torch.tensor([p + g for p, g in zip(prompt, generated, strict=True)])
    scores = torch.zeros(2, 6)
    out = Penalties(2, [(0.5, 0.25), (0.0, 0.0)], "cpu")(ids, scores)
    # row 0: token 1 seen twice -> 0.25*2 + 0.5; token 2 once -> 0.25 + 0.5; token 5 is only in the prompt
    assert out[0].tolist() == [0.0, -1.0, -0.75, 0.0, 0.0, 0.0]
    assert out[1].tolist() == [0.0] * 6


# ---- LoRA adapters, on the tiny chat model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny chat model, two adapters (different seeds and targets), and broken adapters to refuse."""
    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_chat_model(root / "chat")
    paths = {
        "base": base,
        "a": build_tiny_lora_adapter(base, root / "a"),
        "b": build_tiny_lora_adapter(base, root / "b", seed=1, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
    }

    def broken(name: str, change: Callable[[dict[str, Any]], object]) -> None:
        shutil.copytree(paths["a"], root / name)
        config = json.loads((root / name / "adapter_config.json").read_text())
        change(config)
        (root / name / "adapter_config.json").write_text(json.dumps(config))
        paths[name] = root / name

    broken("nope", lambda c: c.update(target_modules=["nope_proj"]))
    # peft adds rank-8 layers, then the rank-4 weights do not fit them: a failure after the model was changed
    broken("rank", lambda c: c.update(r=8))
    broken("ia3", lambda c: c.update(peft_type="IA3"))
    (root / "garbled").mkdir()
    (root / "garbled" / "adapter_config.json").write_text("{not json")
    paths["garbled"] = root / "garbled"
    paths["missing"] = root / "missing"
    return paths


@pytest.fixture
def engine(tiny: dict[str, Path]) -> TransformersChatEngine:
    return TransformersChatEngine(tiny["base"], device="cpu")


GREEDY = SamplingSettings(max_tokens=6, temperature=0.0)


def prompts(engine: TransformersChatEngine) -> list[tuple[int, ...]]:
    """Two prompts of different lengths, so a batch of them is left-padded."""
    return [tuple(engine._tok.encode(text)) for text in ("Hello, world! It is", "The cat reads a book today. Why?")]


def greedy(engine: TransformersChatEngine, adapter: str | None = None) -> list[str]:
    """Each prompt's greedy text (one batch: the mixed-batch test below shows a batch gives what each gets alone)."""
    return [r.text for r in engine.run_batch([GenerationCall(p, GREEDY, adapter) for p in prompts(engine)])]


@pytest.fixture(scope="module")
def answers(tiny: dict[str, Path]) -> dict[str, list[str]]:
    """What the base model (before any adapter was loaded), `a` and `b` answer: what the tests below expect."""
    engine = TransformersChatEngine(tiny["base"], device="cpu")
    base = greedy(engine)
    engine.load_adapter("a", tiny["a"])
    engine.load_adapter("b", tiny["b"])
    return {"base": base, "a": greedy(engine, "a"), "b": greedy(engine, "b")}


def test_an_adapter_changes_greedy_output_and_two_adapters_differ(
    engine: TransformersChatEngine, tiny: dict[str, Path], answers: dict[str, list[str]]
) -> None:
    base, a, b = answers["base"], answers["a"], answers["b"]
    assert all(text for text in base + a + b)
    for one, other in ((base, a), (base, b), (a, b)):
        assert all(x != y for x, y in zip(one, other, strict=True))
    engine.load_adapter("b", tiny["b"])
    assert engine.adapters == {"b"}
    assert (greedy(engine), greedy(engine, "b")) == (base, b)  # the base is still the base; b alone is b


def test_a_mixed_batch_gives_each_call_the_tokens_it_gets_alone(
    engine: TransformersChatEngine, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.load_adapter("a", tiny["a"])
    engine.load_adapter("b", tiny["b"])
    p, q = prompts(engine)
    calls = [
        GenerationCall(p, GREEDY, None),
        GenerationCall(q, GREEDY, "a"),
        GenerationCall(p, GREEDY, "b"),
        GenerationCall(q, GREEDY, None),
        GenerationCall(p, GREEDY, "a"),
        GenerationCall(q, SamplingSettings(max_tokens=5, temperature=0.0), "b"),  # shorter: still its own length
    ]
    alone = [engine.run_batch([call])[0] for call in calls]
    generates: list[object] = []
    inner = engine._model.generate
    monkeypatch.setattr(engine._model, "generate", lambda **kw: generates.append(kw) or inner(**kw))
    batched = engine.run_batch(calls)
    assert batched == alone
    assert len({r.text for r in batched}) == len(calls)  # six different answers: no row borrowed another's
    assert len(generates) == 1  # base and adapter rows shared one `generate`


def test_unloading_leaves_the_base_and_the_other_adapters(
    engine: TransformersChatEngine, tiny: dict[str, Path], answers: dict[str, list[str]]
) -> None:
    engine.load_adapter("a", tiny["a"])
    engine.load_adapter("b", tiny["b"])
    engine.unload_adapter("a")  # the active one: peft's "active" moves on to b
    assert engine.adapters == {"b"}
    assert (greedy(engine), greedy(engine, "b")) == (answers["base"], answers["b"])
    engine.unload_adapter("b")
    assert engine.adapters == frozenset()
    assert greedy(engine) == answers["base"]
    with pytest.raises(NotFound, match="'b'"):
        engine.unload_adapter("b")
    engine.load_adapter("a", tiny["a"])  # the unwrapped model takes adapters again
    assert greedy(engine, "a") == answers["a"]


def test_loading_a_loaded_adapter_again_is_a_no_op_and_another_path_is_refused(
    engine: TransformersChatEngine, tiny: dict[str, Path], answers: dict[str, list[str]]
) -> None:
    engine.load_adapter("a", tiny["a"])
    engine.load_adapter("a", tiny["a"])
    with pytest.raises(InvalidRequest, match=r"'a' is already loaded from .*unload it first"):
        engine.load_adapter("a", tiny["b"])
    assert engine.adapters == {"a"} and greedy(engine, "a") == answers["a"]


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ("nope", "nope_proj"),
        ("rank", "size mismatch"),
        ("ia3", "only LoRA adapters"),
        ("garbled", "Expecting property name"),
        ("missing", "no adapter_config.json"),
    ],
)
@pytest.mark.parametrize("first", [True, False], ids=["first-adapter", "beside-another"])
@pytest.mark.filterwarnings("ignore:Unexpected keyword arguments:UserWarning")  # peft reading LoRA fields as IA3
def test_a_failed_load_names_the_adapter_and_changes_nothing(
    engine: TransformersChatEngine,
    tiny: dict[str, Path],
    answers: dict[str, list[str]],
    broken: str,
    reason: str,
    first: bool,
) -> None:
    if not first:
        engine.load_adapter("a", tiny["a"])
    before = engine.adapters
    with pytest.raises(InvalidRequest, match=rf"adapter 'bad' could not be loaded from {tiny[broken]}: .*{reason}"):
        engine.load_adapter("bad", tiny[broken])
    assert engine.adapters == before
    assert greedy(engine) == answers["base"]
    if not first:
        assert greedy(engine, "a") == answers["a"]
    engine.load_adapter("bad", tiny["b"])  # nothing of the failed load is left in the way of the name
    assert greedy(engine, "bad") == answers["b"]


async def test_a_call_whose_adapter_was_unloaded_fails_alone(
    engine: TransformersChatEngine, tiny: dict[str, Path], answers: dict[str, list[str]]
) -> None:
    engine.load_adapter("a", tiny["a"])
    engine.unload_adapter("a")
    p, _ = prompts(engine)
    base, gone = engine.run_batch([GenerationCall(p, GREEDY), GenerationCall(p, GREEDY, "a")])
    assert base.error is None and base.text == answers["base"][0]
    assert isinstance(gone.error, ServiceUnavailable) and "'a' is no longer loaded" in gone.error.message
    with pytest.raises(ServiceUnavailable):
        [d async for d in engine.generate(p, GREEDY, "r", adapter="a")]
    assert (engine.stats.started, engine.stats.aborted) == (1, 1)
    engine.load_adapter("a", tiny["a"])
    (delta,) = [d async for d in engine.generate(p, GREEDY, "r", adapter="a")]
    assert delta.text == answers["a"][0]


async def test_generation_service_serves_an_adapter_request_through_the_metered_engine(
    engine: TransformersChatEngine, tiny: dict[str, Path], answers: dict[str, list[str]]
) -> None:
    """The real wiring: service -> MeteredChatEngine -> engine, with the adapter a request's `model` names."""
    engine.load_adapter("a", tiny["a"])
    served = GenerationService(
        model="tiny",
        tokenizer=HFTokenizer(tiny["base"]),
        engine=MeteredChatEngine(engine),
        limits=Limits(max_model_len=256, max_output_tokens=GREEDY.max_tokens),
    )
    texts = {}
    for model in ("tiny", "a"):
        request = CompletionRequest(model=model, prompt="Hello, world! It is", max_tokens=6, temperature=0)
        answer = await served.create(request)
        assert isinstance(answer, CompletionResponse) and answer.model == model
        texts[model] = answer.choices[0].text
    assert (texts["tiny"], texts["a"]) == (answers["base"][0], answers["a"][0])


def test_a_load_waits_for_the_running_batch(
    engine: TransformersChatEngine,
    tiny: dict[str, Path],
    answers: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches and loads run in threads: a load that changed the model under a running `generate` could give that
    batch a half-added adapter, so it waits for the batch to finish."""
    in_batch, release, load_started = threading.Event(), threading.Event(), threading.Event()
    generate, attach = engine._model.generate, engine._attach

    def held_generate(**kw: Any) -> Any:
        in_batch.set()
        release.wait(10)
        return generate(**kw)

    def noted_attach(name: str, path: Path) -> None:
        load_started.set()
        attach(name, path)

    monkeypatch.setattr(engine._model, "generate", held_generate)
    monkeypatch.setattr(engine, "_attach", noted_attach)
    p, _ = prompts(engine)
    with ThreadPoolExecutor(2) as pool:
        batch = pool.submit(engine.run_batch, [GenerationCall(p, GREEDY)])
        assert in_batch.wait(10)
        load = pool.submit(engine.load_adapter, "a", tiny["a"])
        assert not load_started.wait(0.5)  # held off while the batch runs
        release.set()
        (result,) = batch.result(10)
        load.result(10)
    assert engine.adapters == {"a"} and result.text == answers["base"][0]
