"""The experiment trackers a run's metrics go to (`train.loggers` of a sweep, `loggers` of a spec).

    train.loggers: [jsonl, tensorboard, wandb]

- `jsonl`: the run folder's metrics.jsonl and evals.jsonl (docs/run-folder.md); always written,
  whether listed or not, since collect, status and resume read them.
- `tensorboard`: event files in the run folder's `tensorboard/` (torch.utils.tensorboard), so that
  `tensorboard --logdir results/<sweep>/runs` shows every run of a sweep.
- `wandb`: Weights & Biases, offline (files in the run folder's `wandb/`, uploaded later with
  `wandb sync`) unless a project is configured: `wandb:PROJECT` or `wandb:ENTITY/PROJECT` here, or
  WANDB_PROJECT in the environment (WANDB_MODE, if set, decides).

Names are checked where they enter (the sweep config, a spec given to `scaling train`); a tracker
whose package is missing is a one-line error naming the extra to install. The trainer's side is
trainer/loggers.py.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass

from scaling.errors import UserError

LOGGERS = ("jsonl", "tensorboard", "wandb")
# tracker -> (the module it needs, the extra of this package that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
_PROJECT = re.compile(r"^([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Tracker:
    kind: str  # one of LOGGERS
    project: str | None = None  # wandb: PROJECT or ENTITY/PROJECT (online); None: offline by default


def parse_trackers(names: Iterable[str], where: str = "train.loggers") -> list[Tracker]:
    """The trackers named, jsonl first and always; UserError for an unknown or repeated name, a
    malformed project or a tracker whose package is not installed."""
    trackers = [Tracker("jsonl")]
    for name in names:
        if not isinstance(name, str):
            raise UserError(f"{where}: expected names like jsonl, tensorboard, wandb; got {name!r}")
        kind, sep, project = name.partition(":")
        if kind not in LOGGERS:
            raise UserError(
                f"{where}: unknown logger {name!r}: choose from {', '.join(LOGGERS)} "
                f"(e.g. {where}=[jsonl,tensorboard])"
            )
        if sep and (kind != "wandb" or not _PROJECT.match(project)):
            raise UserError(
                f"{where}: {name!r}: only wandb takes a project, as wandb:PROJECT or wandb:ENTITY/PROJECT"
            )
        if kind == "jsonl":
            continue
        if any(t.kind == kind for t in trackers):
            raise UserError(f"{where}: {kind} is listed twice")
        require_package(kind, where)
        trackers.append(Tracker(kind, project or None))
    return trackers


def require_package(kind: str, where: str = "train.loggers") -> None:
    if kind not in PACKAGES:
        return
    module, extra = PACKAGES[kind]
    if importlib.util.find_spec(module) is None:
        raise UserError(missing_package(kind, where))


def missing_package(kind: str, where: str = "train.loggers") -> str:
    module, extra = PACKAGES[kind]
    return (
        f"{where} includes {kind}, but the {module} package is not installed: "
        f"pip install 'dllm-scaling[{extra}]'"
    )
