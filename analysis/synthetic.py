"""Synthetic sweeps drawn from a known law, for tests, benchmarks and demonstrations.

`isoflop_runs` samples an IsoFLOP grid from a Chinchilla-form law with C = 6 N D and writes a
table with the minimal columns of analysis/table.py (plus run_key); `compute_scale` > 1 makes an
arm that reaches every loss with 1/compute_scale of the compute (its multiplier against the
unscaled arm is exactly compute_scale under C = 6 N D).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

# Hoffmann et al. 2022, Approach 3 estimates (docs/methods.md, "Approach 3")
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        return self.E + self.A * np.power(n, -self.alpha) + self.B * np.power(d, -self.beta)

    def n_opt(self, c):
        """Compute-optimal N under C = 6 N D (Hoffmann et al. eq. 4)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * np.power(np.asarray(c) / 6, b / (a + b))


CHINCHILLA_LAW = Law(**CHINCHILLA)


def isoflop_runs(
    law: Law = CHINCHILLA_LAW,
    budgets=(6e18, 1e19, 3e19, 6e19, 1e20),
    sizes_per_budget: int = 9,
    span: float = 4.0,
    noise: float = 0.0,
    seed: int = 0,
    arm: str = "synthetic",
    compute_scale: float = 1.0,
    repeats: int = 1,
) -> dict[str, np.ndarray]:
    """Sizes log-spaced in [N_opt / span, N_opt * span] per budget; loss times exp(noise * z)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {
        k: [] for k in ("arm", "budget_flops", "params_non_embedding", "tokens", "val_loss")
    }
    for c in budgets:
        eff = c * compute_scale  # the arm trains as if it had compute_scale times the FLOPs
        n_opt = float(law.n_opt(eff))
        n = np.repeat(np.geomspace(n_opt / span, n_opt * span, sizes_per_budget), repeats)
        d = c / (6 * n)
        loss = law.loss(n, d * compute_scale) * np.exp(noise * rng.standard_normal(len(n)))
        cols["arm"] += [arm] * len(n)
        cols["budget_flops"] += [float(c)] * len(n)
        cols["params_non_embedding"] += n.tolist()
        cols["tokens"] += d.tolist()
        cols["val_loss"] += loss.tolist()
    return {k: np.asarray(v) for k, v in cols.items()}


def exact_parabola_runs(
    k: float, arm: str, budgets=(1e18, 3e18, 1e19), sizes: int = 7
) -> dict[str, np.ndarray]:
    """Runs on exact parabolas in ln N whose vertices follow L*(C) = 40 (k C)^-0.06 and
    N*(C) = 0.1 (k C)^0.5 exactly: two arms with scales k1, k2 have the multiplier k1 / k2 at every
    loss, with no approximation between the runs and the fitted frontiers."""
    rows: dict[str, list] = {
        c: [] for c in ("arm", "budget_flops", "params_non_embedding", "tokens", "val_loss")
    }
    for c in budgets:
        n_star, l_star = 0.1 * (k * c) ** 0.5, 40.0 * (k * c) ** -0.06
        n = n_star * np.geomspace(0.25, 4, sizes)
        rows["arm"] += [arm] * sizes
        rows["budget_flops"] += [c] * sizes
        rows["params_non_embedding"] += n.tolist()
        rows["tokens"] += (c / (6 * n)).tolist()
        rows["val_loss"] += (l_star + 0.04 * np.log(n / n_star) ** 2).tolist()
    return {key: np.asarray(v) for key, v in rows.items()}


def to_table(*parts: dict[str, np.ndarray]) -> pa.Table:
    """Concatenates parts from isoflop_runs into a table with a unique run_key per row."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cols["run_key"] = np.array([f"{a}-{i}" for i, a in enumerate(cols["arm"])])
    return pa.table({k: pa.array(v.tolist()) for k, v in cols.items()})


def run_specs(
    arms=("mdlm-ce", "mdlm-elbo"),
    budgets=(1e12, 3e12),
    widths=(16, 24, 32, 48, 64),
    seeds=(0,),
    n_layers: int = 2,
    seq_len: int = 64,
    global_batch: int = 8,
    vocab: int = 257,
):
    """Real RunSpecs of a tiny IsoFLOP grid (steps = floor(C / (3 F B)) in the reference convention)."""
    from scaling.flops import ModelShape, train_flops_per_seq
    from scaling.spec import DataSpec, EvalSpec, OptimSpec, RunSpec

    specs = []
    for arm in arms:
        for c in budgets:
            for d in widths:
                shape = ModelShape(f"d{d}x{n_layers}", d, n_layers, max(1, d // 8), vocab, seq_len)
                steps = int(c // (train_flops_per_seq(shape, "reference", arm) * global_batch))
                for seed in seeds:
                    specs.append(
                        RunSpec(
                            arm=arm,
                            model=shape,
                            budget_flops=float(c),
                            flops_convention="reference",
                            steps=steps,
                            global_batch=global_batch,
                            optim=OptimSpec(lr=1e-3, min_lr=1e-4, warmup_steps=10),
                            data=DataSpec(
                                corpus="shakespeare", tokenizer="bytes", vocab_size=vocab - 1, seq_len=seq_len
                            ),
                            eval=EvalSpec(every=max(1, steps // 2), sequences=16),
                            seed=seed,
                            sweep="synthetic",
                        )
                    )
    return specs


def write_run_folder(runs_dir, spec, state: str = "done", law: Law = CHINCHILLA_LAW, evals: int = 3) -> float:
    """A run folder as the trainer and executors leave it (docs/run-folder.md); returns its val_loss.

    state: done | diverged (result.json written) or any status.json state (no result.json).
    The loss is the law at (non-embedding parameters, tokens), so fits of collected folders are checkable.
    """
    from pathlib import Path

    from scaling.flops import CONVENTIONS, params_non_embedding, train_flops_per_seq
    from scaling.store import RESULT_FILE, RunResult

    folder = Path(runs_dir) / spec.run_key
    folder.mkdir(parents=True, exist_ok=True)  # plain writes: fsync per file would make 10,000 folders slow
    (folder / "spec.yaml").write_text(spec.to_yaml())
    tokens_per_step = spec.global_batch * spec.model.seq_len
    flops_per_step = {
        c: train_flops_per_seq(spec.model, c, spec.arm) * spec.global_batch for c in CONVENTIONS
    }
    n = params_non_embedding(spec.model)
    final = float(law.loss(n, spec.steps * tokens_per_step))
    steps = [max(1, spec.steps * (i + 1) // evals) for i in range(evals)]
    lines = []
    for s in steps:
        loss = float(law.loss(n, s * tokens_per_step))
        lines.append(
            json.dumps(
                {
                    "step": s,
                    "tokens": s * tokens_per_step,
                    "flops": {c: f * s for c, f in flops_per_step.items()},
                    "val_loss": loss,
                    "val_loss_stderr": 0.01,
                }
            )
        )
    (folder / "evals.jsonl").write_text("\n".join(lines) + "\n")
    ended = state in ("done", "diverged")
    (folder / "status.json").write_text(
        json.dumps(
            {
                "state": state,
                "job_id": "123",
                "requeues": 1,
                "reason": None,
                "updated_at": 0.0,
                "host": "node",
            }
        )
    )
    if ended:
        done = state == "done"
        result = RunResult(
            status=state,
            run_key=spec.run_key,
            val_loss=final if done else None,
            val_loss_stderr=0.01 if done else None,
            val_ppl=float(np.exp(final)) if done else None,
            train_loss=final + 0.01 if done else None,
            steps=spec.steps if done else steps[0],
            tokens=spec.steps * tokens_per_step,
            flops={c: f * spec.steps for c, f in flops_per_step.items()},
            wall_s=12.5,
            tokens_per_s=1000.0,
            mfu=0.3,
            device="cpu",
            diverged_step=None if done else steps[0],
            finished_at="2026-01-01T00:00:00Z",
            git_sha="abc1234",
        )
        (folder / RESULT_FILE).write_text(json.dumps(asdict(result)))
    return final
