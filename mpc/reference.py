"""Plaintext reference of SecPC: exactly the maths :mod:`mpc.clustering` and
:mod:`mpc.secpc` compute under encryption (the test oracle and the "plaintext
clustered FPP" baseline).

Shared conventions (public; both sides import them from :mod:`mpc.layout`):

* **Input contract.** Rows ``x_i`` with ``||x_i|| <= 1`` (what :func:`mpc.projection.reduce_prompt`
  produces). Rows are quantised once, ``xq = round(x * 2^s)`` (int64), with ``s = quant_bits(N)``
  (16 for N <= 115, less for larger N so that every intermediate stays below 2^62, see
  :func:`quant_bits`). The Lloyd part is then *exact integer arithmetic*, so the secure run
  reproduces this reference bit for bit, ties included.
* **Centres** are kept as (sum ``S_j``, count ``n_j``) — no division inside the loop. Initial
  centres follow Forgy's method with *public* randomness: for each candidate group, k distinct
  rows chosen by a seeded permutation (:func:`initial_rows`), with count 1. The indices are
  public and data-independent; the rows' values stay encrypted (taking rows of a shared
  matrix at public indices is a local operation), so nothing is revealed, and every centre
  starts inside the data (random directions in R^m would often start far from all rows,
  never win one, and spoil the adaptive choice of k). Candidates are laid side by side as
  column groups; with ``restarts = R`` every k appears R times (k-major: ``[2, 2, 3, 3, ...]``,
  :func:`candidate_groups`), each copy from its own Forgy draw, because Lloyd from one draw
  often stops in a poor local optimum (measured on the default: k=3 from one draw splits a
  domain and merges two others in about half the seeds).
* **Assignment.** ``e_ij = ||S_j||^2 - 2 n_j x_i.S_j`` equals ``n_j^2 (||x_i - c_j||^2 - ||x_i||^2)``,
  so ``d_ij < d_il  <=>  f = e_ij n_l^2 - e_il n_j^2 < 0`` (all counts > 0). For columns j < l of a
  group, ``w = [f <= 0]`` says "j beats l"; ``1 - w`` says "l beats j" (strict). Column j is hot
  iff it beats every other column: exactly one hot column per row, exact ties go to the lowest
  index (numpy/scikit-learn ``argmin``).
* **Update.** ``S_new = A^T xq``, ``n_new = A^T 1``; a cluster that received no row keeps its
  previous ``(S, n)`` (so its centre is unchanged). Fixed number of iterations ``T``; labels are
  recomputed with the final centres (scikit-learn's ``labels_`` semantics), i.e. T+1 assignments.
* **Adaptive k** (when ``k_min < k_max``): simplified silhouette on *squared* distances to the
  final centres ``c_j = S_j / n_j``: ``a_i`` = distance to own centre, ``b_i`` = smallest distance to
  another centre of the same candidate, ``s_i = 1 - a_i / (b_i + EPS_SIL)``, and ``s_i = 0`` for a
  row alone in its cluster (Rousseeuw's convention: otherwise a singleton scores a perfect 1 and
  splitting a true cluster pays; measured on 9 rows in 3 domains it picked k=4 every time);
  score = mean over rows;
  the largest score over all groups wins, ties to the first group (the smallest k, then the
  earliest restart). Only the chosen k is revealed; which restart won stays encrypted (the
  secure code selects the winner's labels with an encrypted one-hot multiplexer).
* **Aggregation.** ``n_f = A^T 1`` of the final labels; cluster j's value is the mean of its
  members' prompts if ``n_f_j >= min_cluster_size``, else the mean over all N rows; row i receives
  its cluster's value.
"""


from __future__ import annotations

from dataclasses import dataclass

import torch

from mpc.layout import EPS_SIL, SecPCConfig, candidate_groups, group_layout, initial_rows, pair_layout, quant_bits, quantize


def initial_centres(k: int, X: torch.Tensor, seed: int) -> torch.Tensor:
    """The plaintext initial centres for one k (for scikit-learn and the naive baseline)."""
    return torch.as_tensor(X)[initial_rows([k], len(X), seed)]


def initial_state(ks: list[int], xq: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (S, n) for all candidates from the quantised rows ``xq``."""
    S = xq[initial_rows(ks, xq.shape[0], seed)].clone()
    return S, torch.ones(S.shape[0], dtype=torch.long)


# ------------------------------------------------------------------ exact integer Lloyd


def assign_int(xq: torch.Tensor, S: torch.Tensor, n: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """One-hot ``N x sum(ks)`` int64 assignment, one hot column per candidate group."""
    G = xq @ S.t()
    SS = (S * S).sum(1)
    e = SS.unsqueeze(0) - 2 * n.unsqueeze(0) * G
    n2 = n * n
    J, L = pair_layout(ks)
    f = e[:, J] * n2[L] - e[:, L] * n2[J]
    w = (f <= 0).long()  # column J beats column L (ties to the lower index)
    K = S.shape[0]
    A = torch.ones(xq.shape[0], K, dtype=torch.long)
    for p in range(len(J)):
        A[:, J[p]] *= w[:, p]
        A[:, L[p]] *= 1 - w[:, p]
    # a group with a single column (k = 1): that column is always hot
    return A


def lloyd_int(xq, S, n, ks, iters):
    """``iters`` Lloyd updates then the final labels. Returns (S, n, A_final)."""
    S, n = S.clone(), n.clone()
    for _ in range(iters):
        A = assign_int(xq, S, n, ks)
        S_new, n_new = A.t() @ xq, A.sum(0)
        empty = n_new == 0
        S = torch.where(empty.unsqueeze(1), S, S_new)
        n = torch.where(empty, n, n_new)
    return S, n, assign_int(xq, S, n, ks)


# ------------------------------------------------------------------ criterion, aggregation


def silhouette_scores(x: torch.Tensor, S, n, A, ks, bits) -> torch.Tensor:
    """Simplified silhouette (squared distances) per candidate, float64."""
    xf = x.double() / 2.0**bits if not torch.is_floating_point(x) else x.double()
    C = S.double() / (n.double().unsqueeze(1) * 2.0**bits)
    d = (xf * xf).sum(1, keepdim=True) - 2 * xf @ C.t() + (C * C).sum(1).unsqueeze(0)
    scores = []
    for off, k in group_layout(ks):
        dk, Ak = d[:, off : off + k], A[:, off : off + k].double()
        a = (dk * Ak).sum(1)
        b = (dk + 8.0 * Ak).min(1).values
        shared = Ak @ (Ak.sum(0) >= 2).double()  # 0 for a row alone in its cluster
        scores.append((shared * (1 - a / (b + EPS_SIL))).mean())
    return torch.stack(scores)


def choose_group(scores: torch.Tensor) -> int:
    """Index of the largest score, ties to the first group (smallest k, earliest restart)."""
    best = 0
    for c in range(1, len(scores)):
        if scores[c] > scores[best]:
            best = c
    return best



def aggregate(P: torch.Tensor, A: torch.Tensor, min_cluster_size: int) -> torch.Tensor:
    """Row i gets its cluster's mean prompt, or the global mean if the cluster is too small."""
    P = P.double()
    A = A.double()
    nf = A.sum(0)
    means = (A.t() @ P) / nf.clamp_min(1).unsqueeze(1)
    big = (nf >= min_cluster_size).unsqueeze(1)
    Q = torch.where(big, means, P.mean(0, keepdim=True).expand_as(means))
    return A @ Q


@dataclass
class ReferenceResult:
    rows: torch.Tensor  # N x P_dim aggregates (float64)
    k: int
    labels: torch.Tensor  # N, labels of the chosen candidate
    scores: torch.Tensor | None  # silhouette per group (None for a single group)
    S: torch.Tensor
    n: torch.Tensor
    group: int = 0  # index of the winning group (never revealed by the secure code)


def secpc_reference(
    X: torch.Tensor,
    P: torch.Tensor | None,
    config: SecPCConfig,
    warm_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    bits: int | None = None,
) -> ReferenceResult:
    """The whole SecPC round in plaintext, with the same public parameters as the secure one:
    cluster ``X``, pick k, aggregate ``P``."""
    ks = candidate_groups(config.k_min, config.k_max, config.restarts)
    N, m = X.shape
    bits = quant_bits(N) if bits is None else bits
    xq = quantize(X, bits)
    S0, n0 = warm_state if warm_state is not None else initial_state(ks, xq, config.seed)
    S, n, A = lloyd_int(xq, S0, n0, ks, config.iters)
    scores, g = None, 0
    if len(ks) > 1:
        scores = silhouette_scores(xq, S, n, A, ks, bits)
        g = choose_group(scores)
    off, k = group_layout(ks)[g]
    Ak = A[:, off : off + k]
    rows = aggregate(P, Ak, config.min_cluster_size) if P is not None else None
    return ReferenceResult(rows, k, Ak.argmax(1), scores, S, n, g)
