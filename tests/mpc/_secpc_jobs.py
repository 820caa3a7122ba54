"""Party functions for the SecPC tests (module level so run_parties can pickle them)."""

from __future__ import annotations

import torch

from mpc import secure_ops as so
from mpc.secpc import SecPCConfig, secpc_round
from mpc.clustering import secure_kmeans


def _mine(owners, rank):
    return [i for i, o in enumerate(owners) if o == rank]


def kmeans_labels(party, cases):
    """For each (X, owners, ks, iters, seed): labels of every candidate, revealed to all (TEST ONLY)."""
    out = []
    for X, owners, ks, iters, seed in cases:
        km = secure_kmeans(X[_mine(owners, party.rank)], owners, party.rank, ks, iters, seed)
        A = km.A.get_plain_text().round().long()
        out.append(A.numpy())
    return out


def rounds(party, X, P, owners, configs):
    """secpc_round for each config; returns what this party got."""
    res = []
    for cfg in configs:
        r = secpc_round(party, X[_mine(owners, party.rank)], P[_mine(owners, party.rank)], owners, cfg)
        res.append(dict(rows=r.own_rows.numpy(), k=r.k, assign=None if r.own_assignment is None else r.own_assignment.numpy(),
                        stats=r.stats, insecure=r.insecure_dealer, revealed=r.revealed))
    return res
