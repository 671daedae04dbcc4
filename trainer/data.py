"""Prepared token data for training: the manifest of a prepared folder, its shards as one token
stream per split, and the window samplers.

Preparation (trainer.prepare, docs/data.md) tokenizes a corpus into shards, every document
followed by the tokenizer's end-of-document id, and writes manifest.json last. The trainer reads
only the manifest (shards and their token counts: no per-document metadata) and memory-maps the
shards lazily, so many ranks read random windows of a corpus of any size.

Training reads non-overlapping seq_len windows of the train stream in a seeded permutation per
epoch (WindowSampler: its whole state is one integer); validation reads fixed windows spread
evenly over the val stream. This module does not import torch (the planner reads manifests).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.errors import UserError
from scaling.spec import data_folder
from trainer import tokenizers
from trainer.prepare import (
    DATA_FORMAT,
    MANIFEST,
    SHARDS,
    SPLITS,
    Source,
    read_manifest,
    stale_sources,
    token_dtype,
)
from trainer.prepare import prepare as prepare_source

__all__ = ["DATA_FORMAT", "SPLITS", "Source", "read_manifest", "token_dtype"]

MAX_OPEN_SHARDS = 256  # memory maps kept open per stream (a process may hold at most ~65k)


folder_of = data_folder  # one naming rule for the planner and the trainer


def prepare(
    corpus: str = "shakespeare",
    tokenizer: str = "bytes",
    vocab_size: int | None = None,
    val_fraction: float = 0.07,
    out: str | Path | None = None,
    log=print,
    *,
    val_files: str = "",
    text_field: str = "text",
    workers: int = 0,
) -> Path:
    """Tokenizes a corpus into `out` (default: the folder scaling.paths.shards_dir names); returns
    the folder. A second call with the same fields returns at once (trainer.prepare)."""
    source = Source(corpus, tokenizer, vocab_size, val_fraction, val_files, text_field)
    if vocab_size is None:
        source = Source(
            corpus, tokenizer, tokenizers.default_vocab_size(tokenizer), val_fraction, val_files, text_field
        )
    return prepare_source(source, out or folder_of(source), workers, log)


def prepare_data(data, log=print, workers: int = 0) -> Path:
    """The prepared folder of a DataSpec or DataConfig, prepared here if it is not (with `workers`
    processes, default the cores available). A prepared folder is checked, not rebuilt: its
    identity must match the data's fields, and a source whose bytes changed since is an error."""
    folder = folder_of(data)
    if (folder / MANIFEST).exists():
        check_prepared(folder, data)
        return folder
    return prepare_source(Source.of(data), folder, workers or getattr(data, "workers", 0), log)


def check_prepared(folder: Path, data) -> dict:
    """The manifest of `folder` if it holds `data`'s corpus as prepared from unchanged sources."""
    manifest = read_manifest(folder)
    found, source = manifest["identity"], Source.of(data)
    for key, want in (
        ("corpus", source.corpus),
        ("tokenizer", source.tokenizer),
        ("vocab_size", source.vocab_size),
        ("val_fraction", source.val_fraction),
        ("val_files", source.val_files or None),
        ("text_field", None if source.text_field == "text" else source.text_field),
    ):
        if found.get(key) != want:
            raise UserError(
                f"{folder} holds data with {key} {found.get(key)!r}, the run wants {want!r}: "
                f"set data.{key}={found.get(key)} or point data.shards at the right folder"
            )
    _, tok_file = tokenizers.parse_kind(source.tokenizer)
    if (
        tok_file
        and Path(tok_file).is_file()
        and found.get("tokenizer_sha256") != tokenizers.file_digest(tok_file)
    ):
        raise UserError(
            f"{folder} was prepared with another {tok_file} (its sha256 differs): prepare into another folder "
            "(data.shards=...) or restore the file"
        )
    stale = stale_sources(manifest)
    if stale:
        raise UserError(
            f"{stale[0]} changed since it was prepared into {folder} ({len(stale)} source(s) changed): "
            "prepare again (`scaling prepare`) or restore the file"
        )
    return manifest


def read_sidecar(path: str | Path, split: str = "train") -> dict:
    """One split of a prepared folder's manifest (token and document counts, vocabulary, identity)."""
    manifest = read_manifest(path)
    return {
        "split": split,
        **manifest["splits"][split],
        **{
            k: manifest[k]
            for k in ("vocab_size", "eos_id", "dtype", "tokenizer", "tokenizer_file", "identity")
        },
    }


class TokenStream:
    """The shards of one split as one array of ids: `size`, slicing (`s[a:b]`, a copy). Shards are
    memory-mapped on first use, at most MAX_OPEN_SHARDS at once (least recently used closed)."""

    def __init__(self, files: list[Path], counts: list[int], dtype: np.dtype):
        kept = [(f, n) for f, n in zip(files, counts) if n > 0]
        self.files = [f for f, _ in kept]
        self.offsets = np.concatenate([[0], np.cumsum([n for _, n in kept], dtype=np.int64)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self.dtype = np.dtype(dtype)
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the loader thread and the main thread may both read

    def __len__(self) -> int:
        return self.size

    def _map(self, i: int) -> np.ndarray:
        arr = self._maps.get(i)
        if arr is None:
            n = int(self.offsets[i + 1] - self.offsets[i])
            arr = np.memmap(self.files[i], dtype=self.dtype, mode="r")
            if arr.size != n:
                raise UserError(
                    f"{self.files[i]} has {arr.size} tokens, the manifest says {n}: prepare again"
                )
            self._maps[i] = arr
            if len(self._maps) > MAX_OPEN_SHARDS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(i)
        return arr

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("a TokenStream is read by slices")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError("a TokenStream slice has step 1")
        out = np.empty(max(0, stop - start), dtype=self.dtype)
        pos = start
        with self._lock:
            i = int(np.searchsorted(self.offsets, start, side="right")) - 1
            while pos < stop:
                lo = pos - int(self.offsets[i])
                take = min(stop, int(self.offsets[i + 1])) - pos
                out[pos - start : pos - start + take] = self._map(i)[lo : lo + take]
                pos += take
                i += 1
        return out


@dataclass(frozen=True)
class Shards:
    folder: Path
    vocab_size: int  # the tokenizer's ids (end-of-document included), without [MASK]
    eos_id: int
    train: TokenStream
    val: TokenStream


def open_shards(folder: str | Path) -> Shards:
    """The prepared folder's splits as token streams (reads manifest.json only)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    dtype = np.dtype(manifest["dtype"])
    streams = {
        split: TokenStream(
            [folder / SHARDS / f"{s['name']}.{split}.bin" for s in manifest["shards"]],
            [s[split] for s in manifest["shards"]],
            dtype,
        )
        for split in SPLITS
    }
    return Shards(folder, manifest["vocab_size"], manifest["eos_id"], streams["train"], streams["val"])


def load_tokenizer(folder: str | Path) -> tokenizers.TextTokenizer:
    """The tokenizer that made a prepared folder (to decode samples)."""
    meta = read_manifest(folder)
    return tokenizers.load_tokenizer(meta["tokenizer"], Path(folder), meta["tokenizer_file"])


# --- windows ----------------------------------------------------------------------------------


class WindowSampler:
    """Non-overlapping seq_len windows of a token stream, each epoch in its own seeded permutation.

    `position` counts windows handed out since the start; it is the sampler's entire state, so a
    checkpoint that saves it resumes the exact sequence of batches.
    """

    def __init__(self, tokens: np.ndarray | TokenStream, seq_len: int, seed: int, position: int = 0):
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


def validation_windows(tokens: np.ndarray | TokenStream, seq_len: int, n: int) -> np.ndarray:
    """n fixed non-overlapping windows spread evenly over the validation split, int64 [n, seq_len]."""
    available = tokens.size // seq_len
    if available < n:
        raise UserError(
            f"the validation split has {available} windows of seq_len {seq_len}, fewer than eval.sequences {n}: "
            "lower eval.sequences or seq_len, or raise val_fraction"
        )
    starts = (np.arange(n) * available // n) * seq_len
    return np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
