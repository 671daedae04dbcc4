"""What the planner needs to know about each arm; the math lives in trainer/arms/."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.errors import UserError


@dataclass(frozen=True)
class ArmInfo:
    name: str
    family: str  # ar | mdlm | duo | eso
    objective: str  # training objective: nll | elbo | ce
    causal: bool  # attention masked to a (possibly permuted) causal order
    time_conditioned: bool  # the denoiser sees sigma(t) through adaLN


ARMS: dict[str, ArmInfo] = {
    a.name: a
    for a in (
        ArmInfo("ar", "ar", "nll", causal=True, time_conditioned=False),
        ArmInfo("mdlm-elbo", "mdlm", "elbo", causal=False, time_conditioned=False),
        ArmInfo("mdlm-ce", "mdlm", "ce", causal=False, time_conditioned=False),
        ArmInfo("duo", "duo", "elbo", causal=False, time_conditioned=True),
        ArmInfo("eso", "eso", "ce", causal=True, time_conditioned=False),
    )
}


def arm_info(name: str) -> ArmInfo:
    try:
        return ARMS[name]
    except KeyError:
        raise UserError(f"unknown arm {name!r}: choose from {', '.join(ARMS)}") from None
