"""Secure cluster-wise aggregation: every row gets its cluster's mean prompt, under encryption.

Clusters smaller than ``min_cluster_size`` hand their members the mean over all rows instead,
decided obliviously (nobody learns which clusters were small). The round that calls this is
:func:`mpc.secpc.secpc_round`.
"""

from __future__ import annotations

import torch

from mpc import secure_ops as so
from mpc.clustering import inverse_table
from mpc.layout import INV_BITS
from mpc.compat import import_crypten
from mpc.stats import CommLog


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
