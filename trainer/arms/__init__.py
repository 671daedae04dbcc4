"""The five arms of the study; `get_arm` is the one entry point (see base.py for the interface)."""

from __future__ import annotations

from scaling.arms import arm_info
from trainer.arms.ar import Autoregressive
from trainer.arms.base import Arm
from trainer.arms.duo import UniformDiffusion
from trainer.arms.eso import Interpolating
from trainer.arms.mdlm import MaskedDiffusion

FAMILIES: dict[str, type[Arm]] = {
    "ar": Autoregressive,
    "mdlm": MaskedDiffusion,
    "duo": UniformDiffusion,
    "eso": Interpolating,
}


def get_arm(name: str, vocab: int) -> Arm:
    """The arm named `name` (scaling.arms.ARMS) for a model vocabulary of `vocab` ids incl. [MASK]."""
    info = arm_info(name)  # UserError if unknown
    return FAMILIES[info.family](info, vocab)


__all__ = ["Arm", "get_arm"]
