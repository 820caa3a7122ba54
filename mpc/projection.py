"""Local, plaintext reduction of a domain prompt to the vector SecPC clusters.

``x = normalise(R · vec(D - D_init))`` with ``R`` a public, seeded Gaussian ``m x (M*width)``
matrix, identical at every party. A prompt that has not moved (``D == D_init``) maps to the
zero vector (no NaN); every output row has Euclidean norm 1 or 0, which is the input contract
of :mod:`mpc.clustering` (rows with norm <= 1).
"""

from __future__ import annotations

import torch

DEFAULT_DIM = 64


def projection_matrix(in_dim: int, m: int = DEFAULT_DIM, seed: int = 0) -> torch.Tensor:
    """Public ``m x in_dim`` Gaussian matrix (entries N(0, 1/m)) from ``seed``; float32, CPU."""
    if in_dim <= 0 or m <= 0:
        raise ValueError(f"in_dim and m must be positive, got {in_dim}, {m}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(m, in_dim, generator=gen, dtype=torch.float64).div_(m**0.5).float()


def reduce_prompt(D: torch.Tensor, D_init: torch.Tensor, R: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``normalise(R · vec(D - D_init))``. ``D`` may be one prompt (``M x width``) or a batch
    (``B x M x width``); returns ``m`` or ``B x m``. Zero movement gives the zero vector."""
    if D.shape[-2:] != D_init.shape[-2:]:
        raise ValueError(f"prompt shape {tuple(D.shape)} does not match D_init {tuple(D_init.shape)}")
    single = D.dim() == 2
    delta = (D.detach().double() - D_init.detach().double()).reshape(1 if single else D.shape[0], -1)
    if delta.shape[1] != R.shape[1]:
        raise ValueError(f"R expects {R.shape[1]} inputs, prompt has {delta.shape[1]}")
    y = delta @ R.double().t()
    norm = y.norm(dim=1, keepdim=True)
    y = torch.where(norm > eps, y / norm.clamp_min(eps), torch.zeros_like(y))
    y = y.float()
    return y[0] if single else y
