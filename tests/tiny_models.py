"""Tiny random-weight models for fast plumbing tests, built in seconds with no downloads.

The tokenizers are made here from a few hundred lines of generated English-ish text with the `tokenizers`
library (BPE trained by its trainer; the WordPiece vocabulary counted directly, see below), so two builds are
byte-identical. The weights are random (`torch.manual_seed(0)`), so the text they generate is nonsense: use these to
test loading, batching, streaming, token counting and error paths, never answers. Anything a user sees by
default runs on the real weights of `app.weights`.

- `build_tiny_chat_model(path)`: a `LlamaForCausalLM` (hidden 64, 2 layers, 4 heads of 32, 2 KV heads, vocabulary
  640, 2048 positions) with a byte-level BPE tokenizer and a ChatML chat template like SmolLM2's
  (`<|im_start|>role\\ncontent<|im_end|>\\n`).
  Head size 32 is one that vLLM's CPU attention supports.
- `build_tiny_embedding_model(path)`: a `BertModel` (hidden 32, 2 layers) with a WordPiece tokenizer, saved as a
  sentence-transformers model (Transformer + mean Pooling, `max_seq_length` 128).
- `build_tiny_lora_adapter(base_path, path)`: a peft LoRA adapter for the tiny chat model at `base_path`, with
  random (seeded) weights large enough that greedy output changes; another seed gives another adapter.

All are idempotent: a folder that already holds the saved model is returned as it is. Each is built in a
temporary folder next to `path` and renamed into place, so a half-built folder never looks finished.
"""

from __future__ import annotations

import os
import random
import shutil
import string
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CHAT_VOCAB_SIZE = 640
CHAT_MAX_POSITIONS = 2048
EMBEDDING_VOCAB_SIZE = 600
EMBEDDING_DIMENSION = 32
EMBEDDING_MAX_SEQ_LENGTH = 128

BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|endoftext|>"

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)

_CHAT_MARKER = "model.safetensors"
_EMBEDDING_MARKER = "modules.json"
_LORA_MARKER = "adapter_model.safetensors"
_LORA_B_SCALE = 2.0

_SUBJECTS = ["the cat", "a model", "my friend", "the server", "this request", "our team", "the river", "a student"]
_VERBS = ["reads", "writes", "answers", "sends", "likes", "counts", "streams", "finds", "builds", "sees"]
_OBJECTS = ["a book", "the tokens", "some water", "the answer", "a message", "the city", "three apples", "the sky"]
_TAILS = ["today", "again", "quickly", "in Paris", "at night", "with care", "for everyone", "before lunch"]
_QUESTIONS = ["What is", "Where is", "Who likes", "Why does", "How many", "Can you tell me"]


def _corpus(lines: int = 400, seed: int = 0) -> Iterator[str]:
    """English-ish sentences, questions and numbers: enough for a BPE or WordPiece vocabulary of a few hundred."""
    rng = random.Random(seed)
    for i in range(lines):
        subject, verb, obj, tail = (rng.choice(words) for words in (_SUBJECTS, _VERBS, _OBJECTS, _TAILS))
        if i % 3 == 0:
            yield f"{rng.choice(_QUESTIONS)} {obj} {tail}? {subject.capitalize()} {verb} it, {rng.randint(0, 999)}."
        else:
            yield f"{subject.capitalize()} {verb} {obj} {tail}. Hello, world! It is {rng.randint(1, 12)} o'clock."


def _is_built(path: Path, marker: str) -> bool:
    return (path / marker).is_file()


def _build_atomically(path: Path, marker: str, build: Callable[[Path], None]) -> Path:
    path = Path(path)
    if _is_built(path, marker):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        build(staging)
        if not _is_built(staging, marker):
            raise RuntimeError(f"building {path.name} wrote no {marker}")
        if _is_built(path, marker):
            return path  # a concurrent build finished first
        if path.exists():
            shutil.rmtree(path)
        staging.chmod(0o755)  # mkdtemp makes it 0700
        try:
            os.rename(staging, path)
        except OSError:
            if not _is_built(path, marker):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def build_tiny_chat_model(path: Path) -> Path:
    """A tiny random Llama chat model with a ChatML template at `path` (built once); returns `path`."""
    return _build_atomically(path, _CHAT_MARKER, _write_tiny_chat_model)


def build_tiny_embedding_model(path: Path) -> Path:
    """A tiny random BERT sentence-transformers model at `path` (built once); returns `path`."""
    return _build_atomically(path, _EMBEDDING_MARKER, _write_tiny_embedding_model)


def build_tiny_lora_adapter(
    base_path: Path,
    path: Path,
    *,
    rank: int = 4,
    seed: int = 0,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
) -> Path:
    """A LoRA adapter (peft's `save_pretrained` layout) for the tiny chat model at `base_path`, built once at `path`;
    returns `path`. A folder that already holds an adapter is returned as it is, whatever it was built with."""

    def write(out: Path) -> None:
        _write_tiny_lora_adapter(Path(base_path), out, rank=rank, seed=seed, target_modules=tuple(target_modules))

    return _build_atomically(path, _LORA_MARKER, write)


def _write_tiny_lora_adapter(
    base_path: Path, out: Path, *, rank: int, seed: int, target_modules: tuple[str, ...]
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_path), local_files_only=True)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=list(target_modules),
        # peft's default zeroes lora_B, so a fresh adapter changes nothing; random A and B do
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                # B @ A then shifts the targeted projections by several times the base weights' 0.02 spread
                weight.mul_(_LORA_B_SCALE)
    model.save_pretrained(str(out))


def tiny_bert_config(tokenizer: Any, **extra: Any) -> Any:
    """The two-layer BERT shape of the tiny embedding model and cross-encoder."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=EMBEDDING_DIMENSION,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_cross_encoder(path: Path) -> Path:
    """A tiny random BERT with one relevance logit (a cross-encoder), sharing the tiny embedding tokenizer."""
    return _build_atomically(path, "config.json", _write_tiny_cross_encoder)


def _write_tiny_cross_encoder(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    with tempfile.TemporaryDirectory(prefix="tiny-embed-", dir=out.parent) as embed:
        tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_embedding_model(Path(embed) / "m")))
    config = tiny_bert_config(tokenizer, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(out))  # type: ignore[no-untyped-call]
    tokenizer.save_pretrained(str(out))


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise RuntimeError(f"{token!r} is not in the vocabulary")
    return token_id


def _write_tiny_chat_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # Byte-level BPE: every string encodes (no unknown token), as with SmolLM2's tokenizer.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=CHAT_VOCAB_SIZE,
        special_tokens=[UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=CHAT_MAX_POSITIONS,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    ids = {name: _token_id(bpe, name) for name in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)}

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=CHAT_MAX_POSITIONS,
        bos_token_id=ids[BOS_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN],
        # Untied: with tied embeddings a random model answers every prompt with the same repeated token, and a
        # test could not tell one request's output from another's.
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=ids[BOS_TOKEN], eos_token_id=ids[EOS_TOKEN], pad_token_id=ids[PAD_TOKEN]
    )
    tokenizer.save_pretrained(str(out))
    model.save_pretrained(str(out))


def _write_tiny_embedding_model(out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertModel, BertTokenizer

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The vocabulary is counted here rather than by `WordPieceTrainer`, whose merges (and so the vocabulary) vary
    # from run to run: special tokens, every character (alone and as a `##` continuation: any ASCII word splits
    # into known pieces), then the words seen, most frequent first.
    counts: Counter[str] = Counter()
    for line in _corpus():
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({char for word in counts for char in word} | set(string.ascii_lowercase + string.digits))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{char}" for char in chars)]
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    vocab += words[: max(0, EMBEDDING_VOCAB_SIZE - len(vocab))]
    # transformers 5's BertTokenizer builds the `tokenizers` WordPiece pipeline (BERT normalizer, pre-tokenizer,
    # [CLS] ... [SEP] template) from the vocabulary.
    tokenizer = BertTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=True,
        model_max_length=EMBEDDING_MAX_SEQ_LENGTH,
    )

    config = tiny_bert_config(tokenizer)
    torch.manual_seed(0)
    bert = BertModel(config)  # type: ignore[no-untyped-call]

    # sentence-transformers builds its Transformer module from a folder: stage the plain model first.
    with tempfile.TemporaryDirectory(prefix="tiny-bert-", dir=out.parent) as staged:
        bert.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        transformer = Transformer(staged, max_seq_length=EMBEDDING_MAX_SEQ_LENGTH)
        pooling = Pooling(EMBEDDING_DIMENSION, pooling_mode="mean")
        SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
