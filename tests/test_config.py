"""The typed sweep config: schema defaults under the sweep file, record lists of sizes, user sweep
folders beside the built-in ones, multirun, and one-line errors whose suggested fixes work."""

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from scaling.config import (
    SizeList,
    SweepConfig,
    TrainConfig,
    available_sweeps,
    load_sweep,
    load_sweeps,
    sweep_from_dict,
)
from scaling.errors import UserError
from scaling.plan import plan_sweep

TRAIN_KEYS = ", ".join(f.name for f in fields(TrainConfig))
BUILT_IN = [p.stem for p in (Path(__file__).parents[1] / "sweeps").glob("*.yaml")]
SWEEP_KEYS = ", ".join(f.name for f in fields(SweepConfig))


def error_of(name, overrides=(), multirun=False) -> str:
    with pytest.raises(UserError) as e:
        for cfg in load_sweeps(name, overrides, multirun=multirun):
            plan_sweep(cfg)
    message = str(e.value)
    assert "\n" not in message
    return message


def scaling(*args, **kw):
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], capture_output=True, text=True, **kw)


# --- the schema under the sweep file ---------------------------------------------------------


def test_a_field_the_sweep_file_leaves_out_has_its_default_and_takes_an_override():
    smoke = load_sweep("smoke")  # says nothing of micro_batch, betas, eps
    assert (smoke.train.micro_batch, smoke.train.betas, smoke.train.eps) == (0, [0.9, 0.95], 1e-8)
    cfg = load_sweep("smoke", ["train.micro_batch=2", "train.eps=1e-6"])
    assert (cfg.train.micro_batch, cfg.train.eps) == (2, 1e-6)
    assert {r.spec.micro_batch for r in plan_sweep(cfg).details} == {2}
    assert load_sweep("tiny", ["train.micro_batch=4"]).train.micro_batch == 4


def test_a_new_entry_of_an_open_mapping_needs_no_plus():
    cfg = load_sweep(
        "tiny", ["train.lr_by_arm.duo=1e-3", "arm_sizes.duo=[{models: [d8-l1, d12-l1, d16-l1]}]"]
    )
    assert cfg.train.lr_by_arm == {"ar": 1e-2, "duo": 1e-3}
    assert cfg.arm_sizes["duo"] == [SizeList(None, ["d8-l1", "d12-l1", "d16-l1"])]
    duo = {r.spec.model.name for r in plan_sweep(cfg).details if r.spec.arm == "duo"}
    assert duo == {"d8-l1", "d12-l1", "d16-l1"}


def test_the_clusters_open_mappings_take_new_entries_without_plus():
    """`cluster.sbatch` (any sbatch option) is a mapping of the executor's config: a new option is set
    either way, and an unknown cluster key is the executor's one-line error, naming the known ones."""
    from scaling.executors import executor_for

    for override in ("cluster.sbatch.hold=true", "cluster.sbatch={hold: true}"):
        cfg = load_sweep("tiny", ["cluster=slurm", override])
        assert cfg.cluster["sbatch"] == {"hold": True}, override
        assert executor_for(cfg.cluster).config.sbatch == {"hold": True}
    typo = load_sweep("tiny", ["cluster=slurm", "cluster.sbatchh.hold=true"])
    with pytest.raises(UserError, match=r"unknown field\(s\) sbatchh \(known: .*sbatch"):
        executor_for(typo.cluster)


def test_sizes_are_records_and_one_budget_is_overridden_by_index():
    paper = load_sweep("paper")
    assert paper.sizes[1] == SizeList(1e19, ["19M", "48M", "85M", "170M", "206M", "336M", "666M", "944M"])
    cfg = load_sweep("paper", ["sizes.1.models=[19M,48M,85M]"])
    assert cfg.sizes[1] == SizeList(1e19, ["19M", "48M", "85M"])
    assert cfg.sizes[0] == paper.sizes[0] and cfg.sizes[2:] == paper.sizes[2:]
    at_1e19 = {r.spec.model.name for r in plan_sweep(cfg).details if r.spec.budget_flops == 1e19}
    assert at_1e19 == {"19M", "48M", "85M"}
    assert len(plan_sweep(cfg).runs) == 210 - 5 * 5


def test_a_record_without_budget_is_the_default_and_per_arm_records_come_first():
    tiny = load_sweep("tiny")
    assert tiny.arm_sizes["ar"][0] == SizeList(None, ["d12-l2", "d16-l2", "d24-l2", "d32-l2", "d48-l2"])
    ar = {}
    for r in plan_sweep(tiny).details:
        if r.spec.arm == "ar":
            ar.setdefault(r.spec.budget_flops, []).append(r.spec.model.name)
    assert ar == {
        1e11: ["d12-l2", "d16-l2", "d24-l2", "d32-l2", "d48-l2"],
        2e11: ["d12-l2", "d16-l2", "d24-l2", "d32-l2", "d48-l2"],
        4e11: ["d16-l2", "d24-l2", "d32-l2", "d48-l2", "d64-l2"],
    }


def test_cpu_replaces_tinys_size_lists_and_keeps_its_own_ar_sizes():
    """cpu inherits tiny; lists replace (not merge), and every cpu budget has its own AR record,
    so the AR sizes are the ones the dict format gave."""
    ar = {}
    for r in plan_sweep(load_sweep("cpu")).details:
        if r.spec.arm == "ar" and r.spec.seed == 0:
            ar.setdefault(r.spec.budget_flops, []).append(r.spec.model.name)
    assert ar == {
        2e11: ["d12-l2", "d16-l2", "d24-l2", "d32-l2", "d48-l2", "d64-l2"],
        5e11: ["d16-l2", "d24-l2", "d32-l2", "d48-l2", "d64-l2", "d96-l2"],
        1.25e12: ["d24-l2", "d32-l2", "d48-l2", "d64-l2", "d96-l2", "d128-l2"],
    }


def test_ladder_and_size_rule_can_be_given_on_the_command_line():
    cfg = load_sweep(
        "smoke",
        [
            "ladder={generate: {min_params: 2e3, max_params: 2e4, count: 4}}",
            "sizes=[]",
            "size_rule.min_tokens_per_param=1",
            "size_rule.max_tokens_per_param=1000",
        ],
    )
    assert cfg.ladder == {"generate": {"min_params": 2e3, "max_params": 2e4, "count": 4}}
    assert (cfg.size_rule.min_tokens_per_param, cfg.size_rule.max_tokens_per_param) == (1, 1000)
    assert plan_sweep(cfg).runs
    assert load_sweep("paper", ["ladder=paper"]).ladder == "paper"


# --- misspelt keys and wrong types ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.mcro_batch=4"], f"train.mcro_batch: no such key; train has {TRAIN_KEYS}"),
        (["+train.mcro_batch=4"], f"train.mcro_batch: no such key; train has {TRAIN_KEYS}"),
        (["trian.lr=1"], f"trian: no such key; a sweep has {SWEEP_KEYS}"),
        (["sizes.0.modls=[a]"], "sizes.0.modls: no such key; sizes.0 has budget, models"),
        (
            ["arm_sizes.ar.0.modls=[a]"],
            "arm_sizes.ar.0.modls: no such key; arm_sizes.ar.0 has budget, models",
        ),
        (["train.micro_batch=abc"], "train.micro_batch: expected an integer, got 'abc'"),
        (["train.lr=fast"], "train.lr: expected a number, got 'fast'"),
        (["seeds=[a]"], "seeds.0: expected an integer, got 'a'"),
        (["seeds=[1.5]"], "seeds.0: expected an integer, got 1.5"),
        (["train=3"], f"train: expected a mapping with keys {TRAIN_KEYS}, got 3"),
        (["sizes.0.budget=lots"], "sizes.0.budget: expected a number, got 'lots'"),
        (
            ["sizes.7.models=[d8-l1]"],
            "sizes.7.models: sizes has 3 entries (sizes.0 to sizes.2); to add one, give the whole list",
        ),
        (["cluster=slrum"], "no cluster config 'slrum': choose from local, slurm, slurm-cpu"),
        (
            ["cluster.foo=1"],
            "cluster.foo: no such key; the cluster section has executor, max_parallel, threads_per_run, poll_s, wait_timeout_h, stall_timeout_min, max_stalls",
        ),
        (["budgets=["], "bad override 'budgets=[': no viable alternative at input '['"),
    ],
)
def test_misspelt_keys_and_wrong_types_name_the_key(overrides, message):
    assert error_of("tiny", overrides) == message


@pytest.mark.parametrize(
    "name, overrides, message, fix",
    [
        ("tiny", ["arms=ar"], "arms: expected a list of strings, got 'ar': write arms=[ar]", "arms=[ar]"),
        (
            "smoke",
            ["budgets=1e12"],
            "budgets: expected a list of numbers, got 1e12: write budgets=[1e12]",
            "budgets=[1e12]",
        ),
        (
            "paper",
            ["sizes.6e18=[6M,34M,66M]"],
            "sizes.6e18: sizes is a list of {budget, models} records; the record of budget 6e18 is sizes.0: "
            "write sizes.0.models=[6M,34M,66M]",
            "sizes.0.models=[6M,34M,66M]",
        ),
        (
            "tiny",
            ["arm_sizes.ar.default=[d12-l2]"],
            "arm_sizes.ar.default: arm_sizes.ar is a list of {budget, models} records; the default record is "
            "arm_sizes.ar.0: write arm_sizes.ar.0.models=[d12-l2]",
            "arm_sizes.ar.0.models=[d12-l2]",
        ),
        (
            "smoke",
            ["sizes.2e8=[d8-l1,d16-l1,d24-l1]"],
            "sizes.2e8: sizes is a list of {budget, models} records and has no record for budget 2e8; add one: "
            "'sizes=[{models: [d8-l1, d16-l1, d24-l1]}, {budget: 2e8, models: [d8-l1, d16-l1, d24-l1]}]'",
            "sizes=[{models: [d8-l1, d16-l1, d24-l1]}, {budget: 2e8, models: [d8-l1, d16-l1, d24-l1]}]",
        ),
        (
            "paper",
            ["sizes={6e18:[6M,34M,66M]}"],
            "sizes is a list of {budget, models} records (a record without budget is the default), not a "
            "mapping: write 'sizes=[{budget: 6e18, models: [6M, 34M, 66M]}]'",
            "sizes=[{budget: 6e18, models: [6M, 34M, 66M]}]",
        ),
        (
            "smoke",
            ["budgets=[1e30]"],
            "budget 1e30 gives ar d8-l1 3.87e+23 steps, more than 2**53: lower it to at most 2.32e22, "
            "e.g. budgets=[2.32e22]",
            "budgets=[2.32e22]",
        ),
        (
            "paper",
            ["arms=[]"],
            "arms is empty: give at least one arm, e.g. arms=[ar]",
            "arms=[ar]",
        ),
    ],
)
def test_every_suggested_override_works(name, overrides, message, fix):
    assert error_of(name, overrides) == message
    assert fix in message
    # the suggested list of one record (as the mapping override said) plans that budget only
    also = ["budgets=[6e18]"] if fix.startswith("sizes=[{budget: 6e18") else []
    assert plan_sweep(load_sweep(name, [fix, *also])).runs


def test_suggested_overrides_survive_the_shell():
    """The quoted suggestion, pasted into a shell, is one argument that works."""
    message = error_of("smoke", ["sizes.2e8=[d8-l1,d16-l1,d24-l1]"])
    command = message.split("add one: ", 1)[1]
    out = subprocess.run(
        f"{sys.executable} -m scaling.cli plan smoke {command} --format csv",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 + 12


# --- values checked where they enter ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["budgets=[inf]"], "budgets: each budget must be > 0 and finite, got inf (e.g. budgets=[1e12])"),
        (["budgets=[nan]"], "budgets: each budget must be > 0 and finite, got nan (e.g. budgets=[1e12])"),
        (["budgets=[0]"], "budgets: each budget must be > 0 and finite, got 0.0 (e.g. budgets=[1e12])"),
        (
            ["budgets=[-1e12]"],
            "budgets: each budget must be > 0 and finite, got -1000000000000.0 (e.g. budgets=[1e12])",
        ),
        (["budgets=[]"], "budgets is empty: give at least one FLOP budget, e.g. budgets=[1e12]"),
        (["seeds=[]"], "seeds is empty: give at least one seed, e.g. seeds=[0]"),
        (["train.lr=nan"], "train.lr must be > 0 and finite, got nan"),
        (["train.lr=-1"], "train.lr must be > 0 and finite, got -1.0"),
        (["train.lr=inf"], "train.lr must be > 0 and finite, got inf"),
        (["train.lr_by_arm.ar=0"], "train.lr_by_arm.ar must be > 0 and finite, got 0.0"),
        (["eval.sequences=0"], "eval.sequences must be > 0 and finite, got 0"),
        (["eval.t_per_seq=-2"], "eval.t_per_seq must be > 0 and finite, got -2"),
        (["eval.evals_per_run=0"], "eval.evals_per_run must be > 0 and finite, got 0"),
        (["arms=[ar,gpt]"], "unknown arm 'gpt': choose from ar, mdlm-elbo, mdlm-ce, duo, eso"),
        (
            ["arm_sizes.gpt=[{models: [d8-l1]}]"],
            "unknown arm 'gpt': choose from ar, mdlm-elbo, mdlm-ce, duo, eso",
        ),
        (
            ["flops_convention=kaplan"],
            "unknown flops_convention 'kaplan': choose from reference, attention, causal, 6N",
        ),
        (["data.val_fraction=1"], "data.val_fraction must lie between 0 and 1, got 1.0"),
        (["sizes.0.models=[]"], "sizes.0.models is empty: list the ladder's models to train at this budget"),
        (
            ["sizes.1.budget=1e11"],
            "sizes.1: a second record for budget 1e11 (sizes.0 is the first): keep one",
        ),
        (["sizes.0.budget=-1"], "sizes.0.budget must be > 0 and finite (or null: the default), got -1.0"),
        (["train.betas=[0.9]"], "train.betas must be two numbers, e.g. train.betas=[0.9,0.95], got [0.9]"),
        (["train.micro_batch=3"], "train.micro_batch 3 must divide train.global_batch 8"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, message):
    assert error_of("tiny", overrides) == message


# --- sweep files ----------------------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\narms: [ar\nbudgets: [1e8]\n")
    assert error_of(str(bad)) == f"{bad} line 3: malformed YAML: expected ',' or ']', but got ':'"
    out = scaling("plan", str(bad))
    assert out.returncode == 2
    assert (
        out.stderr == f"scaling plan: error: {bad} line 3: malformed YAML: expected ',' or ']', but got ':'\n"
    )


def test_a_sweep_file_with_a_misspelt_key_or_the_old_sizes_mapping(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("defaults: [tiny, _self_]\ntrain: {mcro_batch: 4}\n")
    assert error_of(str(typo)) == f"{typo}: train.mcro_batch: no such key; train has {TRAIN_KEYS}"
    old = tmp_path / "old.yaml"
    old.write_text(
        'defaults: [smoke, _self_]\nsizes:\n  "1e8": [d8-l1, d16-l1, d24-l1]\n  default: [d8-l1, d16-l1]\n'
    )
    message = error_of(str(old))
    fix = "sizes: [{budget: 1e8, models: [d8-l1, d16-l1, d24-l1]}, {models: [d8-l1, d16-l1]}]"
    assert message == (
        f"{old}: sizes is a list of {{budget, models}} records (a record without budget is the default), "
        f"not a mapping: write {fix}"
    )
    old.write_text(f"defaults: [smoke, _self_]\n{fix}\n")
    cfg = load_sweep(str(old))
    assert cfg.sizes == [SizeList(1e8, ["d8-l1", "d16-l1", "d24-l1"]), SizeList(None, ["d8-l1", "d16-l1"])]


def test_sweep_from_dict_checks_like_load_sweep():
    raw = {"name": "t", "arms": ["ar"], "budgets": [1e10], "ladder": "paper", "sizes": {"default": ["6M"]}}
    with pytest.raises(UserError, match=re.escape("write sizes: [{models: [6M]}]")):
        sweep_from_dict(raw)
    assert sweep_from_dict(raw | {"sizes": [{"models": ["6M"]}]}).sizes == [SizeList(None, ["6M"])]
    with pytest.raises(
        UserError, match="^arms is missing: set it in the sweep file or give it as arms=\\[ar\\]$"
    ):
        sweep_from_dict({k: v for k, v in raw.items() if k != "arms"} | {"sizes": []})


# --- user sweep folders ---------------------------------------------------------------------


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "cluster").mkdir(parents=True)
    two.mkdir()
    (one / "mine.yaml").write_text("defaults:\n  - tiny\n  - _self_\nname: mine\nbudgets: [1e11]\n")
    (two / "own.yaml").write_text(
        "defaults:\n  - cluster: local\n  - _self_\narms: [ar]\nbudgets: [1e8]\n"
        "ladder: [{name: a, d_model: 8, n_layers: 1, n_heads: 1}]\nsizes: [{models: [a]}]\n"
        "data: {seq_len: 32}\ntrain: {global_batch: 4, min_warmup_steps: 2}\n"
    )
    (one / "cluster" / "slurm.yaml").write_text("executor: slurm\npartition: ours\n")
    monkeypatch.setenv("SCALING_SWEEPS", f"{one}:{two}")
    return one, two


def test_user_sweep_folders_add_to_the_built_in_sweeps(user_dirs):
    one, two = user_dirs
    assert available_sweeps() == sorted([*BUILT_IN, "mine", "own"])
    mine = load_sweep("mine")  # defaults: [tiny, _self_] from another folder
    assert (mine.name, mine.budgets, mine.arms) == ("mine", [1e11], load_sweep("tiny").arms)
    assert len(plan_sweep(mine).runs) == 25
    own = load_sweep("own")  # - cluster: local from another folder; no name: the file's
    assert (own.name, own.cluster["executor"], len(plan_sweep(own).runs)) == ("own", "local", 1)
    # the user's cluster/slurm.yaml shadows the built-in one, for built-in sweeps too
    assert load_sweep("tiny", ["cluster=slurm"]).cluster == {"executor": "slurm", "partition": "ours"}
    assert load_sweep("tiny", ["cluster=slurm-cpu"]).cluster["resources"][0]["gpus_per_node"] == 0


def test_a_sweep_given_as_a_path_sees_its_folder_and_the_built_in_sweeps(tmp_path, monkeypatch):
    monkeypatch.delenv("SCALING_SWEEPS", raising=False)
    (tmp_path / "base.yaml").write_text("defaults: [tiny, _self_]\nname: base\nseeds: [3]\n")
    (tmp_path / "top.yaml").write_text("defaults: [base, _self_]\nbudgets: [2e11]\n")
    cfg = load_sweep(str(tmp_path / "top.yaml"), ["cluster=slurm"])
    assert (cfg.name, cfg.seeds, cfg.budgets, cfg.cluster["executor"]) == ("base", [3], [2e11], "slurm")


def test_a_missing_user_folder_or_sweep_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_SWEEPS", str(tmp_path / "nope"))
    assert (
        error_of("tiny")
        == f"SCALING_SWEEPS names {tmp_path / 'nope'}, which is not a folder (separate folders with :)"
    )
    monkeypatch.setenv("SCALING_SWEEPS", str(tmp_path))
    choices = ", ".join(sorted([*BUILT_IN, "lost"]))
    (tmp_path / "lost.yaml").write_text("defaults: [tny, _self_]\n")
    assert error_of("lost") == (
        f"{tmp_path / 'lost.yaml'}: defaults names 'tny', which is not a sweep: choose from {choices}"
    )
    assert error_of("nope") == f"unknown sweep 'nope': choose from {choices} or give a YAML path"


# --- multirun -------------------------------------------------------------------------------


def test_multirun_plans_one_sweep_per_combination_with_derived_names():
    sweeps = load_sweeps("tiny", ["train.lr=1e-3,3e-3"], multirun=True)
    assert [(c.name, c.train.lr) for c in sweeps] == [("tiny-lr=0.001", 1e-3), ("tiny-lr=0.003", 3e-3)]
    grid = load_sweeps("smoke", ["seeds=[0],[1,2]", "arms=[ar]", "cluster=local,slurm"], multirun=True)
    assert [c.name for c in grid] == [
        "smoke-seeds=0-cluster=local",
        "smoke-seeds=0-cluster=slurm",
        "smoke-seeds=1_2-cluster=local",
        "smoke-seeds=1_2-cluster=slurm",
    ]
    assert [(c.seeds, c.arms, c.cluster["executor"]) for c in grid][1:3] == [
        ([0], ["ar"], "slurm"),
        ([1, 2], ["ar"], "local"),
    ]
    for c in grid:
        assert re.fullmatch(r"[A-Za-z0-9._=+-]+", c.name)
    same = load_sweeps("smoke", ["train.lr=0.003,3e-3"], multirun=True)
    assert [c.name for c in same] == ["smoke-lr=0.003", "smoke-lr=0.003-2"]
    assert [c.name for c in load_sweeps("smoke", ["budgets=[1e8],[1e8,2e8]"], multirun=True)] == [
        "smoke-budgets=1e8",
        "smoke-budgets=1e8_2e8",
    ]
    assert [c.name for c in load_sweeps("smoke", [], multirun=True)] == ["smoke"]


def test_a_sweep_override_without_m_says_to_add_it():
    message = "train.lr=1e-3,3e-3 is a sweep over several values: add -m to plan one sweep per value (a list is written train.lr=[...])"
    assert error_of("tiny", ["train.lr=1e-3,3e-3"]) == message
    with pytest.raises(UserError, match="add -m"):
        load_sweep("tiny", ["train.lr=1e-3,3e-3"])
    assert (
        error_of("tiny", ["train.lr=fast,3e-3"], multirun=True) == "train.lr: expected a number, got 'fast'"
    )
    assert error_of("tiny", ["cluster=local,slrum"], multirun=True) == (
        "no cluster config 'slrum': choose from local, slurm, slurm-cpu"
    )


def test_plan_with_m_prints_one_table_with_a_sweep_column(tmp_path):
    out = scaling("plan", "smoke", "-m", "train.lr=1e-2,3e-3", "--format", "csv", "--specs", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = out.stdout.strip().splitlines()
    assert rows[0].startswith("sweep,run_key,arm,")
    assert len(rows) == 1 + 24
    assert {r.split(",")[0] for r in rows[1:]} == {"smoke-lr=0.01", "smoke-lr=0.003"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke-lr=0.003", "smoke-lr=0.01"]
    assert len(list((tmp_path / "smoke-lr=0.01").glob("*.yaml"))) == 12
    assert "sweep smoke-lr=0.01: 12 runs" in out.stderr and "sweep smoke-lr=0.003: 12 runs" in out.stderr
    bad = scaling("plan", "smoke", "train.lr=1e-2,3e-3")
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "scaling plan: error: train.lr=1e-2,3e-3 is a sweep over several values: add -m"
    )
    assert len(bad.stderr.splitlines()) == 1
