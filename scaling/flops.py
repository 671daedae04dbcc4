"""Parameter and FLOPs accounting of the DiT backbone, shared by the planner, trainer and fitter.

The counts are those of the model `trainer.model.DiT` builds (tests compare with sum(p.numel())
and torch.utils.flop_counter):
  embedding V*d; per block: LayerNorm weight (no bias) x2, QKV 3d^2 and out-projection d^2 (no
  bias), MLP d->4d->d with biases, adaLN Linear(c -> 6d) with bias; time embedding
  (2c sinusoid -> c -> c, biases); final LayerNorm weight, adaLN Linear(c -> 2d), untied
  head Linear(d -> V) with bias.
The conditioning width is c = min(128, d_model): 128 for every shape of the study (d >= 256), and
no wider than the model for tiny CPU shapes, where a 128-d time embedding alone (49k parameters)
would outweigh the transformer and distort the parameter axis of the fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from scaling.arms import arm_info
from scaling.errors import UserError

MAX_COND_DIM = 128  # width of the time embedding that drives adaLN (docs/methods.md, "Training")
MLP_RATIO = 4

CONVENTIONS = ("reference", "attention", "causal", "6N")


@dataclass(frozen=True)
class ModelShape:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    vocab: int  # includes the [MASK] token
    seq_len: int

    def __post_init__(self) -> None:
        for field in ("d_model", "n_layers", "n_heads", "vocab", "seq_len"):
            if getattr(self, field) <= 0:
                raise UserError(f"model {self.name!r}: {field} must be > 0, got {getattr(self, field)}")
        if self.d_model % self.n_heads:
            raise UserError(
                f"model {self.name!r}: d_model {self.d_model} is not divisible by n_heads {self.n_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise UserError(
                f"model {self.name!r}: head dim {self.d_model // self.n_heads} must be even (rotary)"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


def cond_dim(d_model: int) -> int:
    return min(MAX_COND_DIM, d_model)


def time_freq_dim(d_model: int) -> int:
    """Sinusoidal features fed to the time-embedding MLP."""
    return 2 * cond_dim(d_model)


def block_params(d: int) -> int:
    attention = 4 * d * d  # qkv + out, no bias
    mlp = 2 * MLP_RATIO * d * d + MLP_RATIO * d + d
    norms = 2 * d
    adaln = cond_dim(d) * 6 * d + 6 * d
    return attention + mlp + norms + adaln


def time_embedding_params(d: int) -> int:
    c = cond_dim(d)
    return time_freq_dim(d) * c + c + c * c + c


def final_layer_params(d: int, vocab: int) -> int:
    return d + (cond_dim(d) * 2 * d + 2 * d) + (d * vocab + vocab)


def params_embedding(shape: ModelShape) -> int:
    return shape.vocab * shape.d_model


def params_total(shape: ModelShape) -> int:
    d = shape.d_model
    return (
        params_embedding(shape)
        + shape.n_layers * block_params(d)
        + time_embedding_params(d)
        + final_layer_params(d, shape.vocab)
    )


def params_non_embedding(shape: ModelShape) -> int:
    """Total minus the input embedding; the output head counts (docs/methods.md, "FLOPs and parameters")."""
    return params_total(shape) - params_embedding(shape)


def matmul_weights_per_token(shape: ModelShape) -> int:
    """Weights every token multiplies through: 12 L d^2 in the blocks plus the d x V head."""
    d = shape.d_model
    return (4 + 2 * MLP_RATIO) * shape.n_layers * d * d + d * shape.vocab


def conditioning_flops_per_seq(shape: ModelShape) -> int:
    """Time embedding and adaLN run once per sequence, not per token."""
    d, c = shape.d_model, cond_dim(shape.d_model)
    weights = time_freq_dim(d) * c + c * c + c * 6 * d * shape.n_layers + c * 2 * d
    return 2 * weights


def attention_flops_per_seq(shape: ModelShape) -> int:
    """Q K^T and A V over the full T x T square: 4 T^2 d per layer."""
    return 4 * shape.seq_len * shape.seq_len * shape.d_model * shape.n_layers


def fwd_flops_per_seq(shape: ModelShape, convention: str, arm: str = "mdlm-elbo") -> float:
    """Forward FLOPs of one sequence of `shape.seq_len` tokens under a counting convention.

    reference: 2 T (12 L d^2 + d V), the study's count (weight matmuls incl. head).
    attention: the real backbone's matmuls: reference + attention products + per-sequence
               conditioning (what torch.utils.flop_counter sees).
    causal:    attention, with the attention products halved for arms with causal masks.
    6N:        2 T N_non-embedding (Kaplan); training is then 6 N per token.
    """
    T = shape.seq_len
    if convention == "reference":
        return float(2 * T * matmul_weights_per_token(shape))
    if convention == "attention":
        return float(
            2 * T * matmul_weights_per_token(shape)
            + attention_flops_per_seq(shape)
            + conditioning_flops_per_seq(shape)
        )
    if convention == "causal":
        attention = attention_flops_per_seq(shape)
        if arm_info(arm).causal:
            attention //= 2
        return float(2 * T * matmul_weights_per_token(shape) + attention + conditioning_flops_per_seq(shape))
    if convention == "6N":
        return float(2 * T * params_non_embedding(shape))
    raise UserError(f"unknown FLOPs convention {convention!r}: choose from {', '.join(CONVENTIONS)}")


def train_flops_per_seq(shape: ModelShape, convention: str, arm: str = "mdlm-elbo") -> float:
    """Forward + backward = 3 x forward."""
    return 3.0 * fwd_flops_per_seq(shape, convention, arm)


def all_conventions(shape: ModelShape, arm: str = "mdlm-elbo") -> dict[str, float]:
    return {c: fwd_flops_per_seq(shape, c, arm) for c in CONVENTIONS}
