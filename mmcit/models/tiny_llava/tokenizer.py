"""A byte-level BPE tokenizer trained locally on a benchmark's training text (no hub download)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer.

    Byte-level keeps decoding lossless for any text (real prompts included); the small vocabulary
    merges the benchmark's frequent words into single tokens, which a tiny LM learns faster.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok):
    """A ``tokenizers`` tokenizer as a transformers fast tokenizer with mmcit's special tokens."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.padding_side = "right"
    return fast


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in ``folder``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def corpus_texts(instruction_root: Path) -> list[str]:
    """Every prompt and answer of the training records under the root: each ``train.json`` (all
    variants and tasks, the pretraining captions' ``Pretrain/train.json`` included), never a test
    or validation file, so no evaluated text shapes the vocabulary (byte-level BPE still encodes it).

    The whole tree's training text rather than the stream's: the pretrained base (tokenizer
    included) is cached per data tree, whichever of its tasks a run streams, so its vocabulary must
    not depend on the task selection of the run that happened to build it first.
    """
    texts: list[str] = []
    for path in sorted(Path(instruction_root).rglob("train.json")):
        records = json.loads(path.read_text(encoding="utf-8"))
        for rec in records if isinstance(records, list) else []:
            if not isinstance(rec, dict):
                continue
            for turn in rec.get("conversations") or []:
                if isinstance(turn, dict) and isinstance(turn.get("value"), str):
                    texts.append(turn["value"].replace("<image>", ""))
    return texts
