"""The layer contract (scripts/check_layers.py, run by `make lint`) holds for the project and
catches an upward import and an import cycle in a tree made to have them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from scaling.paths import PROJECT_ROOT

CHECKER = PROJECT_ROOT / "scripts" / "check_layers.py"


def _check(root: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location("check_layers", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check(root)


def test_the_project_respects_its_layers():
    assert _check(PROJECT_ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in ("scaling", "trainer", "analysis"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


def test_an_upward_import_fails_even_inside_a_function(tmp_path):
    root = _tree(
        tmp_path,
        {
            "scaling/store.py": "def f():\n    from trainer.loop import train\n",
            "trainer/loop.py": "from scaling.commands import sweep\n",
            "scaling/commands/__init__.py": "",
            "scaling/commands/sweep.py": "",
            "analysis/fit.py": "import trainer.loop\n",
        },
    )
    problems = _check(root)
    assert any(
        p.startswith("scaling/store.py:2: scaling.store (core) imports trainer.loop") for p in problems
    )
    assert any("trainer.loop (trainer) imports scaling.commands.sweep (commands)" in p for p in problems)
    assert any("analysis.fit (analysis) imports trainer.loop (trainer)" in p for p in problems)
    assert len(problems) == 3, problems


def test_a_cycle_through_a_package_init_fails(tmp_path):
    """sampling -> arms.base runs arms/__init__ first, which imports ar, which imports sampling."""
    root = _tree(
        tmp_path,
        {
            "trainer/sampling.py": "from trainer.arms.base import alpha\n",
            "trainer/arms/__init__.py": "from trainer.arms.ar import AR\n",
            "trainer/arms/base.py": "alpha = 1\n",
            "trainer/arms/ar.py": "from trainer.sampling import x\n",
            "trainer/model.py": "def f():\n    import trainer.sampling\n",  # deferred: no cycle
        },
    )
    problems = _check(root)
    assert problems == [
        "import cycle among trainer.arms, trainer.arms.ar, trainer.sampling (module-level imports)"
    ]


def test_the_command_line_exits_1_on_a_violation(tmp_path):
    root = _tree(tmp_path, {"analysis/plots.py": "from trainer import model\n", "trainer/model.py": ""})
    out = subprocess.run([sys.executable, str(CHECKER), str(root)], capture_output=True, text=True)
    assert out.returncode == 1 and "analysis.plots (analysis) imports trainer.model" in out.stdout
    ok = subprocess.run([sys.executable, str(CHECKER)], capture_output=True, text=True)
    assert ok.returncode == 0 and "layers respected" in ok.stdout
