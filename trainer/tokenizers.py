"""Tokenizers that turn corpus text into shard ids: bytes, a BPE trained on the corpus, any HF
`tokenizers` JSON (`hf:PATH`) or a SentencePiece model (`spm:PATH`).

The id space of the tokenizer is [0, vocab_size) and holds an end-of-document id (`eos_id`) that
the shards carry after every document: the tokenizer's own end-of-text token (</s>, <|endoftext|>,
...) if it has one, else one new id after its vocabulary (bytes: 256, so vocab_size 257). The
model adds [MASK] as id vocab_size (the model vocabulary's last id). No other special token is
inserted. A tokenizer saves itself next to the shards (`save`) so `load_tokenizer` can decode.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from scaling.errors import UserError

BYTES_VOCAB = 257  # 256 byte values and the end-of-document id 256
KINDS = ("bytes", "bpe", "hf", "spm")
DEFAULT_BPE_VOCAB = 4096
BPE_EOS = "<|endoftext|>"
# end-of-text tokens of common tokenizer files, first found wins
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[EOS]", "<|eot_id|>")


class TextTokenizer(Protocol):
    kind: str
    vocab_size: int  # ids including eos_id, without [MASK]
    eos_id: int

    def encode_batch(self, texts: list[str]) -> Sequence[Sequence[int] | np.ndarray]:
        """The texts' ids, without the end-of-document id."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, folder: Path) -> str | None:
        """Writes what `load` needs into `folder`; returns the file name (None: nothing to save)."""
        ...


def parse(tokenizer: str) -> tuple[str, str | None]:
    """'bpe' -> ('bpe', None); 'hf:PATH' -> ('hf', PATH)."""
    kind, _, path = tokenizer.partition(":")
    if kind not in KINDS or (kind in ("hf", "spm")) != bool(path):
        raise UserError(
            f"unknown tokenizer {tokenizer!r}: use bytes, bpe, hf:PATH (tokenizer.json) or spm:PATH (.model)"
        )
    if path and not Path(path).is_file():
        raise UserError(f"tokenizer file {path} does not exist")
    return kind, path or None


def parse_kind(tokenizer: str) -> tuple[str, str | None]:
    """Like parse, without requiring the file to exist (a compute node may lack it)."""
    kind, _, path = tokenizer.partition(":")
    return kind, path or None


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ByteTokenizer:
    kind = "bytes"
    vocab_size = BYTES_VOCAB
    eos_id = 256

    def encode_batch(self, texts: list[str]) -> Sequence[Sequence[int] | np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, folder: Path) -> str | None:
        return None


def _eos_of(token_to_id, base_vocab: int) -> int:
    for name in EOS_NAMES:
        i = token_to_id(name)
        if i is not None and 0 <= i < base_vocab:
            return int(i)
    return base_vocab  # none: a new id after the vocabulary


class HFTokenizer:
    """A `tokenizers.Tokenizer`: a BPE trained here (kind bpe) or one loaded from a JSON file (hf)."""

    file_name = "tokenizer.json"

    def __init__(self, tok, kind: str):
        self.tok = tok
        self.kind = kind
        base = tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = _eos_of(tok.token_to_id, base)
        self.vocab_size = max(base, self.eos_id + 1)
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets that shards do not need
        self._encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int) -> HFTokenizer:
        """Byte-level BPE (no unknown tokens) with <|endoftext|> as id 0; the HF trainer is
        deterministic given the texts (in order) and the size."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + 1:
            raise UserError(f"a byte-level BPE needs vocab_size >= {len(alphabet) + 1}, got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[BPE_EOS], show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, "bpe")

    @classmethod
    def from_file(cls, path: str | Path, kind: str = "hf") -> HFTokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)), kind)
        except Exception as e:  # the library raises plain Exception subclasses for bad files
            raise UserError(f"{path} is not a HF tokenizers JSON file: {str(e).splitlines()[0]}") from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encode(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        base = self.tok.get_vocab_size(with_added_tokens=True)
        return self.tok.decode([int(i) for i in ids if i < base], skip_special_tokens=False)

    def save(self, folder: Path) -> str | None:
        self.tok.save(str(folder / self.file_name))
        return self.file_name


class SentencePieceTokenizer:
    kind = "spm"
    file_name = "tokenizer.model"

    def __init__(self, path: str | Path):
        try:
            import sentencepiece
        except ImportError:
            raise UserError(
                "spm: tokenizers need the sentencepiece package: `.venv/bin/pip install sentencepiece`"
            ) from None
        self.path = Path(path)
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise UserError(f"{path} is not a SentencePiece model: {str(e).splitlines()[0]}") from None
        base = int(self.sp.get_piece_size())
        eos = int(self.sp.eos_id())
        self.eos_id = eos if 0 <= eos < base else base
        self.vocab_size = max(base, self.eos_id + 1)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=1)  # one core per worker process

    def decode(self, ids: Sequence[int]) -> str:
        base = int(self.sp.get_piece_size())
        return self.sp.decode([int(i) for i in ids if i < base])

    def save(self, folder: Path) -> str | None:
        shutil.copyfile(self.path, folder / self.file_name)
        return self.file_name


def build(tokenizer: str, vocab_size: int | None, train_texts: Iterable[str] = ()) -> TextTokenizer:
    """The tokenizer a spec names; a BPE is trained on `train_texts` (the training split only)."""
    kind, path = parse(tokenizer)
    if kind == "bytes":
        tok: TextTokenizer = ByteTokenizer()
    elif kind == "bpe":
        tok = HFTokenizer.train_bpe(train_texts, vocab_size or DEFAULT_BPE_VOCAB)
    elif path is None:  # parse() gives hf and spm their file
        raise UserError(f"tokenizer {tokenizer!r} needs a file: hf:PATH or spm:PATH")
    elif kind == "hf":
        tok = HFTokenizer.from_file(path)
    else:
        tok = SentencePieceTokenizer(path)
    if kind != "bpe":  # a BPE trained on a small corpus may stop short of its vocab_size
        check_vocab(tokenizer, tok, vocab_size)
    return tok


def check_vocab(tokenizer: str, tok: TextTokenizer, vocab_size: int | None) -> None:
    if vocab_size is not None and vocab_size != tok.vocab_size:
        raise UserError(
            f"tokenizer {tokenizer} has {tok.vocab_size} ids (end-of-document id {tok.eos_id} included), "
            f"not vocab_size {vocab_size}: set vocab_size {tok.vocab_size}"
        )


def default_vocab_size(tokenizer: str) -> int:
    """The vocabulary a tokenizer gets when none is given (reads hf/spm files)."""
    kind, path = parse(tokenizer)
    if kind == "bytes":
        return BYTES_VOCAB
    if kind == "bpe":
        return DEFAULT_BPE_VOCAB
    return build(tokenizer, None).vocab_size


def load_tokenizer(kind: str, folder: Path, file_name: str | None) -> TextTokenizer:
    """The tokenizer saved in a shard folder (see data.load_tokenizer)."""
    if kind == "bytes":
        return ByteTokenizer()
    if file_name is None:
        raise UserError(f"{folder}: the {kind} tokenizer's file is not recorded: prepare the shards again")
    if kind in ("bpe", "hf"):
        return HFTokenizer.from_file(folder / file_name, kind)
    return SentencePieceTokenizer(folder / file_name)
