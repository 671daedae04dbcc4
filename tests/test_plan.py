"""The IsoFLOP planner: step formula, run keys, size selection, warnings and errors."""

import math
from dataclasses import replace

import pytest

from scaling.config import load_sweep, sweep_from_dict
from scaling.errors import UserError
from scaling.executors import parse_cluster
from scaling.flops import ModelShape, params_non_embedding, train_flops_per_seq
from scaling.ladder import generate_ladder
from scaling.plan import plan_sweep

LADDER = [
    {"name": "a", "d_model": 16, "n_layers": 1, "n_heads": 1},
    {"name": "b", "d_model": 32, "n_layers": 2, "n_heads": 2},
    {"name": "c", "d_model": 64, "n_layers": 2, "n_heads": 2},
]


def sweep(**over):
    raw = {
        "name": "t",
        "arms": ["ar", "mdlm-ce"],
        "budgets": [1e10, 3e10],
        "ladder": LADDER,
        "sizes": [{"models": ["a", "b", "c"]}],
        "flops_convention": "attention",
        "data": {"vocab_size": 256, "seq_len": 64, "train_tokens": 1e9},
        "train": {"global_batch": 8, "lr": 1e-3, "min_warmup_steps": 5},
        "expected_tokens_per_param": 20,
    }
    for k, v in over.items():
        if k in ("data", "train", "eval"):
            raw[k] = {**raw.get(k, {}), **v}
        else:
            raw[k] = v
    return sweep_from_dict(raw)


def test_steps_follow_the_formula_and_spend_the_budget():
    plan = plan_sweep(sweep())
    assert len(plan.runs) == 2 * 2 * 3
    for d in plan.details:
        s = d.spec
        per_step = train_flops_per_seq(s.model, "attention", s.arm) * 8
        assert s.steps == math.floor(s.budget_flops / per_step)
        assert d.achieved_flops == s.steps * per_step <= s.budget_flops
        assert d.tokens == s.steps * 8 * 64
        assert d.tokens_per_param == d.tokens / params_non_embedding(s.model)
        assert s.model.vocab == 257  # bytes + [MASK]
        assert s.optim.warmup_steps == max(math.ceil(0.01 * s.steps), 5)
        assert s.optim.min_lr == pytest.approx(0.1 * s.optim.lr)


def test_convention_changes_steps():
    att = {
        (d.spec.arm, d.spec.model.name, d.spec.budget_flops): d.spec.steps
        for d in plan_sweep(sweep()).details
    }
    ref = {
        (d.spec.arm, d.spec.model.name, d.spec.budget_flops): d.spec.steps
        for d in plan_sweep(sweep(flops_convention="reference")).details
    }
    assert all(ref[k] >= att[k] for k in att) and any(ref[k] > att[k] for k in att)


def test_run_keys_are_stable_and_sensitive():
    base = {d.run_key for d in plan_sweep(sweep()).details}
    assert base == {d.run_key for d in plan_sweep(sweep()).details}
    assert len(base) == 12
    # bookkeeping does not change keys
    assert base == {
        d.run_key for d in plan_sweep(sweep(name="renamed", train={"checkpoint_every": 7})).details
    }
    # anything that changes results does
    for change in (
        dict(train={"lr": 2e-3}),
        dict(train={"global_batch": 16}),
        dict(data={"seq_len": 32}),
        dict(seeds=[1]),
        dict(train={"weight_decay": 0.0}),
        dict(eval={"sequences": 32}),
        dict(data={"tokenizer": "bpe"}),
        dict(flops_convention="reference"),
    ):
        keys = {d.run_key for d in plan_sweep(sweep(**change)).details}
        assert not keys & base, change


def test_run_key_ignores_model_label_but_not_shape():
    plan = plan_sweep(sweep())
    s = plan.runs[0]
    relabelled = replace(s, model=replace(s.model, name=s.model.name))
    assert relabelled.run_key == s.run_key
    wider = replace(
        s, model=ModelShape(s.model.name, 48, s.model.n_layers, 3, s.model.vocab, s.model.seq_len)
    )
    assert wider.run_key != s.run_key


def test_per_arm_sizes_and_seeds():
    plan = plan_sweep(sweep(arm_sizes={"mdlm-ce": [{"budget": 1e10, "models": ["a", "b"]}]}, seeds=[0, 1]))
    ce_small = [d for d in plan.details if d.spec.arm == "mdlm-ce" and d.spec.budget_flops == 1e10]
    assert sorted({d.spec.model.name for d in ce_small}) == ["a", "b"]
    assert len(ce_small) == 4 and {d.spec.seed for d in ce_small} == {0, 1}
    assert any("only 2 size(s)" in w for w in plan.all_warnings)


def test_size_rule_picks_the_tokens_per_param_window():
    shapes = generate_ladder(2e3, 5e5, 10, 257, 64, aspect=16)
    ladder = [
        {"name": s.name, "d_model": s.d_model, "n_layers": s.n_layers, "n_heads": s.n_heads} for s in shapes
    ]
    plan = plan_sweep(
        sweep(ladder=ladder, sizes=[], size_rule={"min_tokens_per_param": 5, "max_tokens_per_param": 200})
    )
    assert plan.details
    for d in plan.details:
        assert 5 <= d.tokens_per_param <= 200
    wide = {"min_tokens_per_param": 0.01, "max_tokens_per_param": 1e4}
    everything = plan_sweep(sweep(ladder=ladder, sizes=[], size_rule=wide))
    limited = plan_sweep(sweep(ladder=ladder, sizes=[], size_rule=wide | {"max_sizes": 3}))
    for arm in ("ar", "mdlm-ce"):
        full = [
            d.params_non_embedding
            for d in everything.details
            if d.spec.arm == arm and d.spec.budget_flops == 1e10
        ]
        cell = [
            d.params_non_embedding
            for d in limited.details
            if d.spec.arm == arm and d.spec.budget_flops == 1e10
        ]
        assert len(full) > 3 and len(cell) == 3
        assert cell[0] == min(full) and cell[-1] == max(full)


def test_warnings():
    # data repetition
    plan = plan_sweep(sweep(data={"train_tokens": 1e4}))
    assert any("data repetition" in w for w in plan.all_warnings)
    # achieved FLOPs off by more than 1%: a budget of 1.5 steps of the biggest model
    big = ModelShape("c", 64, 2, 2, 257, 64)
    budget = 1.5 * train_flops_per_seq(big, "attention", "ar") * 8
    plan = plan_sweep(sweep(budgets=[budget], arms=["ar"]))
    assert any("c @" in w and "off the budget" in w for w in plan.all_warnings)
    # sizes that do not bracket the expected optimum
    plan = plan_sweep(sweep(expected_tokens_per_param=1e-6))
    assert any("do not bracket" in w and "below it" in w for w in plan.all_warnings)
    plan = plan_sweep(sweep(expected_tokens_per_param=1e6))
    assert any("do not bracket" in w and "above it" in w for w in plan.all_warnings)
    # fewer than 3 sizes
    assert any("only 1 size(s)" in w for w in plan_sweep(sweep(sizes=[{"models": ["b"]}])).all_warnings)
    # a well-posed grid is quiet
    quiet = plan_sweep(sweep(expected_tokens_per_param=20, budgets=[3e10]))
    assert not [w for w in quiet.all_warnings if "bracket" in w or "size(s)" in w]


def test_zero_step_models_are_skipped_and_a_hopeless_budget_is_an_error():
    small = ModelShape("a", 16, 1, 1, 257, 64)
    budget = 1.2 * train_flops_per_seq(small, "attention", "ar") * 8  # one step of `a`, none of `c`
    plan = plan_sweep(sweep(budgets=[budget], arms=["ar"]))
    assert [d.spec.model.name for d in plan.details] == ["a"] and plan.runs[0].steps == 1
    assert any("gets 0 steps" in w for w in plan.all_warnings)
    with pytest.raises(UserError, match="too small for any model"):
        plan_sweep(sweep(budgets=[1e3]))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(arms=["gpt"]), "unknown arm"),
        (dict(budgets=[0]), "must be > 0"),
        (dict(budgets=[-1e10]), "must be > 0"),
        (dict(budgets=["lots"]), "budgets.0: expected a number, got 'lots'"),
        (dict(sizes=[{"models": ["zz"]}]), "unknown model 'zz'"),
        (dict(sizes=[{"budget": 1e10, "models": ["a"]}]), "budget 3e10 has no sizes for arm ar"),
        (dict(data={"seq_len": 0}), "seq_len must be > 0"),
        (dict(train={"global_batch": 0}), "global_batch must be > 0"),
        (dict(train={"micro_batch": 3}), "must divide"),
        (dict(ladder="nope"), "unknown ladder"),
        (dict(ladder=[{"name": "x", "d_model": 16}]), "needs name, d_model"),
        (dict(flops_convention="kaplan"), "unknown flops_convention"),
        (dict(bogus=1), "bogus: no such key; a sweep has name, arms"),
        (dict(train={"lr_typo": 1}), "train.lr_typo: no such key; train has global_batch"),
    ],
)
def test_bad_sweeps_are_one_line_errors(change, message):
    with pytest.raises(UserError, match=message) as e:
        plan_sweep(sweep(**change))
    assert "\n" not in str(e.value)


def test_project_sweeps_plan():
    paper = plan_sweep(load_sweep("paper"))
    assert len(paper.runs) == 5 * (8 + 8 + 9 + 10 + 7)
    assert {s.model.vocab for s in paper.runs} == {32001} and {s.model.seq_len for s in paper.runs} == {2048}
    first = next(d for d in paper.details if d.spec.arm == "ar" and d.spec.model.name == "6M")
    assert first.spec.steps == math.floor(6e18 / (3 * 2 * 2048 * (12 * 6 * 256**2 + 256 * 32001) * 256))
    assert first.spec.optim.warmup_steps == max(math.ceil(0.01 * first.spec.steps), 100)
    over = plan_sweep(load_sweep("paper", ["budgets=[6e18,1e19]", "arms=[mdlm-ce]"]))
    assert len(over.runs) == 16 and {s.arm for s in over.runs} == {"mdlm-ce"}
    for name in ("tiny", "smoke"):
        assert plan_sweep(load_sweep(name)).runs


def test_ladder_generator_spreads_sizes():
    shapes = generate_ladder(1e4, 1e6, 6, 257, 128)
    sizes = [params_non_embedding(s.with_data(257, 128)) for s in shapes]
    assert sizes == sorted(sizes) and len(shapes) >= 5
    assert sizes[0] == pytest.approx(1e4, rel=0.5) and sizes[-1] == pytest.approx(1e6, rel=0.5)
    for s in shapes:
        assert s.d_model % s.n_heads == 0 and s.d_model // s.n_heads <= 64
    with pytest.raises(UserError):
        generate_ladder(1e6, 1e4, 5, 257, 128)


@pytest.mark.parametrize("cluster", ["local", "slurm", "slurm-cpu"])
@pytest.mark.parametrize("sweep", ["tiny", "cpu", "smoke", "paper"])
def test_every_bundled_sweep_plans_on_every_bundled_cluster(sweep, cluster):
    """A sweep file must not set options of one executor (tiny once set max_parallel, which broke
    `make sweep CLUSTER=slurm`)."""
    cfg = load_sweep(sweep, [f"cluster={cluster}"])
    assert parse_cluster(cfg.cluster).executor == cluster.split("-")[0]
    assert plan_sweep(cfg).runs
