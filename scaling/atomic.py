"""Atomic file writes: a temp file in the target's folder, fsync, then os.replace.

A writer killed mid-write (SIGKILL, a node lost) leaves its temp file behind: the next write into
the same folder removes temp files nobody has written to for STALE_TEMP_S (a live writer's file
keeps a fresh modification time).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

STALE_TEMP_S = 900


@contextmanager
def replacing(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file whose content replaces `path` when the block ends without an error (and is
    removed if it raises): the target is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared on clusters
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with replacing(path) as f:
        f.write(data)


def remove_stale_temporaries(folder: Path, max_age_s: float = STALE_TEMP_S) -> None:
    """Deletes the temp files of interrupted writes (`.<name>.<random>.tmp`) left in `folder`."""
    cutoff = time.time() - max_age_s
    for tmp in folder.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except FileNotFoundError:  # another writer cleaned it or finished it
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Appends one line. A torn last line (kill mid-write) is skipped by readers (read_jsonl)."""
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=_default) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a log, one per line; lines that are not one (a torn last line, garbage
    from a damaged disk) are skipped."""
    rows: list[dict] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
