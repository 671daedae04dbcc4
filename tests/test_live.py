"""The live view: a running run's speed and ETA from its own metrics.jsonl, the sweep's ETA from the
first minute (before any run has ended), `scaling status SWEEP --watch`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from analysis.synthetic import run_specs, write_run_folder
from scaling import store
from scaling.cli import main
from scaling.executors import RunView
from scaling.tables import duration
from scaling.workflows.live import LIVE_COLUMNS, live_rows, run_speed, sweep_eta, watch_status
from scaling.workflows.sweep import ProgressLine, run_rows


def _running(runs: Path, spec, rows: list[tuple[int, float]]) -> RunView:
    """A run folder whose trainer has logged `rows` (step, wall_s) so far, as the trainer writes them."""
    write_run_folder(runs, spec, "running")
    folder = runs / spec.run_key
    per_step = spec.budget_flops / spec.steps
    tokens = spec.global_batch * spec.model.seq_len
    lines = [
        json.dumps(
            {
                "step": s,
                "tokens": s * tokens,
                "flops": {spec.flops_convention: s * per_step, "6N": 1.0},
                "train_loss": 3.0,
                "wall_s": w,
                "tokens_per_s": 1.0,  # the timed steps alone: the wall clock between rows decides
            }
        )
        for s, w in rows
    ]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return _view(folder, spec, "running")


def _view(folder: Path, spec, state: str) -> RunView:
    return RunView(folder, spec, state, store.read_status(folder), store.run_progress(folder, spec))


@pytest.fixture
def specs():
    return run_specs(arms=("ar",), budgets=(1e12,), widths=(16, 24, 32, 48))


def test_a_running_run_s_rate_and_eta_come_from_its_log(tmp_path, specs):
    spec = specs[0]
    assert spec.steps > 40
    view = _running(tmp_path, spec, [(1, 10.0), (11, 12.0), (21, 14.0)])  # 5 steps/s after start-up
    speed = run_speed(view)
    assert speed.eta_s == pytest.approx((spec.steps - 21) / 5)
    assert speed.tokens_per_s == pytest.approx(5 * spec.global_batch * spec.model.seq_len)
    assert speed.flops_per_s == pytest.approx(5 * spec.budget_flops / spec.steps)
    one_row = _running(tmp_path / "b", spec, [(4, 3.0)])  # a single row: its tokens/s stands in
    assert run_speed(one_row).tokens_per_s == pytest.approx(1.0)
    assert run_speed(_view(tmp_path / spec.run_key, spec, "queued")).eta_s is None


def test_sweep_eta_before_any_run_has_ended(tmp_path, specs):
    a = _running(tmp_path, specs[0], [(1, 0.0), (11, 2.0)])
    b = _running(tmp_path, specs[1], [(1, 0.0), (6, 5.0)])
    write_run_folder(tmp_path, specs[2], "queued")
    write_run_folder(tmp_path, specs[3], "done")
    views = [a, b, _view(tmp_path / specs[2].run_key, specs[2], "queued")]
    views.append(_view(tmp_path / specs[3].run_key, specs[3], "done"))
    rate = sum(run_speed(v).flops_per_s for v in (a, b))
    left = sum(v.spec.budget_flops - v.progress.flops_done for v in views[:3])
    assert sweep_eta(views) == pytest.approx(left / rate)
    assert sweep_eta(views[2:]) is None  # nobody is training: no rate

    rows = live_rows(views, run_rows(views))
    by_key = {r["run_key"]: r for r in rows}
    assert by_key[a.run_key]["tokens_per_s"] == round(run_speed(a).tokens_per_s)
    assert by_key[a.run_key]["eta"] is not None and by_key[specs[3].run_key]["eta"] is None
    assert set(LIVE_COLUMNS) <= set(rows[0])


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_line_shows_an_eta_from_the_first_minute_and_a_heartbeat(tmp_path, specs):
    clock, out = _Clock(), io.StringIO()
    line = ProgressLine(out, clock=clock)
    a = _running(tmp_path, specs[0], [(1, 0.0), (11, 2.0)])
    line.update([a])
    first = out.getvalue()
    assert f"| ETA {duration(sweep_eta([a]))} |" in first
    clock.t = 30.0
    line.update([a])  # nothing changed, within a minute: not printed again
    assert out.getvalue() == first
    clock.t = 61.0
    line.update([a])  # a heartbeat
    assert out.getvalue().count("\n") == 2


def test_progress_line_uses_the_observed_rate_once_a_run_has_ended(tmp_path, specs):
    clock = _Clock()
    line = ProgressLine(io.StringIO(), clock=clock)
    a = _running(tmp_path, specs[0], [(1, 0.0), (11, 2.0)])
    b = _running(tmp_path, specs[1], [(1, 0.0), (3, 2.0)])
    start = a.progress.flops_done + b.progress.flops_done
    line.text([a, b])
    clock.t = 100.0
    write_run_folder(tmp_path, specs[1], "done")
    b = _view(tmp_path / specs[1].run_key, specs[1], "done")
    total = specs[0].budget_flops + specs[1].budget_flops
    done = a.progress.flops_done + b.progress.flops_done
    assert f"| ETA {duration((total - done) / ((done - start) / 100.0))} |" in line.text([a, b])


def test_watch_redraws_until_no_run_is_active():
    active = [{"state": "running", "arm": "ar"}]
    frames = [active, active, [{"state": "done", "arm": "ar"}]]
    out, sleeps = io.StringIO(), []
    code = watch_status(lambda: (frames.pop(0), "footer"), 2.0, out, sleep=sleeps.append)
    assert code == 0 and frames == [] and sleeps == [2.0, 2.0]
    text = out.getvalue()
    assert text.count("every 2s, Ctrl-C to stop") == 3 and text.count("footer") == 3
    assert text.rstrip().endswith("no run is queued or running")

    def interrupted(_):
        raise KeyboardInterrupt

    assert watch_status(lambda: (active, ""), 1.0, io.StringIO(), sleep=interrupted) == 0


def test_status_watch_cli(tmp_path, monkeypatch, capsys, specs):
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    runs = tmp_path / "w" / "runs"
    store.init_layout(tmp_path / "w")
    for s in specs[:2]:
        write_run_folder(runs, s, "done")
    assert main(["status", "w", "--watch", "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "tokens_per_s" in out and "2 runs: 2 done" in out and "sweep ETA ?" in out
    assert out.rstrip().endswith("no run is queued or running")
    assert main(["status", "w", "--watch", "--format", "csv"]) == 2
    assert "leave out --format" in capsys.readouterr().err
