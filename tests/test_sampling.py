"""The samplers: exact denoisers of small known distributions reproduce them; the KV cache and
MDLM's reuse of unchanged outputs change nothing but the work; Gumbel-max and nucleus filtering.

Distribution checks are chi-square tests of 20k seeded samples (fixed outcomes, thresholds at
p ~ 1e-4, so a correct sampler passes with a wide margin and a wrong one fails by orders of
magnitude: each test also shows that the statistic rejects the nearest wrong answer).
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats
from test_arms_exact import Conditionals, NextToken, all_sequences, toy_joint
from torch import Tensor, nn

from scaling.flops import ModelShape
from trainer.arms import get_arm
from trainer.model import DiT, KVCache
from trainer.sampling import SampleOptions, gumbel_argmax, nucleus, reveal_bounds, time_grid
from trainer.schedule import alpha

F64 = torch.float64
N = 20_000


def chi2_pvalue(tokens: Tensor, probs: Tensor) -> float:
    """p-value of the counts of each sequence (tokens [n, L]) against probs over K^L sequences."""
    K = probs.shape[0]
    index = (tokens * K ** torch.arange(tokens.shape[1] - 1, -1, -1)).sum(1)
    counts = torch.bincount(index, minlength=probs.numel()).double()
    expected = probs.reshape(-1).double() / probs.sum().double() * len(tokens)
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


def tv(tokens: Tensor, probs: Tensor) -> float:
    K = probs.shape[0]
    index = (tokens * K ** torch.arange(tokens.shape[1] - 1, -1, -1)).sum(1)
    freq = torch.bincount(index, minlength=probs.numel()).double() / len(tokens)
    return 0.5 * float((freq - probs.reshape(-1)).abs().sum())


def product_of_marginals(joint: Tensor) -> Tensor:
    L = joint.dim()
    out = torch.ones([1] * L, dtype=F64)
    for i in range(L):
        shape = [1] * L
        shape[i] = -1
        out = out * joint.sum(dim=tuple(d for d in range(L) if d != i)).reshape(shape)
    return out


def draw(arm_name: str, model: nn.Module, K: int, L: int, seed: int, **options):
    arm = get_arm(arm_name, K + 1)
    with torch.no_grad():
        return arm.sample(model, N, L, SampleOptions(**options), torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- shared parts


def test_gumbel_argmax_draws_from_the_softmax_and_never_a_forbidden_token():
    logits = torch.tensor([0.0, -1.0, 2.0, float("-inf"), 0.5]).expand(200_000, -1)
    x = gumbel_argmax(logits, torch.Generator().manual_seed(0))
    counts = torch.bincount(x, minlength=5).double()
    assert counts[3] == 0
    probs = logits[0].double().softmax(-1)
    keep = probs > 0
    assert stats.chisquare(counts[keep].numpy(), (probs[keep] * len(x)).numpy()).pvalue > 1e-4


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = lambda p: (nucleus(logits, p) > float("-inf"))[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]
    assert kept(0.7) == [False, True, False, True]
    assert kept(0.9) == [True, True, False, True]
    assert kept(0.99) == [True, True, True, True]
    assert kept(1e-9) == [False, True, False, False]  # the top token always stays
    assert torch.equal(nucleus(logits, 1.0), logits)
    # kept logits are unchanged: renormalizing gives the truncated distribution
    assert torch.allclose(nucleus(logits, 0.7).softmax(-1), torch.tensor([[0, 0.5 / 0.8, 0, 0.3 / 0.8]]))


def test_time_grid_and_reveal_bounds_follow_the_schedule():
    assert time_grid(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    for T, steps in [(10, 4), (32, 8), (7, 7), (5, 12), (128, 1)]:
        b = reveal_bounds(T, steps)
        assert len(b) == steps + 1 and b[0] == 0 and b[-1] == T
        sizes = [hi - lo for lo, hi in zip(b, b[1:])]
        assert all(T // steps <= s <= -(-T // steps) for s in sizes), (T, steps, sizes)
    # the expected fraction revealed by t under the log-linear schedule, rounded
    a = alpha(time_grid(8))
    assert reveal_bounds(32, 8) == [round(32 * float((x - a[0]) / (1 - a[0]))) for x in a]


# ----------------------------------------------------------------------------- exact denoisers


def test_ar_sampler_with_exact_conditionals_reproduces_the_distribution():
    K, L = 3, 3
    joint = toy_joint(K, L, seed=20)
    first = joint.sum(dim=(1, 2))
    out = draw("ar", NextToken(joint), K, L, seed=21, steps=1, cache=False, first_token=first)
    assert out.nfe == L - 1
    assert chi2_pvalue(out.tokens, joint) > 1e-4
    assert chi2_pvalue(out.tokens, product_of_marginals(joint)) < 1e-12
    # without a first-token distribution, token 0 is uniform
    uniform_first = joint / first[:, None, None] / K
    out = draw("ar", NextToken(joint), K, L, seed=22, steps=1, cache=False)
    assert chi2_pvalue(out.tokens, uniform_first) > 1e-4


def test_mdlm_sampler_reproduces_the_distribution_with_many_steps_and_marginals_with_one():
    K, L = 3, 3
    joint = toy_joint(K, L, seed=23)
    oracle = Conditionals(joint)
    # two tokens revealed in one step (probability ~3/256) would be drawn independently
    many = draw("mdlm-ce", oracle, K, L, seed=24, steps=256)
    # reuse: a sequence is evaluated again only after a step that revealed some of its tokens
    assert many.nfe <= L
    assert chi2_pvalue(many.tokens, joint) > 1e-4
    one = draw("mdlm-elbo", oracle, K, L, seed=25, steps=1)  # every token from its marginal at once
    assert one.nfe == 1
    assert chi2_pvalue(one.tokens, product_of_marginals(joint)) > 1e-4
    assert chi2_pvalue(one.tokens, joint) < 1e-12


def test_eso_sampler_with_one_token_per_step_reproduces_the_distribution():
    K, L = 3, 3
    joint = toy_joint(K, L, seed=26)
    oracle = Conditionals(joint)  # causal in the given order: chunk tokens see revealed ones only
    out = draw("eso", oracle, K, L, seed=27, steps=L, cache=False)
    assert out.nfe == L
    assert chi2_pvalue(out.tokens, joint) > 1e-4
    one = draw("eso", oracle, K, L, seed=28, steps=1, cache=False)
    assert chi2_pvalue(one.tokens, product_of_marginals(joint)) > 1e-4
    # more steps than tokens: empty chunks cost no call
    assert draw("eso", oracle, K, L, seed=29, steps=8, cache=False).nfe == L


class UniformStateOracle(nn.Module):
    """The Duo denoiser that makes each token's reverse step exact: x_hat_l(x) proportional to
    p(x_l = x | z_t) / q(z_t,l | x_l = x) (the own token's evidence divided out), logits [B, L, K + 1]."""

    def __init__(self, joint: Tensor) -> None:
        super().__init__()
        self.K, self.L = joint.shape[0], joint.dim()
        self.seqs = all_sequences(self.K, self.L)
        self.probs = joint.reshape(-1)

    def forward(self, tokens, sigma=None, mode="bidirectional", positions=None):
        a = torch.exp(-sigma.double())[:, None, None]  # [B, 1, 1]
        same = (self.seqs[None] == tokens[:, None]).double()  # [B, S, L]
        lik = a * same + (1 - a) / self.K  # q(z_l | x_l) per sequence and position
        post = self.probs[None] * lik.prod(-1)  # [B, S]
        post = post / post.sum(-1, keepdim=True)
        onehot = torch.nn.functional.one_hot(self.seqs, self.K).double()  # [S, L, K]
        marg = torch.einsum("bs,slk->blk", post, onehot)
        own = a * torch.nn.functional.one_hot(tokens, self.K).double() + (1 - a) / self.K
        logits = torch.zeros(*tokens.shape, self.K + 1, dtype=F64)
        logits[..., : self.K] = (marg / own).log()
        return logits


def test_duo_reverse_step_draws_from_the_posterior():
    K, a_t, a_s = 4, 0.3, 0.7
    arm = get_arm("duo", K + 1)
    x_hat = torch.tensor([0.1, 0.6, 0.05, 0.25], dtype=F64)
    z_t = 2
    # Bayes with x ~ x_hat: q(z_s | z_t) = sum_x x_hat(x) q(z_t | z_s) q(z_s | x) / q(z_t | x_hat)
    eye = torch.eye(K, dtype=F64)
    q_s_given_x = a_s * eye + (1 - a_s) / K  # [x, z_s]
    q_t_given_s = (a_t / a_s) * eye + (1 - a_t / a_s) / K  # [z_s, z_t]
    joint = (x_hat[:, None] * q_s_given_x * q_t_given_s[:, z_t][None]).sum(0)
    expected = joint / joint.sum()
    n = 200_000
    z = arm.reverse_step(
        x_hat.log().expand(n, 1, K), torch.full((n, 1), z_t), a_t, a_s, torch.Generator().manual_seed(30)
    )
    assert chi2_pvalue(z, expected) > 1e-4
    assert chi2_pvalue(z, x_hat) < 1e-12


def test_duo_sampler_error_falls_as_steps_grow():
    K, L = 3, 2
    joint = toy_joint(K, L, seed=31)
    oracle = UniformStateOracle(joint)
    # measured: 0.55, 0.11, 0.06, 0.01; Monte Carlo noise of 20k samples over 9 outcomes is ~0.01
    errors = {s: tv(draw("duo", oracle, K, L, seed=32 + s, steps=s).tokens, joint) for s in (1, 4, 16, 128)}
    assert errors[1] > errors[4] > errors[16] > errors[128], errors
    assert errors[1] > 0.3  # one greedy step: close to the mode of each token's marginal
    assert errors[128] < 0.025


# ----------------------------------------------------------------------------- KV cache and reuse


def randomized(shape: ModelShape, seed: int) -> DiT:
    torch.manual_seed(seed)
    model = DiT(shape).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def test_cached_forward_matches_the_full_causal_forward_in_any_order():
    shape = ModelShape("t", 32, 2, 2, 13, 12)
    model = randomized(shape, seed=40)
    g = torch.Generator().manual_seed(41)
    tokens = torch.randint(0, 12, (3, 12), generator=g)
    order = torch.rand(3, 12, generator=g).argsort(1)
    with torch.no_grad():
        full = model(tokens.gather(1, order), mode="causal", positions=order)
        cache = KVCache(shape.seq_len, 3)
        # chunks of ranks; each call also carries two uncommitted extra queries, as Eso-LM's masked tokens
        for lo, hi in [(0, 1), (1, 4), (4, 5), (5, 9), (9, 12)]:
            extra = min(12, hi + 2)
            ranks = order[:, lo:extra]
            out = model(tokens.gather(1, ranks), mode="causal", positions=ranks, cache=cache, commit=hi - lo)
            assert torch.allclose(out, full[:, lo:extra], atol=1e-5), (lo, hi)
            assert cache.length == hi
        # default positions continue after the cached tokens
        cache = KVCache(shape.seq_len, 3)
        for i in range(12):
            out = model(tokens[:, i : i + 1], mode="causal", cache=cache, commit=1)
            assert torch.allclose(out[:, 0], model(tokens[:, : i + 1], mode="causal")[:, -1], atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        model(tokens[:, :1], cache=KVCache(shape.seq_len, 3))
    with pytest.raises(ValueError, match="seq_len"):
        model(tokens[:, :1], mode="causal", cache=cache)  # full


@pytest.mark.parametrize("arm_name", ["ar", "eso"])
def test_kv_cache_samplers_give_the_same_tokens_as_uncached_ones(arm_name):
    V, T = 17, 24
    model = randomized(ModelShape("t", 32, 2, 2, V, T), seed=42)
    arm = get_arm(arm_name, V)
    for steps, top_p in [(6, 1.0), (24, 0.9), (40, 1.0)]:
        got = {}
        for cache in (True, False):
            with torch.no_grad():
                got[cache] = arm.sample(
                    model, 8, T, SampleOptions(steps, top_p, cache), torch.Generator().manual_seed(43)
                )
        assert torch.equal(got[True].tokens, got[False].tokens), (steps, top_p)
        assert got[True].nfe == got[False].nfe == (T - 1 if arm_name == "ar" else min(steps, T))
        assert len(got[True].tokens.unique()) > 5  # not a degenerate model


def test_mdlm_reuse_gives_the_same_tokens_with_fewer_calls():
    V, T = 17, 16
    model = randomized(ModelShape("t", 32, 2, 2, V, T), seed=44)
    arm = get_arm("mdlm-ce", V)
    got = {}
    for cache in (True, False):
        with torch.no_grad():
            got[cache] = arm.sample(
                model, 4, T, SampleOptions(64, cache=cache), torch.Generator().manual_seed(45)
            )
    assert torch.equal(got[True].tokens, got[False].tokens)
    assert got[False].nfe == 64
    assert got[True].nfe <= T  # one evaluation per step that revealed some of the sequence's tokens
    assert (got[True].tokens != arm.mask_id).all()


def test_duo_and_mdlm_samples_are_seeded_and_real_tokens():
    V, T = 17, 16
    model = randomized(ModelShape("t", 32, 2, 2, V, T), seed=46)
    for name in ("duo", "mdlm-elbo"):
        arm = get_arm(name, V)
        runs = [
            arm.sample(model, 4, T, SampleOptions(5), torch.Generator().manual_seed(s)).tokens
            for s in (1, 1, 2)
        ]
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
        assert runs[0].min() >= 0 and runs[0].max() < V - 1


def test_tiny_top_p_makes_the_ar_sampler_greedy():
    V, T = 17, 12
    model = randomized(ModelShape("t", 32, 2, 2, V, T), seed=47)
    arm = get_arm("ar", V)
    with torch.no_grad():
        x = arm.sample(model, 4, T, SampleOptions(1, top_p=1e-9), torch.Generator().manual_seed(48)).tokens
        logits = model(x[:, :-1], mode="causal")[..., : V - 1]
    assert torch.equal(x[:, 1:], logits.argmax(-1))
