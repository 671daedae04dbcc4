"""Parallel, resumable tokenization of a corpus into sharded token files (docs/data.md).

A prepared folder holds:
  prepare.json              what is being prepared (the identity): written first, refuses a foreign folder
  tokenizer.json|.model     the tokenizer (bpe: trained here on the training split), if it has a file
  shards/NAME.train.bin     the ids of one piece's training documents, each followed by the
  shards/NAME.val.bin         end-of-document id (uint16 if the vocabulary fits, else uint32)
  shards/NAME.json          the shard's index: tokens and documents per split, source path, size,
                            mtime, sha256 of the bytes read; written last, so it marks a finished shard
  manifest.json             the shards in stream order with their token counts, and the totals:
                            written when every shard is done; the trainer reads only this file

N worker processes (spawned, one core each) tokenize one piece at a time, streaming: a worker holds
one batch of documents, never a whole file. A rerun skips every shard whose index matches its
source (size and mtime) and tokenizer, so a preparation killed with SIGKILL resumes where it
stopped; .bin files are written under temporary names and renamed before the index, so a
half-written shard is never used. A malformed file is reported in one line (file and line) after
the other pieces are done; their shards stay. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling import atomic, locks
from scaling.errors import UserError
from trainer import corpora, tokenizers

DATA_FORMAT = 2
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
REQUEST = "prepare.json"
SHARDS = "shards"
BATCH_CHARS = 1 << 20  # text per encode_batch call: bounds a worker's memory
BPE_TRAIN_CHARS = 1 << 30  # a BPE is trained on at most this much of the training split


@dataclass(frozen=True)
class Source:
    """What determines a prepared folder's content (DataConfig and DataSpec carry these fields)."""

    corpus: str = corpora.BUNDLED
    tokenizer: str = "bytes"
    vocab_size: int | None = None  # None: the tokenizer's own
    val_fraction: float = 0.07
    val_files: str = ""  # a corpus of validation documents instead of val_fraction
    text_field: str = "text"

    @classmethod
    def of(cls, data) -> Source:
        """The fields of a DataSpec or DataConfig (older specs lack val_files and text_field)."""
        return cls(
            data.corpus,
            data.tokenizer,
            data.vocab_size,
            data.val_fraction,
            getattr(data, "val_files", ""),
            getattr(data, "text_field", "text"),
        )

    def identity(self, vocab_size: int) -> dict:
        ident: dict = {
            "corpus": self.corpus,
            "tokenizer": self.tokenizer,
            "vocab_size": int(vocab_size),
            "val_fraction": float(self.val_fraction),
        }
        if self.val_files:
            ident["val_files"] = self.val_files
        if self.text_field != "text":
            ident["text_field"] = self.text_field
        ident["format"] = DATA_FORMAT
        _, path = tokenizers.parse(self.tokenizer)
        if path:  # the same path may hold another tokenizer later
            ident["tokenizer_sha256"] = tokenizers.file_digest(path)
        return ident

    def check(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if bool(self.val_files) == (self.val_fraction > 0):
            raise UserError(
                "give either val_fraction > 0 (a share of the documents by hash) or val_files (a validation "
                f"corpus) with val_fraction 0, not {'both' if self.val_files else 'neither'}"
            )
        if not self.text_field:
            raise UserError("text_field is empty: name the JSON field or column that holds the text")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process (or SLURM job) may use
    except AttributeError:
        return os.cpu_count() or 1


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    source: Source
    train: corpora.Corpus
    val: corpora.Corpus | None
    pieces: list[corpora.Piece]

    @property
    def bytes(self) -> int:
        return sum(p.end - p.start for p in self.pieces)

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for c in (self.train, self.val):
            for f in c.files if c else ():
                s = corpora.suffix_of(f.path) or "?"
                kinds[s] = kinds.get(s, 0) + 1
        files = ", ".join(f"{n} {s}" for s, n in sorted(kinds.items()))
        split = (
            f"validation: {self.val.description}"
            if self.val
            else f"validation: {self.source.val_fraction:g} of the documents by hash"
        )
        return f"{self.train.description} ({files}; {self.bytes / 1e9:.3g} GB, {len(self.pieces)} pieces); {split}"


def plan(source: Source) -> Plan:
    source.check()
    train = corpora.resolve(source.corpus)
    val = corpora.resolve(source.val_files, "val_files") if source.val_files else None
    return Plan(source, train, val, corpora.pieces(train, val, source.val_fraction))


# --- the folder --------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder)
    file = path if path.suffix == ".json" else path / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"no prepared data at {file}: run `scaling prepare` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{file} is not valid JSON: prepare again (finished shards are kept)") from None
    if manifest.get("format") != DATA_FORMAT:
        raise UserError(
            f"{file.parent} holds data of format {manifest.get('format')}, this version reads {DATA_FORMAT}: prepare again"
        )
    return manifest


def _claim(folder: Path, ident: dict) -> None:
    """Marks the folder as preparing `ident`; refuses one that holds anything else."""
    request = folder / REQUEST
    if request.exists():
        found = json.loads(request.read_text()).get("identity")
        if found != ident:
            raise UserError(f"{folder} holds data of {found}, not {ident}: choose another folder")
        return
    if (folder / "train.json").exists():  # format 1: train.bin and its sidecar
        raise UserError(
            f"{folder} holds shards of an earlier format (train.bin, train.json): remove it and prepare again"
        )
    if folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder} exists and holds other files: remove it or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(request, {"identity": ident})


def _sources_unchanged(manifest: dict) -> bool:
    for shard in manifest["shards"]:
        try:
            st = os.stat(shard["path"])
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (shard["size"], shard["mtime_ns"]):
            return False
    return True


def stale_sources(manifest: dict) -> list[str]:
    """Sources whose bytes differ from the recorded sha256 (size or mtime changed, then rehashed).
    A source that is gone is not stale: the shards hold its tokens."""
    stale = []
    for shard in manifest["shards"]:
        try:
            st = os.stat(shard["path"])
        except OSError:
            continue
        if (st.st_size, st.st_mtime_ns) == (shard["size"], shard["mtime_ns"]):
            continue
        if st.st_size < shard["end"] or (
            corpora.range_digest(shard["path"], shard["start"], shard["end"]) != shard["sha256"]
        ):
            stale.append(shard["path"])
    return sorted(set(stale))


# --- the work ----------------------------------------------------------------------------------


def prepare(
    source: Source,
    out: str | Path,
    workers: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Tokenizes `source` into the folder `out` with `workers` processes (0: the cores available);
    returns the folder. Idempotent: a prepared folder whose sources are unchanged returns at once,
    a partial one is completed. One preparation of a folder at a time: a second one (two sweeps
    started together) waits for the first, then finds the folder prepared."""
    folder = Path(out)
    lock = folder.parent / f".{folder.name}.lock"  # beside the folder, which holds its data only
    with locks.held(lock, "data preparation", folder, wait_s=math.inf, say=log):
        return _prepare(source, folder, workers, log)


def _prepare(source: Source, folder: Path, workers: int, log: Callable[[str], None]) -> Path:
    vocab = source.vocab_size or tokenizers.default_vocab_size(source.tokenizer)
    ident = source.identity(vocab)
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        if manifest["identity"] != ident:
            raise UserError(
                f"{folder} holds data of {manifest['identity']}, not {ident}: choose another folder"
            )
        if _sources_unchanged(manifest):
            the_plan = plan(source)
            if [p.name for p in the_plan.pieces] == [s["name"] for s in manifest["shards"]]:
                return folder
    the_plan = plan(source)
    t0 = time.time()
    _claim(folder, ident)
    tok = _tokenizer(the_plan, folder, vocab, log)
    workers = workers or available_cores()
    (folder / SHARDS).mkdir(exist_ok=True)
    # half-written shards of a killed preparation: this process holds the folder's lock, so no
    # other one is writing them
    for leftover in (folder / SHARDS).glob("*.bin.tmp*"):
        leftover.unlink()
    job = _Job(
        folder, tok.kind, tok.save_name, source.text_field, source.val_fraction, ident, tok.dtype, tok.eos
    )
    todo = [p for p in the_plan.pieces if _finished(job, p) is None]
    log(
        f"preparing {folder}: {the_plan.describe()}; {len(the_plan.pieces) - len(todo)} shards done, "
        f"{len(todo)} to do with {min(workers, max(1, len(todo)))} workers"
    )
    errors = _run(job, todo, workers, log)
    if errors:
        done = len(the_plan.pieces) - len(errors)
        raise UserError(
            f"{errors[0]} ({len(errors)} of {len(the_plan.pieces)} files failed, {done} shards are prepared "
            f"and kept): fix or remove the file and prepare again"
        )
    manifest = _manifest(job, the_plan, tok)
    docs = {s: manifest["splits"][s]["documents"] for s in SPLITS}
    for split, other in (("val", "train"), ("train", "val")):
        if docs[split] == 0:  # before the manifest: a split without documents is no prepared data
            fix = (
                "raise val_fraction (docs/data.md: a hash decides per document)"
                if split == "val"
                else "lower val_fraction"
            )
            raise UserError(
                f"{source.corpus}: the {split} split has no document ({docs[other]} in {other}): {fix}"
                + (" or give val_files" if split == "val" and not source.val_files else "")
            )
    atomic.write_json(folder / MANIFEST, manifest)
    counts = ", ".join(
        f"{s} {manifest['splits'][s]['tokens']:,} tokens ({manifest['splits'][s]['documents']:,} documents)"
        for s in SPLITS
    )
    log(f"prepared {folder} ({tok.kind}, vocab {tok.vocab_size}; {counts}) in {time.time() - t0:.1f}s")
    return folder


@dataclass(frozen=True)
class _Tok:
    kind: str
    vocab_size: int
    eos: int
    save_name: str | None
    dtype: str


def _tokenizer(the_plan: Plan, folder: Path, vocab: int, log) -> _Tok:
    """Builds (a BPE: trains) the tokenizer once and saves it in the folder for the workers."""
    source = the_plan.source
    kind, _ = tokenizers.parse(source.tokenizer)
    saved = folder / tokenizers.HFTokenizer.file_name
    tok: tokenizers.TextTokenizer
    if kind == "bpe" and saved.exists():  # trained by an earlier, interrupted preparation
        tok = tokenizers.HFTokenizer.from_file(saved, "bpe")
    else:
        texts = _training_texts(the_plan) if kind == "bpe" else iter(())
        if kind == "bpe":
            log(
                f"training a {vocab}-id BPE on up to {BPE_TRAIN_CHARS / 1e9:.3g} G characters of the training split"
            )
        tok = tokenizers.build(source.tokenizer, vocab, texts)
        tmp = folder / f".tokenizer.{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        name = tok.save(tmp)
        if name:
            os.replace(tmp / name, folder / name)
        tmp.rmdir()
    name = (
        None
        if kind == "bytes"
        else (tokenizers.HFTokenizer.file_name if kind in ("bpe", "hf") else "tokenizer.model")
    )
    return _Tok(tok.kind, tok.vocab_size, tok.eos_id, name, token_dtype(tok.vocab_size).name)


def _training_texts(the_plan: Plan):
    chars = 0
    for piece in the_plan.pieces:
        if piece.split == "val":
            continue
        for index, text in corpora.read_piece(piece, the_plan.source.text_field):
            if piece.split == "hash" and corpora.is_val(
                piece.source.name, index, the_plan.source.val_fraction
            ):
                continue
            yield text
            chars += len(text)
            if chars >= BPE_TRAIN_CHARS:
                return


@dataclass(frozen=True)
class _Job:
    """What a worker needs (pickled once per worker)."""

    folder: Path
    kind: str
    tokenizer_file: str | None
    text_field: str
    val_fraction: float
    identity: dict
    dtype: str
    eos: int


def _index_path(job: _Job, piece: corpora.Piece) -> Path:
    return job.folder / SHARDS / f"{piece.name}.json"


def _bin_path(job: _Job, piece: corpora.Piece, split: str) -> Path:
    return job.folder / SHARDS / f"{piece.name}.{split}.bin"


def _finished(job: _Job, piece: corpora.Piece) -> dict | None:
    """The shard's index if it is complete and made from this source by this tokenizer."""
    try:
        index = json.loads(_index_path(job, piece).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    src = piece.source
    expected = {
        "identity": job.identity,
        "path": src.path,
        "size": src.size,
        "mtime_ns": src.mtime_ns,
        "start": piece.start,
        "end": piece.end,
        "split": piece.split,
    }
    if any(index.get(k) != v for k, v in expected.items()):
        return None
    itemsize = np.dtype(job.dtype).itemsize
    for split in SPLITS:
        try:
            if _bin_path(job, piece, split).stat().st_size != index[split]["tokens"] * itemsize:
                return None
        except OSError:
            return None
    return index


_WORKER: dict = {}


def _init_worker(job: _Job) -> None:
    # one core per worker: the tokenizer libraries' own threads would compete with the other workers
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _die_with_parent()
    _WORKER["job"] = job
    _WORKER["tok"] = tokenizers.load_tokenizer(job.kind, job.folder, job.tokenizer_file)


def _die_with_parent() -> None:
    """A worker of a preparation killed with SIGKILL stops too (Linux; elsewhere it finishes its piece)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _work(piece: corpora.Piece) -> tuple[str, dict | str]:
    """Tokenizes one piece into its shard; ("ok", index) or ("error", one line)."""
    job, tok = _WORKER["job"], _WORKER["tok"]
    try:
        return "ok", _tokenize(job, tok, piece)
    except corpora.CorpusError as e:
        return "error", str(e)


def _tokenize(job: _Job, tok: tokenizers.TextTokenizer, piece: corpora.Piece) -> dict:
    dtype = np.dtype(job.dtype)
    tmp = {s: _bin_path(job, piece, s).with_suffix(f".bin.tmp{os.getpid()}") for s in SPLITS}
    counts = {s: {"tokens": 0, "documents": 0} for s in SPLITS}
    files = {s: open(tmp[s], "wb") for s in SPLITS}
    batches: dict[str, list[str]] = {s: [] for s in SPLITS}
    chars = {s: 0 for s in SPLITS}

    def flush(split: str) -> None:
        texts = batches[split]
        if not texts:
            return
        ids = tok.encode_batch(texts)
        out = np.empty(sum(len(x) for x in ids) + len(ids), dtype=dtype)
        pos = 0
        for x in ids:
            out[pos : pos + len(x)] = x
            out[pos + len(x)] = job.eos
            pos += len(x) + 1
        out.tofile(files[split])
        counts[split]["tokens"] += int(out.size)
        counts[split]["documents"] += len(texts)
        batches[split], chars[split] = [], 0

    try:
        reader = corpora.read_piece(piece, job.text_field)
        while True:
            try:
                index, text = next(reader)
            except StopIteration as stop:
                digest = stop.value
                break
            if piece.split == "hash":
                split = "val" if corpora.is_val(piece.source.name, index, job.val_fraction) else "train"
            else:
                split = piece.split
            batches[split].append(text)
            chars[split] += len(text)
            if chars[split] >= BATCH_CHARS:
                flush(split)
        for split in SPLITS:
            flush(split)
            files[split].flush()
            os.fsync(files[split].fileno())
            files[split].close()
            os.replace(tmp[split], _bin_path(job, piece, split))
    finally:
        for split in SPLITS:
            files[split].close()
            tmp[split].unlink(missing_ok=True)
    src = piece.source
    record = {
        "identity": job.identity,
        "source": src.name,
        "path": src.path,
        "size": src.size,
        "mtime_ns": src.mtime_ns,
        "start": piece.start,
        "end": piece.end,
        "split": piece.split,
        "sha256": digest,
        **counts,
    }
    atomic.write_json(_index_path(job, piece), record)  # last: the shard is finished
    return record


def _run(job: _Job, todo: list[corpora.Piece], workers: int, log) -> list[str]:
    """Runs the pieces (largest first, so no worker is left with a big one at the end); returns
    the errors."""
    if not todo:
        return []
    errors: list[str] = []
    total = sum(p.end - p.start for p in todo)
    done_bytes, tokens, n_done = 0, 0, 0
    t0 = last = time.time()
    order = sorted(todo, key=lambda p: p.end - p.start, reverse=True)
    context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    with context.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(job,)) as pool:
        for (status, result), piece in zip(pool.imap(_work, order), order):
            n_done += 1
            done_bytes += piece.end - piece.start
            if status == "error":
                errors.append(str(result))
                log(f"error: {result}")
                continue
            assert isinstance(result, dict)
            tokens += sum(result[s]["tokens"] for s in SPLITS)
            now = time.time()
            if now - last >= 10 or n_done == len(order):
                last, rate = now, done_bytes / max(now - t0, 1e-9)
                eta = (total - done_bytes) / max(rate, 1e-9)
                log(
                    f"  {n_done}/{len(order)} shards, {done_bytes / 1e9:.3g} of {total / 1e9:.3g} GB, "
                    f"{tokens:,} tokens, {tokens / max(now - t0, 1e-9):,.0f} tokens/s, ETA {eta / 60:.1f} min"
                )
    return errors


def _manifest(job: _Job, the_plan: Plan, tok: _Tok) -> dict:
    shards, totals = [], {s: {"tokens": 0, "documents": 0} for s in SPLITS}
    for piece in the_plan.pieces:
        index = _finished(job, piece)
        if index is None:
            raise UserError(
                f"shard {piece.name} of {piece.source.path} vanished while preparing: prepare again"
            )
        shards.append(
            {
                "name": piece.name,
                **{k: index[k] for k in ("source", "path", "size", "mtime_ns", "start", "end", "sha256")},
                **{s: index[s]["tokens"] for s in SPLITS},
            }
        )
        for s in SPLITS:
            for k in ("tokens", "documents"):
                totals[s][k] += index[s][k]
    return {
        "format": DATA_FORMAT,
        "identity": job.identity,
        "tokenizer": tok.kind,
        "tokenizer_file": tok.save_name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos,
        "dtype": tok.dtype,
        "corpus": the_plan.describe(),
        "splits": totals,
        "shards": shards,
    }


# --- the estimate (scaling prepare --dry-run) ----------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    files: int
    bytes: int
    pieces: int
    done: int  # shards already prepared in the folder
    tokens: float  # estimated tokens of the whole corpus
    tokens_per_s: float  # one worker, measured on the sample
    sample_chars: int
    workers: int

    @property
    def seconds(self) -> float:
        return self.tokens / max(self.tokens_per_s * self.workers, 1e-9)


def estimate(source: Source, out: str | Path, workers: int = 0, sample_chars: int = 4 << 20) -> Estimate:
    """Files, bytes and the time to prepare with `workers` processes, from a sample of the corpus
    tokenized here on one core (a BPE is trained on the sample for the estimate)."""
    the_plan = plan(source)
    vocab = source.vocab_size or tokenizers.default_vocab_size(source.tokenizer)
    texts, raw, chars = [], 0, 0
    for piece in the_plan.pieces:
        where: dict = {}
        for _, text in corpora.read_piece(piece, source.text_field, where):
            texts.append(text)
            chars += len(text)
            if chars >= sample_chars:
                break
        raw += (
            where["raw"].pos - piece.start
        )  # the file bytes that held the sample (read ahead: a little more)
        if chars >= sample_chars:
            break
    tok = tokenizers.build(source.tokenizer, vocab, texts if source.tokenizer == "bpe" else ())
    t0 = time.perf_counter()
    n = sum(len(ids) + 1 for ids in tok.encode_batch(texts)) if texts else 0
    rate = n / max(time.perf_counter() - t0, 1e-9)
    ident = source.identity(vocab)
    folder = Path(out)
    job = _Job(
        folder, tok.kind, None, source.text_field, source.val_fraction, ident, token_dtype(vocab).name, 0
    )
    done = sum(_finished(job, p) is not None for p in the_plan.pieces) if (folder / SHARDS).is_dir() else 0
    files = len(the_plan.train.files) + (len(the_plan.val.files) if the_plan.val else 0)
    return Estimate(
        files,
        the_plan.bytes,
        len(the_plan.pieces),
        done,
        n / max(raw, 1) * the_plan.bytes,
        rate,
        chars,
        workers or available_cores(),
    )
