"""Secure cluster-wise aggregation and the whole SecPC round (SPEC §4 steps 5-6).

:func:`secpc_round` is the entry point for the launcher: every client calls it with its own
rows; it clusters (:mod:`mpc.clustering`), picks k (revealed to all), aggregates the full
prompts under encryption with the ``min_cluster_size`` policy, and reveals row i to its owner
only (``get_plain_text(dst=owner)``, one call per party). With ``reveal_own_assignment`` (off by
default, evaluation only) each party also decrypts its own rows' labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mpc import reference as ref
from mpc import secure_ops as so
from mpc.clustering import INV_BITS, SecureState, inverse_table, secure_kmeans, secure_silhouette_choice, select_group
from mpc.compat import import_crypten
from mpc.stats import CommLog


@dataclass(frozen=True)
class SecPCConfig:
    k_min: int = 2
    k_max: int = 6
    iters: int = 10
    seed: int = 0
    min_cluster_size: int = 3
    reveal_own_assignment: bool = False  # evaluation only (ARI); written into results when on
    restarts: int = 1  # Forgy draws per candidate k (the best silhouette wins, see mpc.reference)


@dataclass
class SecPCResult:
    own_rows: torch.Tensor  # n_local x prompt_dim: this party's aggregate prompt(s), float32
    k: int  # chosen k (revealed to every party)
    stats: dict  # CommLog.as_dict(): seconds / rounds / bytes per phase
    state: SecureState | None = None  # encrypted centres for a warm start next round (never revealed)
    own_assignment: torch.Tensor | None = None  # only with reveal_own_assignment
    insecure_dealer: bool = False
    revealed: list = field(default_factory=list)  # what this party learnt, for the results


def secure_aggregate(A, F, n_rows: int, min_cluster_size: int, log: CommLog, count_bits=None):
    """Encrypted ``N x d`` matrix whose row i is the mean prompt of row i's cluster (or the mean
    over all rows if that cluster has fewer than ``min_cluster_size`` members).

    ``A``: ``N x k`` one-hot int shares; ``F``: ``N x d`` fixed-point prompt shares.
    ``count_bits``: ``[n_f >= v]`` bits if already computed (saves one comparison).
    """
    ct = import_crypten()
    k = A.shape[1]
    with log.phase("aggregate"):
        if count_bits is None:
            count_bits = so.count_bits(A.sum(0), n_rows)
        w = so.lookup(count_bits, inverse_table(n_rows, min_cluster_size))  # round(2^20/n) if big else 0
        big = so.lookup(count_bits, (torch.arange(1, n_rows + 1) >= min_cluster_size).long() << INV_BITS)
        sums = A.t().matmul(F)  # k x d fixed point, no truncation (A is int)
        mean_all = F.mean(0, keepdim=True)
        d = F.shape[1]
        lhs = so.as_int(ct.cat([sums, mean_all.expand(k, d)], 0))
        rhs = ct.cat([w, big], 0).unsqueeze(1).expand(2 * k, d)
        prod = so.as_fixed(so.truncate(lhs * rhs, 2**INV_BITS))
        Q = mean_all.expand(k, d) + prod[:k] - prod[k:]
        out = A.matmul(Q)
    return out


def secpc_round(
    party,
    x_local: torch.Tensor,
    p_local: torch.Tensor,
    owners: list[int],
    config: SecPCConfig = SecPCConfig(),
    warm: SecureState | None = None,
) -> SecPCResult:
    """One SecPC round at one client.

    ``x_local``: ``n_local x m`` reduced prompts (norm <= 1, :func:`mpc.projection.reduce_prompt`);
    ``p_local``: ``n_local x d`` full prompts (``vec(D_i)``); ``owners``: public owner rank of
    every global row (this party's rows appear in ``x_local`` in that order).
    """
    ct = import_crypten()
    rank = party.rank
    log = CommLog()
    ks = ref.candidate_groups(config.k_min, config.k_max, config.restarts)
    N = len(owners)
    xq = ref.quantize(x_local, ref.quant_bits(N))
    x2 = (xq.double() ** 2).sum(1, keepdim=True) / 2.0 ** (2 * ref.quant_bits(N))
    with log.phase("share"):
        F = so.share_rows(torch.cat([x2, p_local.double()], 1).float(), owners, rank, None)
    out = secure_kmeans(x_local, owners, rank, ks, config.iters, config.seed, warm=warm, log=log)
    A_all = out.A
    if len(ks) == 1:
        k, A, cbits = ks[0], A_all, None
    else:
        k, onehot, cb_all = secure_silhouette_choice(out, F[:, 0], ks, N, log)
        A, cbits = select_group(A_all, cb_all, onehot, ks, k, log)
    agg = secure_aggregate(A, F[:, 1:], N, config.min_cluster_size, log, count_bits=cbits)
    mine = [i for i, o in enumerate(owners) if o == rank]
    own_rows, own_assign = None, None
    with log.phase("reveal"):
        for p in sorted(set(owners)):
            idx = torch.tensor([i for i, o in enumerate(owners) if o == p])
            val = agg[idx].get_plain_text(dst=p)
            if p == rank:
                own_rows = val
        if config.reveal_own_assignment:
            for p in sorted(set(owners)):
                idx = torch.tensor([i for i, o in enumerate(owners) if o == p])
                lab = so.matmul_public_int(A[idx], torch.arange(k)).get_plain_text(dst=p)
                if p == rank:
                    own_assign = lab.round().long()
    revealed = ["chosen_k (all parties)", "own aggregate rows (this party only)"]
    if config.reveal_own_assignment:
        revealed.append("own cluster labels (this party only; evaluation switch)")
    return SecPCResult(
        own_rows=own_rows if own_rows is not None else torch.empty(0, p_local.shape[1]),
        k=k,
        stats=log.as_dict(),
        state=out.state,
        own_assignment=own_assign,
        insecure_dealer=bool(getattr(party, "insecure_dealer", False)),
        revealed=revealed,
    )
