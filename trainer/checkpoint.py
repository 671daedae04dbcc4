"""Checkpoints of a run: `checkpoints/step-<N>.pt` (a plain torch file) with a `step-<N>.sha256`
digest written after it, so a torn or corrupted file is detected (torch does not checksum tensor
data). The newest two are kept; loading falls back from a bad newest one to the previous one.

A checkpoint is streamed to its temp file while it is hashed, and read back memory-mapped after a
streamed check of its digest: host memory never holds a second copy of the states (a 2B-parameter
run's checkpoint is 28 GB, and every rank of a node loads it). Once a run is done, its last
checkpoint is rewritten without the optimizer's state (`finalize`: a third of the size).

The payload is made of tensors, numbers, strings and lists only, so it loads with
`torch.load(weights_only=True)`; RNG states are converted to and from such types here.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch

from scaling import atomic, store
from scaling.errors import UserError
from scaling.spec import RunSpec
from trainer import accelerator
from trainer.model import DiT

FORMAT = 1
KEEP = 2
_NAME = re.compile(r"step-(\d+)\.pt$")


def folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / store.CHECKPOINT_DIR


def listing(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, newest first."""
    found = []
    for p in folder(run_dir).glob("step-*.pt"):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes what passes through it to `file`."""

    def __init__(self, file: IO[bytes], digest) -> None:
        self.file, self.digest = file, digest
        self.error: OSError | None = None  # the file system's error (a full disk), kept

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise


def save(run_dir: str | Path, step: int, state: dict) -> Path:
    path = folder(run_dir) / f"step-{step}.pt"
    write(path, {"format": FORMAT, "step": step, **state})
    for _, old in listing(run_dir)[KEEP:]:
        old.with_suffix(".sha256").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def write(path: Path, state: dict) -> None:
    """`path` and its digest file, the state streamed to disk (no copy of it in memory)."""
    digest = hashlib.sha256()
    with atomic.replacing(path) as f:
        stream = _Hashing(f, digest)
        try:
            torch.save(state, cast(IO[bytes], stream))
        except RuntimeError:
            if stream.error is not None:  # torch's writer, closing, puts its own error in front
                raise stream.error from None
            raise
    atomic.write_text(path.with_suffix(".sha256"), digest.hexdigest() + "\n")


def finalize(run_dir: str | Path) -> None:
    """A done run keeps only its final weights: the optimizer's state leaves its last checkpoint."""
    found = listing(run_dir)
    if not found:
        return
    path = found[0][1]
    state = read(path)
    if "optimizer" in state:
        write(path, {k: v for k, v in state.items() if k != "optimizer"})


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def read(path: Path) -> dict:
    """One checkpoint, verified against its digest and memory-mapped (its tensors are backed by the
    file until written to); ValueError says why it is unusable."""
    try:
        digest = path.with_suffix(".sha256").read_text().strip()
    except FileNotFoundError:
        raise ValueError("no digest file (the write was interrupted)") from None
    if _file_digest(path) != digest:
        raise ValueError("content does not match its sha256 digest")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, ... for bad files
        raise ValueError(f"torch.load failed: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a checkpoint of format {FORMAT}")
    return state


def load_latest(run_dir: str | Path, run_key: str, warn=print) -> dict | None:
    """The newest usable checkpoint of this run, None when there is none.

    A bad newest checkpoint is skipped with a warning; if none is usable, or the newest usable
    one belongs to another run, that is a UserError (nothing is deleted)."""
    found = listing(run_dir)
    for _, path in found:
        try:
            state = read(path)
        except (ValueError, OSError) as e:
            warn(f"warning: checkpoint {path} is unusable ({e}); trying the previous one")
            continue
        if state.get("run_key") != run_key:
            raise UserError(
                f"checkpoint {path} belongs to run {state.get('run_key')!r}, not {run_key}: "
                "use another --out folder or delete its checkpoints/"
            )
        return state
    if found:
        raise UserError(
            f"no usable checkpoint in {folder(run_dir)}: delete that folder to restart the run from step 0"
        )
    return None


def load_final_model(run_dir: str | Path, device: torch.device | None = None) -> tuple[RunSpec, DiT]:
    """The spec and trained model (in eval mode) of a finished run: its checkpoint at the last step."""
    spec = store.load_run_spec(Path(run_dir))
    state = load_latest(run_dir, spec.run_key)
    if state is None or state["step"] != spec.steps:
        at = "no checkpoint" if state is None else f"a checkpoint at step {state['step']}"
        raise UserError(
            f"run {run_dir} has {at}, not at its last step {spec.steps}: finish it with `scaling train`"
        )
    model = DiT(spec.model)
    model.load_state_dict(state["model"])
    return spec, model.to(accelerator.placement(device or torch.device("cpu"))).eval()


# --- RNG states -----------------------------------------------------------------------------


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    cuda = accelerator.cuda_rng_state()
    if cuda is not None:
        state["cuda"] = cuda
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state:
        accelerator.set_cuda_rng_state(state["cuda"])
