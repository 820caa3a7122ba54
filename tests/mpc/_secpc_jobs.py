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


def transcript(party, inputs, owners, ks, iters, watch_rank):
    """Run secure_kmeans once per input set; ``watch_rank`` records every tensor it receives."""
    from mpc.compat import import_crypten

    ct = import_crypten()
    Comm = ct.communicator.DistributedCommunicator
    names = ["all_reduce", "reduce", "broadcast", "gather", "recv", "all_gather", "scatter"]
    originals = {n: getattr(Comm, n) for n in names}
    record: list = []

    def wrap(name):
        f = originals[name]

        def g(self, *a, **k):
            res = f(self, *a, **k)
            items = res if isinstance(res, list) else [res]
            for t in items:
                if torch.is_tensor(t) and t.dtype == torch.long:
                    record.append(t.detach().flatten().clone())
            return res

        return g

    outs = []
    for X in inputs:
        record.clear()
        if party.rank == watch_rank:
            for n in names:
                setattr(Comm, n, wrap(n))
        try:
            secure_kmeans(X[_mine(owners, party.rank)], owners, party.rank, ks, iters, 0)
        finally:
            for n in names:
                setattr(Comm, n, originals[n])
        outs.append(torch.cat(record).numpy() if record else None)
    return outs
