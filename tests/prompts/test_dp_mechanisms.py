"""DP mechanisms: calibration agrees with the accountant, clipping and noise do what they say."""

from __future__ import annotations

import math

import pytest
import torch

from prompts import dp_mechanisms as dp


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_calibrated_noise_spends_the_target_epsilon(epsilon):
    z = dp.calibrate_noise_multiplier(epsilon, 1e-5, rounds=5)
    spent = dp.epsilon_spent(z, 5, 1e-5)
    assert spent <= epsilon * 1.001 and spent >= epsilon * 0.97
    # fewer rounds of the same noise spend less; a smaller target needs more noise
    assert dp.epsilon_spent(z, 2, 1e-5) < spent
    assert dp.calibrate_noise_multiplier(epsilon / 2, 1e-5, rounds=5) > z


def test_single_gaussian_matches_the_classical_bound_direction():
    # the classical sigma = sqrt(2 ln(1.25/delta)) / eps is sufficient (loose), so the
    # accountant's epsilon for that sigma is at most eps.
    eps, delta = 1.0, 1e-5
    sigma = math.sqrt(2 * math.log(1.25 / delta)) / eps
    assert dp.epsilon_spent(sigma, 1, delta) <= eps


def test_dpfpl_formula():
    assert dp.dpfpl_sigma(2.0, math.exp(-3), rounds=4) == pytest.approx(math.sqrt(12) / 2)


def test_clip_and_noise():
    t = torch.full((4, 8), 3.0)
    c = dp.clip_by_norm(t, 1.0)
    assert c.norm().item() == pytest.approx(1.0, rel=1e-6)
    small = torch.full((2,), 0.1)
    assert torch.equal(dp.clip_by_norm(small, 1.0), small)
    for source in (dp.SeededNoise(0), dp.SecureNoise()):
        noise = dp.gaussian_like(torch.zeros(20000), 2.0, source)
        assert noise.dtype == torch.float32 and noise.shape == (20000,)
        assert noise.mean().item() == pytest.approx(0.0, abs=0.05)
        assert noise.std().item() == pytest.approx(2.0, rel=0.03)
    with pytest.raises(ValueError):
        dp.calibrate_noise_multiplier(0.0, 1e-5, 5)


# ------------------------------------------------------------------ DP-FPL local prompt


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, rank, r", [((4, 64), 8, 4), ((4, 64), 2, 2), ((10, 4, 64), 8, 4), ((16, 32), 8, 8)])
def test_factorise_splits_the_prompt_exactly_with_orthonormal_factors(shape, rank, r):
    L = torch.randn(shape, generator=_gen(1), dtype=torch.float64) * 0.02
    u, v, residual = dp.factorise(L, rank, _gen(2))
    M, W = shape[-2:]
    assert u.shape == (*shape[:-2], M, r) and v.shape == (*shape[:-2], r, W) and residual.shape == L.shape
    assert torch.allclose(u @ v + residual, L, atol=1e-12)
    eye = torch.eye(r, dtype=L.dtype).expand(*shape[:-2], r, r)
    assert torch.allclose(u.transpose(-1, -2) @ u, eye, atol=1e-10)  # orthonormal columns
    assert torch.allclose(v @ v.transpose(-1, -2), eye, atol=1e-10)  # orthonormal rows
    assert dp.effective_rank(rank, M) == r
    # a fresh random start, a different split; the same generator seed, the same split
    assert not torch.allclose(dp.factorise(L, rank, _gen(3)).u, u)
    assert torch.equal(dp.factorise(L, rank, _gen(2)).u, u)


def test_batched_factorisation_is_per_slice():
    L = torch.randn(3, 4, 16, generator=_gen(1), dtype=torch.float64)
    u, v, _ = dp.factorise(L, 4, _gen(0))
    # each slice's u spans that slice's rows' column space (rank 4 = M: u u^T = I per slice)
    assert torch.allclose(u @ u.transpose(-1, -2), torch.eye(4, dtype=L.dtype).expand(3, 4, 4), atol=1e-10)
    # and v's rows span each slice's own row space: L_c = (L_c v^T) v
    assert torch.allclose(L @ v.transpose(-1, -2) @ v, L, atol=1e-10)


def test_gram_schmidt_is_qr_with_a_positive_diagonal():
    m = torch.randn(2, 6, 3, generator=_gen(5), dtype=torch.float64)
    q = dp.orthonormalise_columns(m)
    q_ref, r_ref = torch.linalg.qr(m)
    sign = torch.sign(torch.diagonal(r_ref, dim1=-2, dim2=-1)).unsqueeze(-2)
    assert torch.allclose(q, q_ref * sign, atol=1e-10)
    assert torch.equal(m, torch.randn(2, 6, 3, generator=_gen(5), dtype=torch.float64))  # input untouched


def test_lowrank_grads_are_the_chain_rule():
    L = torch.randn(2, 4, 8, generator=_gen(1), dtype=torch.float64)
    u, v, residual = dp.factorise(L, 3, _gen(2))
    weight = torch.randn(2, 4, 8, generator=_gen(3), dtype=torch.float64)
    u_, v_ = u.clone().requires_grad_(), v.clone().requires_grad_()
    ((u_ @ v_ + residual) * weight).sum().backward()  # dLoss/dprompt = weight
    g_u, g_v = dp.lowrank_grads(weight, u, v)
    assert torch.allclose(g_u, u_.grad) and torch.allclose(g_v, v_.grad)


def test_full_grad_without_noise_matches_a_hand_computation():
    # full rank (r = M): u is square orthogonal, so u u^T = I and the public code's formula
    # 0.1 * (G v^T v + u u^T G + u u^T G v^T v) collapses to 0.1 * (G + 2 G P) with P = v^T v
    L = torch.randn(4, 16, generator=_gen(1), dtype=torch.float64)
    G = torch.randn(4, 16, generator=_gen(2), dtype=torch.float64)
    f = dp.factorise(L, 8, _gen(3))
    got = dp.privatise_lowrank(G, f, clip=1e9, std=0.0, noise=dp.SeededNoise(4))
    P = f.v.T @ f.v
    assert torch.allclose(got, 0.1 * (G + 2 * G @ P), atol=1e-12)
    # rank 2 < M: the formula term by term
    f = dp.factorise(L, 2, _gen(3))
    got = dp.privatise_lowrank(G, f, clip=1e9, std=0.0, noise=dp.SeededNoise(4))
    gu, gv = 0.1 * G @ f.v.T, 0.1 * f.u.T @ G
    assert torch.allclose(got, gu @ f.v + f.u @ gv + f.u @ f.u.T @ gu @ f.v, atol=1e-12)


def test_clipping_bounds_the_local_gradient_and_noise_is_seeded():
    L = torch.randn(10, 4, 64, generator=_gen(1))
    G = torch.randn(10, 4, 64, generator=_gen(2)) * 1e6
    f = dp.factorise(L, 8, _gen(3))
    clipped = dp.privatise_lowrank(G, f, clip=0.5, std=0.0, noise=dp.SeededNoise(4))
    # u, v orthonormal: each of the three terms is at most 0.1 * clip in norm
    assert clipped.norm() <= 0.3 * 0.5 * (1 + 1e-5)
    g_u, g_v = dp.lowrank_grads(G, f.u, f.v)
    assert torch.allclose(clipped, dp.full_grad(f.u, f.v, dp.clip_by_norm(g_u, 0.5), dp.clip_by_norm(g_v, 0.5)))
    noisy = dp.privatise_lowrank(G, f, clip=0.5, std=1.0, noise=dp.SeededNoise(4))
    assert not torch.allclose(noisy, clipped)
    assert torch.equal(noisy, dp.privatise_lowrank(G, f, clip=0.5, std=1.0, noise=dp.SeededNoise(4)))


@pytest.mark.parametrize("epsilon, delta, rounds", [(0, 1e-5, 5), (1, 0, 5), (1, 1, 5), (1, 1.5, 5), (1, 1e-5, 0)])
def test_calibration_refuses_meaningless_privacy_targets(epsilon, delta, rounds):
    with pytest.raises(ValueError, match="need epsilon > 0, 0 < delta < 1, rounds >= 1"):
        dp.calibrate_noise_multiplier(epsilon, delta, rounds)


def test_secure_noise_is_standard_normal_and_never_repeats():
    from scipy import stats

    a, b = dp.SecureNoise().normal((50001,)), dp.SecureNoise().normal((50001,))  # odd: Box-Muller's last pair cut
    assert a.dtype == torch.float64 and a.shape == (50001,)
    assert stats.kstest(a.numpy(), "norm").pvalue > 1e-3
    assert not torch.equal(a, b)
    assert dp.SecureNoise().normal((0,)).shape == (0,)
