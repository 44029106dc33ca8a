"""The tokenizer the ingress counts with (app/tokenizer.py), on the tiny chat model's byte-level BPE tokenizer and
its ChatML template: the text's own tokens, the chat as the model's template renders it, and safe sharing between
request threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import pytest

from app.tokenizer import HFTokenizer
from tests.tiny_models import BOS_TOKEN, EOS_TOKEN, build_tiny_chat_model

CHATML_HI = f"{BOS_TOKEN}user\nhi{EOS_TOKEN}\n{BOS_TOKEN}assistant\n"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
# a template that shows what reached it: the number of tools (or none), then each message
TOOLS_TEMPLATE = (
    "tools: {{ 'none' if tools is none else tools | length }}; "
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '; ' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def chat_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tok") / "chat")


@pytest.fixture(scope="module")
def tokenizer(chat_path: Path) -> HFTokenizer:
    return HFTokenizer(chat_path)


@pytest.fixture(scope="module")
def bos_adding(chat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tokenizer made to add a BOS token to every encoding (as Llama's does), and without an EOS token."""
    from tokenizers import Tokenizer, processors

    out = tmp_path_factory.mktemp("bos-adding")
    bpe = Tokenizer.from_file(str(chat_path / "tokenizer.json"))
    bos = bpe.token_to_id(BOS_TOKEN)
    bpe.post_processor = processors.TemplateProcessing(  # type: ignore[assignment]
        single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, bos)]
    )
    bpe.save(str(out / "tokenizer.json"))
    settings = json.loads((chat_path / "tokenizer_config.json").read_text())
    settings.pop("eos_token")
    (out / "tokenizer_config.json").write_text(json.dumps(settings))
    return out


def test_eos_token_id_is_the_end_of_turn_token_or_none(tokenizer: HFTokenizer, bos_adding: Path) -> None:
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int) and tokenizer.encode(EOS_TOKEN) == [eos]
    assert HFTokenizer(bos_adding).eos_token_id is None


def test_encode_counts_the_texts_own_tokens_without_special_ones(bos_adding: Path, tokenizer: HFTokenizer) -> None:
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(str(bos_adding), local_files_only=True)
    bos = raw.convert_tokens_to_ids(BOS_TOKEN)
    added = raw.encode("hello world")
    assert added[0] == bos  # the tokenizer itself adds a BOS token
    assert HFTokenizer(bos_adding).encode("hello world") == added[1:] == tokenizer.encode("hello world")


def test_encode_and_decode_round_trip(tokenizer: HFTokenizer) -> None:
    ids = tokenizer.encode("hello world")
    assert ids and tokenizer.decode(ids).replace(" ", "") == "helloworld"
    text = "Hi, ünïcode 😀?"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level BPE: every string comes back


def test_decode_leaves_out_special_tokens(tokenizer: HFTokenizer) -> None:
    assert tokenizer.decode(tokenizer.encode(CHATML_HI)) == "user\nhi\nassistant\n"


def test_render_chat_is_the_models_template_with_the_generation_prompt(tokenizer: HFTokenizer) -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.render_chat(messages) == tokenizer.encode(CHATML_HI)
    assert tokenizer.render_chat([MappingProxyType(messages[0])]) == tokenizer.encode(CHATML_HI)  # any mapping
    system = [{"role": "system", "content": "Be brief."}, *messages]
    longer = tokenizer.render_chat(system)
    assert tokenizer.decode(longer) == "system\nBe brief.\nuser\nhi\nassistant\n"
    assert longer[-len(tokenizer.render_chat(messages)) :] == tokenizer.render_chat(messages)


def test_a_given_chat_template_replaces_the_models_and_sees_the_tools(chat_path: Path) -> None:
    custom = HFTokenizer(chat_path, chat_template=TOOLS_TEMPLATE)
    messages = [{"role": "user", "content": "hi"}]
    assert custom.render_chat(messages) == custom.encode("tools: none; user: hi; assistant:")
    assert custom.render_chat(messages, tools=[TOOL]) == custom.encode("tools: 1; user: hi; assistant:")
    assert custom.render_chat(messages, tools=[]) == custom.render_chat(messages)  # no tools is none
    assert HFTokenizer(chat_path).render_chat(messages) == custom.encode(CHATML_HI)  # the model's own is untouched


def test_counts_agree_and_nothing_fails_under_concurrent_counting(tokenizer: HFTokenizer) -> None:
    texts = [("word " * (50 + i)).strip() for i in range(64)]
    expected = [len(tokenizer.render_chat([{"role": "user", "content": t}])) for t in texts]
    with ThreadPoolExecutor(max_workers=32) as pool:
        counted = list(pool.map(lambda t: len(tokenizer.render_chat([{"role": "user", "content": t}])), texts * 8))
    assert counted == expected * 8
