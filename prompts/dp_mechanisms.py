"""Differential-privacy mechanisms for the DP baselines, with a maintained accountant.

Two recipes, deliberately kept apart because only one of them is a DP guarantee:

* **DP-FedAvg** (client-level DP): each client's update of the shared prompt is clipped
  to L2 norm ``clip``; the aggregator adds Gaussian noise of std ``z * clip`` to the sum.
  All clients take part in every round, so the mechanism is ``rounds`` compositions of a
  Gaussian mechanism with noise multiplier ``z``; ``z`` is calibrated to the target
  (epsilon, delta) with Google's ``dp-accounting`` (PLD accountant) and the epsilon spent
  is reported by the same accountant.
* **DP-FPL** as its public code does it: at every (lockstep) local step each client's
  batch-mean gradient of the shared prompt is clipped to ``clip``, the server averages the
  clipped gradients and adds Gaussian noise of std ``sigma * clip / batch_size / n_clients``;
  the local prompt is factorised into low-rank factors plus a residual and the factors'
  gradients are clipped and noised locally (std ``sigma * clip / batch_size``), with
  ``sigma = sqrt(rounds * ln(1/delta)) / epsilon``. That formula comes with no accountant
  (it ignores the number of local steps and the sampling); it is reproduced as a
  *heuristic* so results are comparable with the paper, and labelled as such.

The DP-FPL local-prompt maths (:func:`factorise`, :func:`lowrank_grads`,
:func:`full_grad`) are pure functions over a batch of ``(M, W)`` prompts, so they can be
tested against hand computations; :class:`launcher.dp_strategies.DPFPL` drives them.

**Where the noise comes from.** DP noise is only a guarantee if nobody can regenerate it: a
seeded ``torch.Generator`` is a public function of the seed in ``config.yaml``, and whoever
knows the seed subtracts the noise again (the clipped sum came back within 2.4e-7 at
sigma = 1.7). So noise is drawn by :class:`SecureNoise` (the operating system's CSPRNG,
``os.urandom``, through Box-Muller in float64) unless a run asks for ``dp.reproducible_noise``,
which uses :class:`SeededNoise` and is labelled not private in its results and its audit.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Protocol

import dp_accounting
import torch
from dp_accounting import pld


def _gaussian_rounds(noise_multiplier: float, rounds: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)


def epsilon_spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` full-participation Gaussian rounds (PLD accountant)."""
    if noise_multiplier <= 0:
        return math.inf
    acc = pld.PLDAccountant()
    acc.compose(_gaussian_rounds(noise_multiplier, rounds))
    return float(acc.get_epsilon(delta))


def calibrate_noise_multiplier(epsilon: float, delta: float, rounds: int) -> float:
    """Smallest noise multiplier whose ``rounds``-fold composition is (epsilon, delta)-DP."""
    if epsilon <= 0 or not 0 < delta < 1 or rounds < 1:
        raise ValueError(f"need epsilon > 0, 0 < delta < 1, rounds >= 1; got {epsilon}, {delta}, {rounds}")
    return float(
        dp_accounting.calibrate_dp_mechanism(
            pld.PLDAccountant,
            lambda z: _gaussian_rounds(z, rounds),
            epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(0.3, 1.0),
            tol=1e-3,
        )
    )


def dpfpl_sigma(epsilon: float, delta: float, rounds: int) -> float:
    """DP-FPL's noise multiplier formula (heuristic, no accountant; see the module docstring)."""
    return math.sqrt(rounds * math.log(1.0 / delta)) / epsilon


def clip_by_norm(t: torch.Tensor, max_norm: float) -> torch.Tensor:
    norm = t.norm()
    return t * (max_norm / norm).clamp(max=1.0) if norm > 0 else t.clone()


class NoiseSource(Protocol):
    """Where DP noise is drawn from: ``normal(shape)`` gives float64 N(0, 1) samples."""

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor: ...


class SecureNoise:
    """N(0, 1) from the operating system's CSPRNG (``os.urandom``): nobody, the seed's holder
    included, can draw the same noise again. Box-Muller on 53-bit uniforms, in float64."""

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        words = torch.frombuffer(bytearray(os.urandom(16 * ((n + 1) // 2) or 16)), dtype=torch.int64)
        u = ((words >> 11) & ((1 << 53) - 1)).double() / 2.0**53  # uniform in [0, 1)
        u1, u2 = 1.0 - u[0::2], u[1::2]  # u1 in (0, 1]: log never sees 0
        r = torch.sqrt(-2.0 * torch.log(u1))
        z = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)])
        return z[:n].reshape(shape)


class SeededNoise:
    """N(0, 1) from a seeded ``torch.Generator``: reproducible, therefore **not private**
    against anyone who knows the seed (``dp.reproducible_noise``, an explicit opt-in)."""

    def __init__(self, seed: int | torch.Generator) -> None:
        self.generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).double()  # float32 draws, as before the opt-in


def gaussian_like(t: torch.Tensor, std: float, noise: NoiseSource) -> torch.Tensor:
    """``N(0, std^2)`` noise shaped like ``t`` (its dtype and device) from ``noise``."""
    return (noise.normal(tuple(t.shape)) * std).to(dtype=t.dtype, device=t.device)


# ------------------------------------------------------------------ DP-FPL local prompt


class LowRank(NamedTuple):
    """``local == u @ v + residual``; ``u`` has orthonormal columns, ``v`` orthonormal rows."""

    u: torch.Tensor  # (..., M, r)
    v: torch.Tensor  # (..., r, W)
    residual: torch.Tensor  # (..., M, W)


def orthonormalise_columns(m: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt over the columns of each ``(n, r)`` matrix in ``m`` (``r <= n``), in column order.

    The same modified Gram-Schmidt as DP-FPL's public code (normalise column ``i``, then
    remove its component from every later column), batched over leading dimensions. A column
    that is (numerically) dependent on the earlier ones has no direction left: with ``r > n``
    that is certain, hence :func:`factorise` caps the rank at ``M``.
    """
    out = m.clone()
    for i in range(out.shape[-1]):
        col = out[..., i:i + 1]
        col /= col.norm(dim=-2, keepdim=True)
        if i + 1 < out.shape[-1]:
            rest = out[..., i + 1:]
            rest -= (col * rest).sum(dim=-2, keepdim=True) * col
    return out


def effective_rank(rank: int, n_ctx: int) -> int:
    """The factorisation rank actually used: ``min(rank, M)`` (an ``(M, W)`` prompt has at most
    ``M`` orthonormal column directions; DP-FPL's code assumes ``rank <= n_ctx``)."""
    return max(1, min(rank, n_ctx))


def factorise(local: torch.Tensor, rank: int, generator: torch.Generator) -> LowRank:
    """DP-FPL's per-step factorisation of the local prompt(s) ``local`` (``(..., M, W)``).

    One power-iteration-like pass from a random start: ``v0 ~ N(0, 1)`` of shape ``(W, r)``,
    ``u = orth(L v0)``, ``v = orth(L^T u)^T``, ``residual = L - u v``. Each leading slice
    gets its own ``v0``. ``r = effective_rank(rank, M)``. Not differentiated through: the
    factors are constants for the step, as in the public code.
    """
    with torch.no_grad():
        L = local.detach()
        r = effective_rank(rank, L.shape[-2])
        v0 = torch.randn((*L.shape[:-2], L.shape[-1], r), generator=generator, dtype=L.dtype).to(L.device)
        u = orthonormalise_columns(L @ v0)
        v = orthonormalise_columns(L.transpose(-1, -2) @ u).transpose(-1, -2)
        return LowRank(u, v, L - u @ v)


def lowrank_grads(grad: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the factors when the prompt is ``u @ v + residual`` and ``grad = dLoss/dprompt``:
    ``(grad @ v^T, u^T @ grad)``."""
    return grad @ v.transpose(-1, -2), u.transpose(-1, -2) @ grad


def full_grad(u: torch.Tensor, v: torch.Tensor, g_u: torch.Tensor, g_v: torch.Tensor,
              scale: float = 0.1) -> torch.Tensor:
    """DP-FPL's gradient for the full local prompt, rebuilt from the (privatised) factor gradients.

    With ``gu = scale * g_u`` and ``gv = scale * g_v`` (the public code divides by 10):
    ``gu @ v + u @ gv + u @ (u^T @ (gu @ v))``, the public code's ``compute_full_grad``.
    """
    gu, gv = g_u * scale, g_v * scale
    gu_v = gu @ v
    return gu_v + u @ gv + u @ (u.transpose(-1, -2) @ gu_v)


def privatise_lowrank(grad: torch.Tensor, factors: LowRank, clip: float, std: float,
                      noise: NoiseSource) -> torch.Tensor:
    """DP-FPL's local-prompt gradient: factor gradients clipped to ``clip`` (each factor's whole
    gradient, all slices together, as one tensor) plus ``N(0, std)`` noise, then :func:`full_grad`.
    Noise is drawn for ``g_u`` first, then ``g_v``, from ``noise``."""
    g_u, g_v = lowrank_grads(grad, factors.u, factors.v)
    g_u = clip_by_norm(g_u, clip)
    g_u = g_u + gaussian_like(g_u, std, noise)
    g_v = clip_by_norm(g_v, clip)
    g_v = g_v + gaussian_like(g_v, std, noise)
    return full_grad(factors.u, factors.v, g_u, g_v)
