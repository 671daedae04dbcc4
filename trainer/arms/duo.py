"""Uniform-state diffusion (UDLM / Duo): time-conditioned bidirectional denoiser, closed-form NELBO.

Forward process over the K = vocab - 1 real tokens: q(z_t | x) = alpha_t onehot(x) + (1 - alpha_t)/K,
i.e. the CTMC with rates beta_t (11^T/K - I), beta_t = -alpha'_t / alpha_t. The reverse model plugs
the denoiser's distribution x_hat into the posterior, p(z_s | z_t) = q(z_s | z_t, x = x_hat), whose
rates are R(i -> j) = (beta_t / K) xt_j / xt_i with xt = K alpha_t x_hat + (1 - alpha_t) 1; the true
reverse rates given x are the same with xb = K alpha_t onehot(x) + (1 - alpha_t) 1. The
continuous-time NELBO integrand (Campbell et al. 2022) is, with i = z_t,
  sum_{j != i} [R_theta(i->j) - R_x(i->j) + R_x(i->j) log(R_x(i->j) / R_theta(i->j))]
  = -alpha'_t / (K alpha_t) [K/xt_i - K/xb_i + sum_j (xb_j/xb_i) log(xb_j xt_i / (xb_i xt_j))],
the UDLM/Duo closed form. It is written below through rho = K alpha_t / (1 - alpha_t) and
L_j = log(1 + rho x_hat_j) (so xt_j = (1 - alpha_t)(1 + rho x_hat_j)), which removes the
K log(1 - alpha_t) terms that cancel between the pieces: the two cases z = x and z != x are
  z = x:  K/b [1/(1 + rho x_hat_x) - 1/(1 + rho)] + [K L_x - sum_j L_j - (K-1) log(1 + rho)] / (1 + rho)
  z != x: K/b [L_z - rho x_hat_z / (1 + rho x_hat_z)] + (1 + rho) log(1 + rho) - rho L_x - sum_j L_j
with b = 1 - alpha_t. The denoiser is conditioned on sigma_t = -log alpha_t. The expectation over
t ~ U[eps, 1] is the NELBO (the study's convention: no reconstruction or prior term; both are
O(eps)). Losses are summed over positions and divided by B T. The sum over the vocabulary (sum_j
L_j) and the two log-probabilities each token needs come from the logits in float32, a chunk of
tokens at a time on a DiT (trainer/losses.py); the per-token algebra runs in float64 on [B, T].

Sampling is ancestral on the time grid t_k = 1 - k/steps from uniform noise: every position draws
z_s ~ q(z_s | z_t, x = x_hat), the posterior with the denoiser's distribution in place of x,
  q(z_s = j | z_t = i) = [K a_t x_i [j=i] + (a_t/a_s - a_t)[j=i] + (a_s - a_t) x_j + (1 - a_t/a_s)(1 - a_s)/K] / D,
  D = K a_t x_i + 1 - a_t   (a = alpha, x = x_hat),
drawn as its three parts: stay at i, a draw from x_hat, a uniform token. This is exact per token
when x_hat_j is proportional to p(x = j | z_t) / q(z_t | x = j) (the evidence of the token's own
noisy state divided out, as the NELBO trains it). The last step (to alpha = 1) is greedy: the
mode of the posterior, argmax_j x_hat_j (1 + [j = i] K a_t / (1 - a_t)). Nucleus sampling filters
x_hat. The denoiser sees sigma_t, so its outputs are never reused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import noise
from trainer.arms.base import Arm, times_on
from trainer.losses import head_of, map_chunks
from trainer.noise import RandomSource
from trainer.sampling import SampleOptions, Samples, gumbel_argmax, nucleus, time_grid, uniform
from trainer.schedule import alpha, alpha_prime


def uniform_terms(log_x_hat: Tensor, x: Tensor, z: Tensor, log_rho: Tensor) -> Tensor:
    """[..., 3] in log_x_hat's dtype: (sum_j L_j, log x_hat_x, log x_hat_z), what the NELBO needs of a
    token's distribution. log_x_hat [..., K]; x, z, log_rho (log rho per token, any float dtype) [...]."""
    sum_L = F.softplus(log_x_hat + log_rho.to(log_x_hat.dtype)[..., None]).sum(dim=-1)
    picked = log_x_hat.gather(-1, torch.stack([x, z], dim=-1))  # [..., 2]
    return torch.cat([sum_L[..., None], picked], dim=-1)


def terms_from_logits(logits: Tensor, x: Tensor, z: Tensor, log_rho: Tensor) -> Tensor:
    """uniform_terms of the denoiser's logits over the K real tokens (trainer.losses.map_chunks)."""
    return uniform_terms(logits.log_softmax(dim=-1), x, z, log_rho)


def log_rho_of(alpha_t: Tensor, K: int) -> Tensor:
    """[B, 1] float64: log rho, rho = K alpha_t / (1 - alpha_t)."""
    a = alpha_t.double()[:, None]
    return (K * a / (1 - a)).log()


def nelbo_from_terms(terms: Tensor, same: Tensor, K: int, alpha_t: Tensor, alpha_prime_t: Tensor) -> Tensor:
    """[B, T] float64 NELBO integrand from uniform_terms [B, T, 3] and same = (z == x) [B, T]."""
    b = (1 - alpha_t.double())[:, None]
    rho = K * alpha_t.double()[:, None] / b
    log_rho = rho.log()
    sum_L, log_x, log_z = terms.double().unbind(-1)
    y_x = (log_x + log_rho).exp()  # rho x_hat_x
    y_z = (log_z + log_rho).exp()
    L_x, L_z, L_one = y_x.log1p(), y_z.log1p(), rho.log1p()
    if_same = (K / b) * (1 / (1 + y_x) - 1 / (1 + rho)) + (K * L_x - sum_L - (K - 1) * L_one) / (1 + rho)
    other = (K / b) * (L_z - y_z / (1 + y_z)) + rho * (L_one - L_x) + L_one - sum_L
    bracket = torch.where(same, if_same, other)
    weight = -alpha_prime_t.double()[:, None] / (K * alpha_t.double()[:, None])
    return weight * bracket


def uniform_nelbo(log_x_hat: Tensor, x: Tensor, z: Tensor, alpha_t: Tensor, alpha_prime_t: Tensor) -> Tensor:
    """[B, T] NELBO integrand per token at time t.

    log_x_hat [B, T, K]: log of the denoiser's distribution over the K real tokens; x, z [B, T];
    alpha_t, alpha_prime_t [B]. The sum over the vocabulary runs in the input's dtype, the
    per-token algebra in float64 (its terms reach K / (1 - alpha_t) ~ 1e3 K before cancelling).
    The chunked training path computes the same two parts: uniform_terms per chunk of tokens,
    nelbo_from_terms on the [B, T] result.
    """
    K = log_x_hat.shape[-1]
    terms = uniform_terms(log_x_hat, x, z, log_rho_of(alpha_t, K).expand(x.shape))
    return nelbo_from_terms(terms, z == x, K, alpha_t, alpha_prime_t).to(log_x_hat.dtype)


class UniformDiffusion(Arm):
    @property
    def n_real(self) -> int:
        return self.vocab - 1

    def corrupt(self, x: Tensor, t: Tensor, generator: RandomSource) -> Tensor:
        """z_t ~ alpha_t onehot(x) + (1 - alpha_t)/K: keep x w.p. alpha_t, else a uniform real token."""
        keep = noise.uniform(generator, x.shape, x.device, "keep") < alpha(t)[:, None]
        replacement = noise.integers(generator, self.n_real, x.shape, x.device, "replace")
        return torch.where(keep, x, replacement)

    def log_x_hat(self, model: nn.Module, z: Tensor, t: Tensor) -> Tensor:
        """[B, T, K] log-probabilities over the real tokens, conditioned on sigma_t = -log alpha_t."""
        logits = model(z, sigma=-alpha(t).log(), mode="bidirectional")
        return logits[..., : self.n_real].log_softmax(dim=-1)

    def token_nelbo(self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource) -> Tensor:
        t = times_on(t, x)
        z = self.corrupt(x, t, generator)
        if not self.chunked(model):
            return uniform_nelbo(self.log_x_hat(model, z, t), x, z, alpha(t), alpha_prime(t))
        a, K = alpha(t), self.n_real
        h = model(z, sigma=-a.log(), mode="bidirectional", return_hidden=True)
        per_token = (x, z, log_rho_of(a, K).float().expand(x.shape))
        terms = map_chunks(terms_from_logits, h, head_of(model), K, per_token, self.chunk_tokens)
        nelbo = nelbo_from_terms(terms.view(*x.shape, 3), z == x, K, a, alpha_prime(t))
        return nelbo.to(terms.dtype)

    def training_loss(self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource) -> Tensor:
        return self.token_nelbo(model, x, t, generator).mean()

    def validation_loss(
        self, model: nn.Module, x: Tensor, t: Tensor | None, generator: RandomSource
    ) -> Tensor:
        return self.token_nelbo(model, x, t, generator).mean(dim=1)

    def reverse_step(
        self, log_x_hat: Tensor, z: Tensor, a_t: float, a_s: float, generator: torch.Generator
    ) -> Tensor:
        """z_s ~ q(z_s | z_t = z, x = x_hat) (module docstring); log_x_hat [B, T, K], z [B, T]."""
        K = self.n_real
        x_z = log_x_hat.gather(-1, z[..., None])[..., 0].double().exp()
        norm = K * a_t * x_z + 1 - a_t
        stay = (K * a_t * x_z + a_t / a_s - a_t) / norm
        draw = stay + (a_s - a_t) / norm
        u = uniform(z.shape, generator)
        from_x, from_noise = (u >= stay) & (u < draw), u >= draw
        z = z.clone()
        z[from_x] = gumbel_argmax(log_x_hat[from_x], generator)
        z[from_noise] = torch.randint(0, K, (int(from_noise.sum()),), generator=generator, device=z.device)
        return z

    def sample(
        self, model: nn.Module, batch: int, seq_len: int, options: SampleOptions, generator: torch.Generator
    ) -> Samples:
        device = generator.device
        K = self.n_real
        z = torch.randint(0, K, (batch, seq_len), generator=generator, device=device)
        a = alpha(time_grid(options.steps)).tolist()
        for k in range(options.steps):
            sigma = torch.full((batch,), -math.log(a[k]), device=device)
            logits = model(z, sigma=sigma, mode="bidirectional")[..., :K]
            log_x_hat = nucleus(logits, options.top_p).log_softmax(dim=-1)
            if k < options.steps - 1:
                z = self.reverse_step(log_x_hat, z, a[k], a[k + 1], generator)
            else:
                own = log_x_hat.new_zeros(log_x_hat.shape).scatter_(
                    -1, z[..., None], math.log1p(K * a[k] / (1 - a[k]))
                )
                z = (log_x_hat + own).argmax(dim=-1)
        return Samples(z, nfe=options.steps)
