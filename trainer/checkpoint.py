"""Checkpoints of a run: `checkpoints/step-<N>.pt` (a plain torch file) with a `step-<N>.sha256`
digest written after it, so a torn or corrupted file is detected (torch does not checksum tensor
data). The newest two are kept; loading falls back from a bad newest one to the previous one.

A checkpoint is streamed to its temp file while it is hashed, and read back memory-mapped after a
streamed check of its digest: host memory never holds a second copy of the states (a 2B-parameter
run's checkpoint is 28 GB, and every rank of a node loads it). Once a run is done, its last
checkpoint is rewritten without the optimizer's state (`finalize`: a third of the size).

Runs with sharding `fsdp` checkpoint sharded before their last step: `checkpoints/step-<N>/`, a
torch.distributed.checkpoint (DCP) folder in which every process writes its shards of the model
and the optimizer (`__<rank>_<i>.distcp`, rank 0 the `.metadata`), with `state.pt` (the rest of
the payload) and `digests.sha256` (sha256sum's format, every file of the folder). It is written as
`step-<N>.partial/` and renamed once the digests are in, so a folder named `step-<N>` is whole;
DCP writes the shard files itself, so the processes hash them after the write, each its share,
and check them the same way before loading. DCP reshards on load: the folder resumes at any world
size, into a sharded or a plain model. The last step's checkpoint is always the .pt file with the
full weights (gathered on rank 0), the one format the rest of the project reads.

The payload is made of tensors, numbers, strings and lists only, so it loads with
`torch.load(weights_only=True)`; RNG states are converted to and from such types here.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from scaling import atomic, store
from scaling.errors import UserError
from scaling.spec import RunSpec
from trainer import accelerator, distributed
from trainer.model import DiT

FORMAT = 1
KEEP = 2
STATE = "state.pt"  # a sharded checkpoint's payload without the model and optimizer
DIGESTS = "digests.sha256"
PARTIAL = ".partial"
_NAME = re.compile(r"step-(\d+)(\.pt)?$")


def folder(run_dir: str | Path) -> Path:
    return Path(run_dir) / store.CHECKPOINT_DIR


def listing(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint (file or sharded folder), newest first."""
    found = []
    for p in folder(run_dir).glob("step-*"):
        m = _NAME.match(p.name)
        if m and p.is_dir() == (m.group(2) is None):
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _remove(path: Path) -> None:
    """Deletes a checkpoint, its digests first: one interrupted halfway reads as unusable."""
    if path.is_dir():
        (path / DIGESTS).unlink(missing_ok=True)
        shutil.rmtree(path)
    else:
        path.with_suffix(".sha256").unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _prune(run_dir: str | Path) -> None:
    for _, old in listing(run_dir)[KEEP:]:
        _remove(old)


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
    _prune(run_dir)
    return path


def write(path: Path, state: dict) -> None:
    """`path` and its digest file, the state streamed to disk (no copy of it in memory)."""
    atomic.write_text(path.with_suffix(".sha256"), _stream(path, state) + "\n")


def _stream(path: Path, state: dict) -> str:
    """Writes `state` to `path` atomically while hashing it; returns the hex digest."""
    digest = hashlib.sha256()
    with atomic.replacing(path) as f:
        stream = _Hashing(f, digest)
        try:
            torch.save(state, cast(IO[bytes], stream))
        except RuntimeError:
            if stream.error is not None:  # torch's writer, closing, puts its own error in front
                raise stream.error from None
            raise
    return digest.hexdigest()


def save_sharded(run_dir: str | Path, step: int, state: dict, model: nn.Module, optimizer) -> Path:
    """The sharded checkpoint `step-<step>/` (module docstring); every process calls it, with its
    own `model` and `optimizer`; rank 0's `state` is kept."""
    rank, world = distributed.rank_and_world()
    final = folder(run_dir) / f"step-{step}"
    tmp = final.with_name(final.name + PARTIAL)
    if rank == 0:
        for stale in folder(run_dir).glob(f"*{PARTIAL}"):  # left by an interrupted write
            shutil.rmtree(stale)
        tmp.mkdir(parents=True)
    distributed.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with _one_process_quiet():
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp, no_dist=world == 1)
    digests = {STATE: _stream(tmp / STATE, {"format": FORMAT, "step": step, **state})} if rank == 0 else {}
    distributed.barrier()  # every file is in place
    names = sorted(p.name for p in tmp.iterdir() if p.name != STATE)
    for share in distributed.all_gather_objects({n: _file_digest(tmp / n) for n in names[rank::world]}):
        digests.update(share)
    if rank == 0:
        atomic.write_text(tmp / DIGESTS, "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
        if final.exists():  # an unusable checkpoint of this step, which the run has trained again
            _remove(final)
        os.rename(tmp, final)
        _prune(run_dir)
    return final


def load_sharded(path: Path, model: nn.Module, optimizer) -> None:
    """Loads a sharded checkpoint's model and optimizer (read() has checked it) into `model` (sharded
    or not, at any world size) and `optimizer` (over its parameters); every process calls it."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with _one_process_quiet():
        dcp.load(
            {"model": model_state, "optimizer": optimizer_state},
            checkpoint_id=path,
            no_dist=distributed.rank_and_world()[1] == 1,
        )
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


@contextmanager
def _one_process_quiet() -> Iterator[None]:
    """DCP warns whenever it runs without a process group, as every one-process run does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def load_full_optimizer(model: nn.Module, optimizer, saved: dict) -> None:
    """Loads the optimizer state of a .pt checkpoint (full tensors, parameters numbered in the order
    of the param groups) into an optimizer over sharded parameters, which takes them by name."""
    names = {p: n for n, p in model.named_parameters()}
    order = [names[p] for group in optimizer.param_groups for p in group["params"]]
    by_name: dict[str, Any] = {
        "state": {order[i]: s for i, s in saved["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def finalize(run_dir: str | Path) -> None:
    """A done run keeps only its final weights: the optimizer's state leaves its last checkpoint."""
    found = listing(run_dir)
    # a sharded checkpoint is never a run's last one (and reading it is collective)
    if not found or found[0][1].is_dir():
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
    file until written to); ValueError says why it is unusable. A sharded one (collective: every
    process calls it) gives its state.pt, with "shards": its folder, for load_sharded."""
    if path.is_dir():
        return _read_sharded(path)
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


def _check_share(path: Path, rank: int, world: int) -> str | None:
    """Why this process's share of a sharded checkpoint's files is unusable, None if it is not."""
    try:
        lines = (path / DIGESTS).read_text().splitlines()
    except FileNotFoundError:
        return "no digests file (the write was interrupted)"
    pairs = [line.split("  ", 1) for line in lines]
    digests = {p[1]: p[0] for p in pairs if len(p) == 2}
    if len(digests) != len(lines) or not {STATE, ".metadata"} <= digests.keys():
        return f"{DIGESTS} is damaged"
    names = sorted(digests)
    for name in names[rank::world]:
        try:
            if _file_digest(path / name) != digests[name]:
                return f"{name} does not match its sha256 digest"
        except FileNotFoundError:
            return f"{name} is missing"
    return None


def _read_sharded(path: Path) -> dict:
    rank, world = distributed.rank_and_world()
    problems = [p for p in distributed.all_gather_objects(_check_share(path, rank, world)) if p]
    if problems:
        raise ValueError(problems[0])
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # as in read(): whatever torch raises for a bad file
        raise ValueError(f"torch.load failed: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a checkpoint of format {FORMAT}")
    return {**state, "shards": str(path)}


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
