"""Party functions for tests/mpc/test_integrity.py (module level: spawned parties pickle them)."""

from __future__ import annotations

import torch

from mpc import secpc
from mpc.layout import SecPCConfig


def lying_party(party, X: torch.Tensor, P: torch.Tensor, liar: int) -> list[float]:
    """Peer SecPC round in which party ``liar`` shares a prompt entry of 1e9 (far above the
    bound 2^18/N) and publishes "valid" for it: its own check is skipped, as a deviating party
    would. Returns this party's aggregate row."""
    if party.rank == liar:
        secpc._local_problem = lambda *args: 0  # the published code is only this party's word
        P = P.clone()
        P[liar, 0] = 1e9
    owners = list(range(X.shape[0]))
    res = secpc.secpc_round(party, X[[party.rank]], P[[party.rank]], owners,
                            SecPCConfig(1, 1, 2, 0, min_cluster_size=1, allow_insecure=True))
    return res.own_rows[0].tolist()
