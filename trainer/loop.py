"""The training loop: one RunSpec -> one run folder (docs/run-folder.md).

    result = train(spec, run_dir)   # resumes from run_dir's checkpoint; returns its RunResult (result.json)

- AdamW with decoupled weight decay on the weights of Linear layers only (embeddings, LayerNorm
  weights and biases are not decayed); learning rate: linear warmup over warmup_steps to lr, then
  cosine to min_lr at the last step (a pure function of the step, so the "scheduler state" is the
  step); gradient clipping at grad_clip (<= 0: off); gradient accumulation of micro batches up to
  the global batch; DDP or full sharding (spec.sharding, trainer/sharding.py) over torchrun/SLURM
  ranks (trainer.distributed).
- Randomness that changes the loss is keyed by sequence, not carried in generator state: the data
  of step s are windows s*B .. (s+1)*B - 1 of a seeded stream, its diffusion times come from
  u = f(seed, step) (each rank takes its rows' slice) and every sequence's masks and noise from
  (seed, step, its global row) (trainer/noise.py). Resuming is then exact by construction, and the
  losses do not depend on the micro-batch, the world size or the sharding. Global
  torch/numpy/python RNG states are checkpointed too.
- Validation: fixed windows of the val split; diffusion arms evaluate each window at eval.t_per_seq
  stratified times (u per window from eval.seed) with masks keyed by (eval.seed, window, time), so
  the same weights always give the same number whatever the batch size; mean and standard error
  over windows. The final step is always evaluated.
- Checkpoints every checkpoint_every steps, at the end, and at the first step boundary after
  SIGTERM/SIGUSR2 (or a first Ctrl-C), after which train() raises Preempted (`scaling train` exits
  scaling.store.EXIT_PREEMPTED). Runs with sharding fsdp write sharded checkpoints, except the
  last, which holds the full weights (trainer/checkpoint.py).
- A non-finite loss or gradient norm stops the run: result.json has status "diverged" and the step.
- FLOPs: spec.steps x global_batch x 3 x forward FLOPs per sequence, for every convention of
  scaling.flops. MFU uses the "causal" convention (the model's real matmuls, attention halved for
  causal arms: the work actually done) over the peak of the devices (trainer.accelerator).
- Throughput: the batches of a rank are read ahead in a thread (trainer/loader.py); the host reads
  the device's losses once per SYNC_EVERY steps at most (one all-reduce, one copy); on CUDA the
  model runs under torch.compile (spec.compile), and the first step, which compiles, is timed apart
  (result.json's compile_s), outside tokens_per_s and mfu.
- Threads: SCALING_THREADS sets torch.set_num_threads (the local executor splits the cores).
- Liveness: rank 0 touches the run's heartbeat file every few seconds while it trains, evaluates
  and checkpoints; a SLURM job's watchdog requeues a trainer whose heartbeat stops (a hung
  collective, a dead mount).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from scaling import atomic, paths, placement, records, store
from scaling.errors import UserError
from scaling.flops import CONVENTIONS, train_flops_per_seq
from scaling.spec import PRECISIONS, SHARDINGS, RunSpec
from scaling.tables import duration
from trainer import accelerator, checkpoint, data, sharding
from trainer import distributed as dist
from trainer.accelerator import autocast_for
from trainer.arms import Arm, get_arm
from trainer.loader import BatchLoader
from trainer.loggers import open_loggers
from trainer.model import DiT, attention_backend
from trainer.noise import Noise

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
SYNC_EVERY = 10  # steps between reads of the losses on the host (each one waits for the device)
RECENT = 20  # training losses averaged into result.json's train_loss
BEAT_S = 5.0  # at most one heartbeat write per this many seconds


class Preempted(Exception):
    """A stop signal arrived; the run was checkpointed at `step` and can be resumed."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} (checkpointed)")
        self.step, self.signum = step, signum


@dataclass
class BatchPlan:
    """What the spec and the world size make of the batch."""

    per_rank: int  # sequences per rank per step
    micro: int  # sequences per forward pass
    accum: int  # micro batches per rank per step
    eval_rows: int  # sequences per validation forward pass (independent of the world size)


def lr_at(spec: RunSpec, step: int) -> float:
    """Learning rate of the update with 0-based index `step`."""
    o = spec.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, spec.steps - o.warmup_steps)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def step_u(seed: int, step: int) -> float:
    return float(np.random.default_rng([seed, step, 1]).random())


def check_spec(spec: RunSpec, world_size: int) -> BatchPlan:
    if spec.data.seq_len != spec.model.seq_len:
        raise UserError(f"data.seq_len {spec.data.seq_len} differs from model.seq_len {spec.model.seq_len}")
    if spec.optim.schedule != "cosine":
        raise UserError(f"unknown lr schedule {spec.optim.schedule!r}: only cosine is implemented")
    if spec.precision not in PRECISIONS:
        raise UserError(f"unknown precision {spec.precision!r}: choose from {', '.join(PRECISIONS)}")
    for name in ("steps", "global_batch"):
        if getattr(spec, name) <= 0:
            raise UserError(f"{name} must be > 0, got {getattr(spec, name)}")
    if spec.eval.sequences <= 0 or spec.eval.t_per_seq <= 0 or spec.eval.final_sequences < 0:
        raise UserError("eval.sequences and eval.t_per_seq must be > 0 (eval.final_sequences >= 0)")
    if spec.sharding not in SHARDINGS:
        raise UserError(f"unknown sharding {spec.sharding!r}: choose from {', '.join(SHARDINGS)}")
    if spec.global_batch % world_size:
        raise UserError(f"global_batch {spec.global_batch} is not divisible by the {world_size} processes")
    per_rank = spec.global_batch // world_size
    micro = spec.micro_batch or per_rank
    if micro <= 0 or per_rank % micro:
        raise UserError(
            f"micro_batch {spec.micro_batch} does not divide the {per_rank} sequences per process"
        )
    return BatchPlan(per_rank, micro, per_rank // micro, spec.micro_batch or spec.global_batch)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@dataclass
class RunStats:
    """What a run carries across its restarts (saved in every checkpoint)."""

    train_time: float = 0.0  # seconds of timed training steps (compilation and evaluation excluded)
    timed_steps: int = 0
    compile_s: float | None = None
    checkpoint_s: float | None = None  # the longest checkpoint write
    wall_s: float = 0.0
    restarts: int = 0
    recent: list[float] = field(default_factory=list)  # the last training losses
    last_eval: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, saved: dict, step: int) -> RunStats:
        """The stats of a checkpoint; those of earlier versions timed every step they trained."""
        return records.from_dict(cls, {"timed_steps": step} | saved, "checkpoint stats", ignore_unknown=True)


def _times(arm: Arm, n: int, u: float) -> Tensor:
    t = arm.sample_t(n, u)
    assert t is not None  # called for diffusion arms only
    return t


class _Signals:
    """Records SIGTERM/SIGUSR2/SIGINT; the loop checkpoints at the next step boundary. A second
    Ctrl-C interrupts at once (KeyboardInterrupt), losing the steps since the last checkpoint."""

    def __init__(self, enabled: bool):
        self.received = 0
        self.previous = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def evaluate(
    model: nn.Module,
    arm: Arm,
    windows: np.ndarray,
    spec: RunSpec,
    plan: BatchPlan,
    env: dist.DistEnv,
    device: torch.device,
    beat: Callable[[], None] = lambda: None,
) -> tuple[float, float]:
    """Mean and standard error over windows of the per-window validation loss (nats/token);
    `beat` is called once per chunk (a long final evaluation is progress too)."""
    n = len(windows)
    diffusion = arm.sample_t(1, 0.0) is not None  # AR's NLL is exact: one pass per window
    k = spec.eval.t_per_seq if diffusion else 1
    u = np.random.default_rng([spec.eval.seed, 0]).random(n)
    per_chunk = max(1, plan.eval_rows // k)
    place = accelerator.placement(device)
    per_window = torch.zeros(n, dtype=torch.float64, device=place)
    chunks = range(0, n, per_chunk)
    # a sharded model's forward needs every process (its all-gathers): in the last round a process
    # without a chunk of its own evaluates the last chunk again and drops the result
    rounds = -(-len(chunks) // env.world_size) * env.world_size if sharding.sharded(model) else len(chunks)
    model.eval()
    with torch.no_grad(), autocast_for(spec.precision, device):
        for c in range(env.rank, rounds, env.world_size):
            beat()
            start = chunks[min(c, len(chunks) - 1)]
            idx = np.arange(start, min(n, start + per_chunk))
            x = torch.from_numpy(windows[idx].astype(np.int64)).to(place).repeat_interleave(k, dim=0)
            t = torch.cat([_times(arm, k, ui) for ui in u[idx]]) if diffusion else None
            rows = Noise((spec.eval.seed,), first_row=start * k, device=place)  # keyed by (window, time)
            losses = arm.validation_loss(model, x, t, rows).double().view(len(idx), k)
            if c < len(chunks):
                per_window[torch.from_numpy(idx).to(place)] = losses.mean(dim=1)
    model.train()
    per_window = dist.all_reduce_sum(per_window).cpu()
    return per_window.mean().item(), (per_window.std() / math.sqrt(n)).item() if n > 1 else 0.0


def _truncate_log(path: Path, step: int) -> None:
    """Repairs a log before a resumed run appends to it: keeps the rows of the steps up to the
    checkpoint's (the resumed run writes the later ones again) and drops every line that is not a
    row with an integer step (a torn write, garbage)."""
    if path.exists():
        rows = [r for r in atomic.read_jsonl(path) if type(r.get("step")) is int and r["step"] <= step]
        atomic.write_text(path, "".join(_json_line(r) for r in rows))


def _json_line(obj) -> str:
    return json.dumps(obj, default=atomic._default) + "\n"


def _compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if accelerator.precision_name(precision, device) == "bf16" else torch.float32


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def train(spec: RunSpec, run_dir: str | Path, *, handle_signals: bool = True, log=None) -> store.RunResult:
    """Trains `spec` into `run_dir` (see the module docstring); returns its result.json.

    Raises UserError for bad input before anything in run_dir is written, and Preempted after
    checkpointing when a stop signal arrived. `log` receives progress lines (default: print)."""
    run_dir = Path(run_dir)
    if (run_dir / store.SPEC_FILE).exists():
        other = store.load_run_spec(run_dir).run_key
        if other != spec.run_key:
            raise UserError(f"{run_dir} holds run {other}, not {spec.run_key}: use another --out folder")
    result = store.read_result(run_dir)
    if result is not None:
        return result
    if os.environ.get("SCALING_THREADS"):
        torch.set_num_threads(int(os.environ["SCALING_THREADS"]))
    env = dist.detect()
    arm = get_arm(spec.arm, spec.model.vocab)
    plan = check_spec(spec, env.world_size)
    say = log or (lambda m: print(m, flush=True))
    # one live trainer per run folder: rank 0 holds it (a second one waits, then stops)
    wait_s = float(os.environ.get("SCALING_OWNER_WAIT_S", store.OWNER_WAIT_S))
    with store.hold_run(run_dir, wait_s, say) if env.is_main else nullcontext():
        result = store.read_result(run_dir)  # the trainer we waited for may have finished it
        if result is not None:
            return result
        device = accelerator.device_for(env.local_rank)
        # nccl for CUDA tensors, gloo for CPU ones; the other ranks may wait for rank 0's checkpoint
        dist.init(env, accelerator.placement(device), timeout_s=600 + 4 * placement.save_seconds(spec))
        signals = _Signals(handle_signals)
        try:
            return _Session(spec, run_dir, arm, plan, env, device, log).run(signals)
        finally:
            signals.restore()
            dist.shutdown()


@dataclass
class TrainStep:
    """One optimizer step of one rank: its rows of the global batch in micro batches (gradients
    accumulated, DDP or FSDP synchronising on the last), clipping, AdamW. Returns this rank's mean loss and
    the gradient norm as device scalars: nothing here waits for the device. A non-finite step is
    not skipped: the session sees it at its next read of the losses and ends the run there as
    diverged at that step, and nothing trained after it is kept."""

    spec: RunSpec
    plan: BatchPlan
    env: dist.DistEnv
    arm: Arm
    model: nn.Module  # the parameters (DTensor shards under FSDP)
    wrapped: nn.Module  # what runs the forward: the model under DDP or FSDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    device: torch.device  # the run's device (its precision)

    def __call__(self, s: int, lr: float, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec, plan, env = self.spec, self.plan, self.env
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        lo, hi = env.rank * plan.per_rank, (env.rank + 1) * plan.per_rank
        t_global = self.arm.sample_t(spec.global_batch, step_u(spec.seed, s))
        t = None if t_global is None else t_global[lo:hi]
        loss_sum = torch.zeros((), device=batch.device)
        for m in range(plan.accum):
            rows = slice(m * plan.micro, (m + 1) * plan.micro)
            noise = Noise((spec.seed, s), first_row=lo + m * plan.micro, device=batch.device)
            last = m == plan.accum - 1
            with nullcontext() if last else sharding.no_gradient_sync(self.wrapped):
                with autocast_for(spec.precision, self.device):
                    loss = self.arm.training_loss(
                        self.wrapped, batch[rows], None if t is None else t[rows], noise
                    )
                (loss / plan.accum).backward()
            loss_sum += loss.detach().float()
        clip = spec.optim.grad_clip if spec.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)  # of all shards
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / plan.accum, sharding.full(grad_norm).float()


class Heartbeat:
    """Touches <run_dir>/heartbeat at most every BEAT_S seconds (rank 0 only): the SLURM job's
    watchdog (scaling/executors/slurm.py) takes a heartbeat that stops as a stuck trainer."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / store.HEARTBEAT_FILE if enabled else None
        self.last = -math.inf

    def __call__(self) -> None:
        now = time.monotonic()
        if self.path is not None and now - self.last >= BEAT_S:
            self.path.touch()
            self.last = now


class _Session:
    """One process's part of a run, from the checkpoint it resumes (if any) to result.json.

    `device` is the run's device (its facts: name, peak, precision, compile); its tensors live on
    accelerator.placement(device), which is the same device except under the tests' CUDA stand-in.
    """

    def __init__(
        self,
        spec: RunSpec,
        run_dir: Path,
        arm: Arm,
        plan: BatchPlan,
        env: dist.DistEnv,
        device: torch.device,
        log,
    ) -> None:
        self.spec, self.run_dir, self.arm, self.plan, self.env = spec, run_dir, arm, plan, env
        self.device, self.place = device, accelerator.placement(device)
        self.log = log or (lambda m: print(m, flush=True))
        self.started = time.time()
        self.last_save = time.monotonic()

        # everything that can be wrong with the input is checked before run_dir is written
        if env.is_main:
            data.prepare_data(spec.data, log=self.say)
        dist.barrier()  # the other ranks find the shards prepared
        shards = data.open_shards(data.folder_of(spec.data))  # the manifest only
        if shards.vocab_size >= spec.model.vocab:
            raise UserError(
                f"the shards have {shards.vocab_size} token ids but the model's vocabulary is {spec.model.vocab} "
                f"(incl. [MASK]): set model.vocab to {shards.vocab_size + 1}"
            )
        self.sampler = data.WindowSampler(shards.train, spec.data.seq_len, spec.seed)
        # the final evaluation's windows in a fixed shuffled order: the ones during the run are its
        # first eval.sequences, so every evaluation is a sample of the same set
        final = max(spec.eval.sequences, spec.eval.final_sequences)
        windows = data.validation_windows(shards.val, spec.data.seq_len, final)
        self.windows = windows[np.random.default_rng([spec.eval.seed, 7]).permutation(final)]
        state = checkpoint.load_latest(run_dir, spec.run_key, warn=self.say)
        if state is not None:
            self.sampler.load_state_dict(state["data"])  # UserError if the shards changed

        torch.manual_seed(spec.seed)
        self.model = DiT(spec.model)
        if state is not None and "model" in state:  # memory-mapped tensors become the weights: no copy
            self.model.load_state_dict(state["model"], assign=True)
        self.model.to(self.place)
        self.model.checkpoint_blocks = spec.activation_checkpointing
        compute = _compute_dtype(spec.precision, device)
        # before the optimizer: FSDP replaces the parameters by their shards
        self.wrapped = sharding.wrap(self.model, spec.sharding, env, self.place, compute)
        cuda = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, spec.optim.weight_decay),
            lr=spec.optim.lr,
            betas=spec.optim.betas,
            eps=spec.optim.eps,
            # fused kernels on CUDA; on the CPU foreach beats the per-tensor default for many small tensors
            fused=cuda or None,
            foreach=None if cuda else True,
        )
        self.stats = RunStats()
        self.start = 0
        if state is not None:
            self._restore(state)
        self.compiled = accelerator.compiles(spec.compile, device)
        if self.compiled:
            self.wrapped = cast(nn.Module, torch.compile(self.wrapped))
        self.step = TrainStep(
            spec,
            plan,
            env,
            arm,
            self.model,
            self.wrapped,
            self.optimizer,
            device,
        )
        self.recent = deque(self.stats.recent, maxlen=RECENT)
        self.flops_per_step = {
            c: spec.global_batch * train_flops_per_seq(spec.model, c, spec.arm) for c in CONVENTIONS
        }
        peak = accelerator.peak_flops(device)
        self.peak = peak * env.world_size if peak else None
        accelerator.reset_peak_memory(device)

    def say(self, msg: str) -> None:
        if self.env.is_main:
            self.log(msg)

    def _restore(self, state: dict) -> None:
        if "shards" in state:
            checkpoint.load_sharded(Path(state["shards"]), self.model, self.optimizer)
        elif "optimizer" in state:  # a finished run's last checkpoint has none (nothing is left to train)
            if sharding.sharded(self.model):  # checkpointed under DDP, resumed sharded
                checkpoint.load_full_optimizer(self.model, self.optimizer, state["optimizer"])
            else:  # the weights were loaded with the model
                self.optimizer.load_state_dict(state["optimizer"])
        # checkpoints of earlier versions timed every step
        self.stats = RunStats.from_checkpoint(state["stats"], state["step"])
        self.stats.restarts += 1
        threads = state.get("threads")
        if self.place.type == "cpu" and isinstance(threads, int) and threads != torch.get_num_threads():
            # CPU kernels split their sums by thread: the same count keeps a resumed run bitwise equal
            self.say(
                f"resuming with {threads} CPU threads, as the run was trained (not {torch.get_num_threads()})"
            )
            torch.set_num_threads(threads)
        self.start = state["step"]
        if len(state["rng"]) == self.env.world_size:
            checkpoint.set_rng_state(state["rng"][self.env.rank])
        else:
            self.say(
                f"warning: the checkpoint has the RNGs of {len(state['rng'])} processes, not "
                f"{self.env.world_size}: global RNGs not restored"
            )
        self.say(f"resumed {self.spec.run_key} from step {self.start}")

    def cumulative(self, step: int) -> dict:
        spec = self.spec
        return {
            "step": step,
            "tokens": step * spec.global_batch * spec.data.seq_len,
            "flops": {c: step * f for c, f in self.flops_per_step.items()},
        }

    def run(self, signals: _Signals) -> store.RunResult:
        spec, run_dir, plan = self.spec, self.run_dir, self.plan
        self.loggers = open_loggers(spec, run_dir, self.start, self.env.is_main)  # jsonl + trackers
        if self.env.is_main:  # from here on the run folder is written, by rank 0
            store.ensure_run(run_dir, spec)
            # a run `scaling cancel` marked meanwhile stays so: the job's SIGTERM is on its way
            store.mark_running(run_dir, os.environ.get(store.JOB_ID_ENV))
            for name in ("metrics.jsonl", "evals.jsonl"):
                _truncate_log(run_dir / name, self.start)
        self.beat = Heartbeat(run_dir, self.env.is_main)
        self.beat()
        rows = (self.env.rank * plan.per_rank, (self.env.rank + 1) * plan.per_rank)
        loader = BatchLoader(self.sampler, spec.global_batch, rows, self.start, spec.steps, self.place)
        try:
            return self._loop(signals, loader)
        finally:
            loader.close()
            self.loggers.close(sys.exc_info()[1])  # why the run stops early, if it does

    def _boundary(self, step: int) -> bool:
        """Steps after which the host reads the device's losses (one synchronisation): every
        SYNC_EVERY steps at most, every logged, evaluated or checkpointed step, the first and last."""
        spec, every = self.spec, self.spec.checkpoint_every
        return (
            step % min(self.log_every, SYNC_EVERY) == 0
            or step in (self.start + 1, spec.steps)
            or (spec.eval.every > 0 and step % spec.eval.every == 0)
            or (every > 0 and step % every == 0)
        )

    def _loop(self, signals: _Signals, loader: BatchLoader) -> store.RunResult:
        spec = self.spec
        self.log_every, print_every = max(1, spec.steps // 200), max(1, spec.steps // 20)
        pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []  # (step, lr, loss, norm)
        interval_time, interval_steps = 0.0, 0  # timed training since the last logged row
        self.wrapped.train()
        t0 = time.perf_counter()
        for s in range(self.start, spec.steps):
            lr = lr_at(spec, s)
            loss, norm = self.step(s, lr, loader.get(s))
            step = s + 1
            pending.append((step, lr, loss, norm))
            if not self._boundary(step):
                continue
            values, stop, due = self.read(pending, signals.received)
            self.beat()  # the device has caught up with the host: the steps are done
            elapsed = time.perf_counter() - t0
            if self.compiled and s == self.start:  # the first step compiled the model: timed apart
                self.stats.compile_s = (self.stats.compile_s or 0.0) + elapsed
                self.say(f"[{spec.run_key}] torch.compile and the first step took {elapsed:.1f}s")
                elapsed, timed = 0.0, 0
            else:
                timed = len(pending)
            self.stats.train_time += elapsed
            self.stats.timed_steps += timed
            interval_time += elapsed
            interval_steps += timed
            pending.clear()
            for at, at_lr, train_loss, grad_norm in values:
                if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                    return self.finish(self.cumulative(at - 1), diverged_step=at)
                self.recent.append(train_loss)
                if at % self.log_every == 0 or at in (self.start + 1, spec.steps):
                    speed = (
                        interval_steps * spec.global_batch * spec.data.seq_len / interval_time
                        if interval_time > 0
                        else None
                    )
                    mfu = self._mfu(interval_steps, interval_time)
                    if self.env.is_main:
                        self.loggers.train(
                            {
                                **self.cumulative(at),
                                "train_loss": train_loss,
                                "lr": at_lr,
                                "grad_norm": grad_norm,
                                "tokens_per_s": speed,
                                "mfu": mfu,
                                "wall_s": self.wall_s(),
                                **accelerator.memory_stats(self.device),
                            },
                        )
                    if at % print_every == 0 or at in (self.start + 1, spec.steps):
                        self.say(
                            self._progress_line(
                                at, train_loss, at_lr, speed, mfu, interval_time, interval_steps
                            )
                        )
                    interval_time, interval_steps = 0.0, 0
            if (spec.eval.every > 0 and step % spec.eval.every == 0) or step == spec.steps:
                self.validate(step)
            stopping = stop and step < spec.steps
            if (
                (spec.checkpoint_every > 0 and step % spec.checkpoint_every == 0)
                or step == spec.steps
                or stopping
                or due
            ):
                self.snapshot(step)
            if stopping:
                raise Preempted(step, signals.received or int(signal.SIGTERM))
            t0 = time.perf_counter()  # evaluation and checkpoints are not training time
        return self.finish(self.cumulative(spec.steps), diverged_step=None)

    def _mfu(self, steps: int, seconds: float) -> float | None:
        """Model FLOPs utilisation: the causal convention's FLOPs (attention halved for causal arms:
        the work actually done) over the devices' peak."""
        if not self.peak or seconds <= 0:
            return None
        return steps * self.flops_per_step["causal"] / seconds / self.peak

    def _progress_line(
        self,
        step: int,
        loss: float,
        lr: float,
        speed: float | None,
        mfu: float | None,
        seconds: float,
        steps: int,
    ) -> str:
        spec = self.spec
        eta = f" eta {duration((spec.steps - step) * seconds / steps)}" if steps else ""
        speed_text = f" {speed:,.0f} tok/s" if speed is not None else ""
        mfu_text = f" mfu {mfu:.2f}" if mfu is not None else ""
        return f"[{spec.run_key}] step {step}/{spec.steps} loss {loss:.4f} lr {lr:.2e}{speed_text}{mfu_text}{eta}"

    def read(
        self, pending: list[tuple[int, float, torch.Tensor, torch.Tensor]], signal_received: int
    ) -> tuple[list[tuple[int, float, float, float]], bool, bool]:
        """The pending steps' losses averaged over ranks and their gradient norms, whether any rank
        received a stop signal and whether rank 0's clock says a checkpoint is due (every rank
        must decide alike): one all-reduce and one copy to the host."""
        world = self.env.world_size
        minutes = self.spec.checkpoint_minutes
        due = minutes > 0 and self.env.is_main and time.monotonic() - self.last_save >= 60 * minutes
        flags = torch.cat(
            [
                torch.stack([loss for _, _, loss, _ in pending]),
                torch.stack([norm for _, _, _, norm in pending]) / world,  # identical on every rank
                torch.tensor([float(signal_received), float(due)], device=self.place),
            ]
        )
        host = dist.all_reduce_sum(flags).tolist()
        n = len(pending)
        values = [(step, lr, host[i] / world, host[n + i]) for i, (step, lr, _, _) in enumerate(pending)]
        return values, host[-2] > 0, host[-1] > 0

    def validate(self, step: int) -> None:
        n = len(self.windows) if step == self.spec.steps else self.spec.eval.sequences
        val, err = evaluate(
            self.model, self.arm, self.windows[:n], self.spec, self.plan, self.env, self.device, self.beat
        )
        self.stats.last_eval = {"step": step, "val_loss": val, "val_loss_stderr": err}
        if self.env.is_main:
            self.loggers.eval(
                {
                    **self.cumulative(step),
                    "val_loss": _finite_or_none(val),
                    "val_loss_stderr": _finite_or_none(err),
                },
            )
        self.say(f"[{self.spec.run_key}] step {step}/{self.spec.steps} val_loss {val:.4f} +- {err:.4f}")

    def wall_s(self) -> float:
        return self.stats.wall_s + time.time() - self.started

    def snapshot(self, step: int) -> None:
        t0 = time.monotonic()
        rngs = dist.all_gather_objects(checkpoint.rng_state())
        state = {
            "run_key": self.spec.run_key,
            "spec": self.spec.to_dict(),
            "data": self.sampler.state_dict(position=step * self.spec.global_batch),
            "rng": rngs,
            "world_size": self.env.world_size,
            "threads": torch.get_num_threads(),
            "stats": asdict(replace(self.stats, wall_s=self.wall_s(), recent=list(self.recent))),
        }
        if self.spec.sharding == "fsdp" and step < self.spec.steps:
            checkpoint.save_sharded(self.run_dir, step, state, self.model, self.optimizer)
        elif sharding.sharded(self.model):  # the last step: the full weights, nothing left to optimize
            full = get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )  # gathered on rank 0 only
            if self.env.is_main:
                checkpoint.save(self.run_dir, step, {**state, "model": full})
        elif self.env.is_main:
            checkpoint.save(
                self.run_dir,
                step,
                {**state, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
            )
        dist.barrier()  # the other ranks wait here, not inside their next collective
        self.beat()
        seconds = time.monotonic() - t0
        self.last_save = time.monotonic()
        self.stats.checkpoint_s = max(self.stats.checkpoint_s or 0.0, seconds)
        if seconds > 30:
            self.say(f"[{self.spec.run_key}] checkpoint at step {step} took {seconds:.0f}s")

    def finish(self, progress: dict, diverged_step: int | None) -> store.RunResult:
        """Writes result.json and the final status; returns the result."""
        last = self.stats.last_eval if diverged_step is None else None
        val = last["val_loss"] if last else None
        train_time, timed = self.stats.train_time, self.stats.timed_steps
        tokens_per_step = self.spec.global_batch * self.spec.data.seq_len
        memory = accelerator.memory_stats(self.device)
        result = store.RunResult(
            status="done" if diverged_step is None else "diverged",
            run_key=self.spec.run_key,
            val_loss=_finite_or_none(val),
            val_loss_stderr=_finite_or_none(last["val_loss_stderr"]) if last else None,
            val_ppl=math.exp(val) if val is not None and val < 700 else None,
            train_loss=_finite_or_none(float(np.mean(self.recent))) if self.recent else None,
            steps=progress["step"],
            tokens=progress["tokens"],
            flops=progress["flops"],
            wall_s=self.wall_s(),
            tokens_per_s=timed * tokens_per_step / train_time if train_time > 0 else None,
            mfu=self._mfu(timed, train_time),
            device=accelerator.device_name(self.device),
            precision=accelerator.precision_name(self.spec.precision, self.device),
            attention=attention_backend(self.device, _compute_dtype(self.spec.precision, self.device)),
            compile_s=self.stats.compile_s,
            checkpoint_s=self.stats.checkpoint_s,
            max_memory_gb=memory.get("max_allocated_gb"),
            world_size=self.env.world_size,
            restarts=self.stats.restarts,
            diverged_step=diverged_step,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            git_sha=paths.git_sha(),
        )
        if self.env.is_main:
            if diverged_step is None:
                checkpoint.finalize(self.run_dir)  # the final weights stay, the optimizer's state goes
            store.write_result(self.run_dir, result)
            if diverged_step is None:
                store.write_status(self.run_dir, "done")
            else:
                store.write_status(
                    self.run_dir, "diverged", reason=f"non-finite loss or gradient at step {diverged_step}"
                )
        if diverged_step is None:
            self.say(f"[{self.spec.run_key}] done: val_loss {val:.4f} in {result.wall_s:.0f}s")
        else:
            self.say(f"[{self.spec.run_key}] diverged at step {diverged_step}: non-finite loss or gradient")
        return result
