"""Where things live on disk. Every stage finds its inputs through these functions."""

from __future__ import annotations

import os
import re
from pathlib import Path

from scaling.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Names that become folder names, file names and lines of job scripts: sweep names, model names
# of a ladder (and so run keys). No path separators, no "..", no whitespace or control characters.
NAME_CHARS = "A-Za-z0-9._=+-"
SAFE_NAME = re.compile(rf"[A-Za-z0-9][{NAME_CHARS}]{{0,127}}")
UNSAFE_CHAR = re.compile(rf"[^{NAME_CHARS}]")


def check_name(name: str, what: str) -> str:
    """`name` if it is safe to use as a folder or file name, else a one-line UserError."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UserError(
            f"{what} {name!r} is not a safe name: use 1-128 letters, digits and . _ = + - "
            "(starting with a letter or digit, no '..', no '/', no spaces)"
        )
    return name


def under(root: Path, path: Path) -> Path:
    """`path` resolved, refused unless it lies under `root` (resolved)."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise UserError(f"{path} lies outside {base}: refusing to write there")
    return resolved


def results_root() -> Path:
    """$SCALING_RESULTS, else ./results under the current directory."""
    return Path(os.environ.get("SCALING_RESULTS", "results")).resolve()


def sweep_dir(sweep: str) -> Path:
    root = results_root()
    return under(root, root / check_name(sweep, "sweep name"))


def runs_dir(sweep: str) -> Path:
    return sweep_dir(sweep) / "runs"


def run_dir(sweep: str, run_key: str) -> Path:
    return runs_dir(sweep) / check_name(run_key, "run key")


def sweeps_config_dir() -> Path:
    """The built-in sweep configs: ./sweeps if it holds the bundled ones, else the project's sweeps/."""
    local = Path("sweeps")
    if (local / "tiny.yaml").exists():
        return local.resolve()
    return PROJECT_ROOT / "sweeps"


def user_sweep_dirs() -> list[Path]:
    """The folders of $SCALING_SWEEPS (several joined with os.pathsep, e.g. dir1:dir2), in order."""
    env = os.environ.get("SCALING_SWEEPS", "")
    return [Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p.strip()]


def sweeps_search_path(extra: list[Path] | tuple[Path, ...] = (), check: bool = True) -> list[Path]:
    """Where sweep configs (and their cluster/ and ladder/ groups) are looked up, first match wins:
    `extra` (the folder of a sweep given as a YAML path), $SCALING_SWEEPS, then the built-in
    folder. A user's folder adds to the built-in sweeps; a file of the same name shadows one.
    `check`: a $SCALING_SWEEPS entry that is not a folder is an error (else it is left out)."""
    found: list[Path] = []
    for p in [*extra, *user_sweep_dirs(), sweeps_config_dir()]:
        p = Path(p).resolve()
        if not p.is_dir():
            if check:
                raise UserError(
                    f"SCALING_SWEEPS names {p}, which is not a folder (separate folders with {os.pathsep})"
                )
            continue
        if p not in found:
            found.append(p)
    return found


def data_root() -> Path:
    """Token shards are shared across sweeps: $SCALING_DATA, else ./data."""
    return Path(os.environ.get("SCALING_DATA", "data")).resolve()


def shards_dir(corpus: str, tokenizer: str, vocab_size: int, val_fraction: float, **extra: str) -> Path:
    """The folder of one tokenized corpus: named by what determines its content, so sweeps share it.
    `extra`: further data fields that are not at their defaults (val_files, text_field)."""
    import hashlib
    import json
    import re

    fields: list = [corpus, tokenizer, int(vocab_size), float(val_fraction)]
    if extra:
        fields.append(dict(sorted(extra.items())))
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:10]
    stem = Path(corpus.rstrip("/")).name if ("/" in corpus or corpus.endswith(".txt")) else corpus
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.") or "corpus"  # a glob is no folder name
    tok = tokenizer.split(":", 1)[0]
    return data_root() / f"{stem}-{tok}{vocab_size}-{digest}"


def git_sha() -> str | None:
    """The project's commit, recorded in results so a figure can be traced to its code."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def stage_paths(
    command: str,
    sweep: str | None,
    given: Path | None,
    out: Path | None,
    *,
    flag: str,
    what: str,
    reads: str,
    writes: str,
    out_holds: str,
) -> tuple[Path, Path]:
    """Input file and output folder of a stage that reads either results/<sweep>/<reads> (writing
    into results/<sweep>/<writes> unless --out says otherwise) or a file given with `flag`."""
    if given is not None:
        if sweep is not None:
            raise UserError(f"give either SWEEP or {flag} FILE, not both")
        if out is None:
            raise UserError(f"{flag} needs --out DIR for {out_holds}")
        return given, out
    if sweep is None:
        raise UserError(
            f"name a sweep (scaling {command} SWEEP) or a {what} (scaling {command} {flag} FILE --out DIR)"
        )
    return sweep_dir(sweep) / reads, out or sweep_dir(sweep) / writes
