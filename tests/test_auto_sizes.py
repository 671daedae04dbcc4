"""`sizes: auto`: the config, the plan of the lowest budget, windows placed from finished lower
budgets (run folders answered by a known law), extensions of a cell whose vertex fell outside,
and `scaling sweep` placing and submitting the next budget itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from test_local_executor import sweep_env

from analysis.isoflop import fit_cells
from analysis.synthetic import CHINCHILLA_LAW, write_run_folder
from scaling import executors, paths, store
from scaling.cli import main
from scaling.config import AUTO, load_sweep
from scaling.errors import UserError
from scaling.executors import Executor, JobInfo
from scaling.flops import params_non_embedding
from scaling.plan import plan_sweep, summary_lines
from scaling.workflows.adaptive import EXTRA_SIZES, placed_plan

AUTO_SWEEP = """defaults:
  - cluster: local
  - _self_
name: a
arms: [mdlm-ce]
budgets: [2e9, 8e9, 3.2e10]
flops_convention: attention
ladder: {{generate: {{min_params: 1.0e3, max_params: 3.0e6, count: 40, max_layers: 4}}}}
sizes: auto
expected_tokens_per_param: {tokens_per_param}
data: {{corpus: "{corpus}", tokenizer: bytes, vocab_size: 257, seq_len: 32, val_fraction: 0.2}}
train: {{global_batch: 4, lr: 1e-2, warmup_fraction: 0.1, min_warmup_steps: 2}}
eval: {{evals_per_run: 2, sequences: 8, t_per_seq: 2}}
"""


def write_auto(root, tokens_per_param: float = 20) -> None:
    corpus = (root / "corpus.txt").read_text()
    (root / "sweeps" / "a.yaml").write_text(
        AUTO_SWEEP.format(tokens_per_param=tokens_per_param, corpus=corpus)
    )


@pytest.fixture
def env(tmp_path, monkeypatch, text_corpus):
    root = sweep_env(tmp_path, monkeypatch, text_corpus)
    (root / "corpus.txt").write_text(str(text_corpus))
    write_auto(root)
    return root


def answer(plan) -> int:
    """Finishes every planned run that has no result yet with the Chinchilla law's loss."""
    written = 0
    for d in plan.details:
        if not (paths.run_dir(plan.sweep.name, d.run_key) / store.RESULT_FILE).exists():
            write_run_folder(paths.runs_dir(plan.sweep.name), d.spec, law=CHINCHILLA_LAW, evals=1)
            written += 1
    return written


def cells_of(plan):
    rows = plan.details
    b = np.array([d.spec.budget_flops for d in rows])
    n = np.array([float(d.params_non_embedding) for d in rows])
    t = np.array([float(d.tokens) for d in rows])
    loss = np.array([store.read_result(paths.run_dir(plan.sweep.name, d.run_key)).val_loss for d in rows])
    return fit_cells("mdlm-ce", b, n, t, b, loss)[0]


def test_config_values(env):
    cfg = load_sweep("a")
    assert cfg.sizes == AUTO and cfg.auto_sizes.n_sizes == 5
    for overrides, message in (
        (["auto_sizes.n_sizes=2"], "auto_sizes.n_sizes 2: an IsoFLOP parabola needs at least 3 sizes"),
        (["auto_sizes.span=5"], "auto_sizes needs 0 < span <= max_span"),
        (["size_rule={min_tokens_per_param: 1, max_tokens_per_param: 9}"], "keep one"),
        (["++arm_sizes.ar=[{models: [d8-l1]}]"], "drop arm_sizes (override ~arm_sizes)"),
        (["sizes=autom"], "sizes: expected `auto` or a list of {budget, models} records, got 'autom'"),
        (
            ["auto_sizes.arm_models.mdlm-ce=[d999-l9]"],
            "auto_sizes.arm_models.mdlm-ce: unknown model 'd999-l9'",
        ),
    ):
        with pytest.raises(UserError, match=None) as e:
            plan_sweep(load_sweep("a", overrides))
        assert message in str(e.value), (overrides, str(e.value))


def test_the_lowest_budget_is_centred_by_tokens_per_parameter(env):
    cfg = load_sweep("a")
    plan = plan_sweep(cfg)
    assert {d.spec.budget_flops for d in plan.details} == {2e9}
    assert plan.pending == [("mdlm-ce", 8e9), ("mdlm-ce", 3.2e10)]
    ln_n = sorted(math.log(d.params_non_embedding) for d in plan.details)
    centre = math.log(math.sqrt(2e9 / (6 * 20)))
    assert len(ln_n) == 5 and ln_n[0] < centre < ln_n[-1]
    assert abs((ln_n[-1] - ln_n[0]) - cfg.auto_sizes.span) < 1.0  # the nearest shapes to the targets
    assert all("lowest budget: centred on N" in d.why for d in plan.details)
    text = "\n".join(summary_lines(plan))
    assert (
        "sizes: auto: mdlm-ce @ 2e9:" in text
        and "placed once the lower budgets are done: 8e9 (mdlm-ce)" in text
    )


def test_windows_follow_the_finished_budgets_to_interior_vertices(env):
    cfg = load_sweep("a")
    rounds = 0
    while True:
        plan = placed_plan(cfg, 1e12)
        if not answer(plan) and not plan.pending:
            break
        rounds += 1
        assert rounds < 10
    assert sorted({d.spec.budget_flops for d in plan.details}) == [2e9, 8e9, 3.2e10]
    cells = cells_of(plan)
    assert [c.valid for c in cells] == [True, True, True]
    whys = {b: next(d.why for d in plan.details if d.spec.budget_flops == b) for b in (8e9, 3.2e10)}
    assert "from the vertex at 2e9" in whys[8e9] and "widened for the unmeasured exponent" in whys[8e9]
    assert "power law through 2 lower vertices (95%" in whys[3.2e10]
    # the same run folders give the same plan (a second `scaling sweep` submits nothing new)
    assert [d.run_key for d in placed_plan(cfg, 1e12).details] == [d.run_key for d in plan.details]


def test_a_vertex_outside_its_window_gets_sizes_on_its_side(env):
    """A wildly wrong expected_tokens_per_param puts the lowest window far above the optimum: the
    vertex falls below its sizes, sizes are added below it, and the budgets above wait for them."""
    write_auto(env, tokens_per_param=0.01)
    cfg = load_sweep("a")
    first = placed_plan(cfg, 1e12)
    answer(first)
    (low,) = cells_of(first)
    assert not low.valid and low.parabola.vertex_x < low.ln_n_min
    second = placed_plan(cfg, 1e12)
    added = [d for d in second.details if d.run_key not in {x.run_key for x in first.details}]
    assert len(added) == EXTRA_SIZES and all(d.spec.budget_flops == 2e9 for d in added)
    assert max(d.params_non_embedding for d in added) < min(d.params_non_embedding for d in first.details)
    assert "the vertex fell below these sizes" in added[0].why and second.pending


@dataclass(frozen=True)
class OracleConfig:
    executor: str = "oracle"
    poll_s: float = 0.05
    wait_timeout_h: float = 1.0


class OracleExecutor(Executor):
    """Runs finish as soon as they are submitted, with the Chinchilla law's loss."""

    name = "oracle"
    Config = OracleConfig
    detached = False
    submissions: ClassVar[list[int]] = []

    def resources(self, run) -> dict:
        return {}

    def submit(self, sweep_dir, runs, record, exclude=()) -> None:
        self.submissions.append(len(runs))
        for run in runs:
            write_run_folder(run.run_dir.parent, run.spec, law=CHINCHILLA_LAW, evals=1)
            record({run.run_key: self.job_id(run.run_key)})

    @classmethod
    def poll(cls, job_ids):
        return {j: JobInfo("ended") for j in job_ids}

    @classmethod
    def cancel(cls, job_ids) -> None:
        return None


def test_sweep_submits_the_next_budget_when_the_previous_is_done(env, monkeypatch, capsys):
    monkeypatch.setitem(executors.EXECUTORS, "oracle", OracleExecutor)
    (env / "sweeps" / "cluster" / "oracle.yaml").write_text("executor: oracle\npoll_s: 0.05\n")
    OracleExecutor.submissions = []
    assert main(["sweep", "a", "cluster=oracle", "--no-wait"]) == 0
    assert OracleExecutor.submissions == [5]  # the lowest budget only: the others wait for it
    assert "placed once the lower budgets are done" in capsys.readouterr().out
    assert main(["sweep", "a", "cluster=oracle"]) == 0  # placed and submitted in turn, waiting between
    out = capsys.readouterr().out
    assert OracleExecutor.submissions == [5, 5, 5]  # then 8e9, then 3.2e10, each once the lower one ended
    plan = placed_plan(load_sweep("a"), 1e12)
    assert not plan.pending and len({d.spec.budget_flops for d in plan.details}) == 3
    assert "sizes: auto: mdlm-ce @ 3.2e10" in out
    sizes = {d.spec.budget_flops: params_non_embedding(d.spec.model) for d in plan.details}
    assert sizes[3.2e10] > sizes[2e9]
