"""The naive CrypTen Lloyd loop: the benchmark baseline SecPC is measured against.

Full squared distances -> ``argmin(one_hot=True)`` with CrypTen's *default* max method
(``log_reduction``, set temporarily) -> sums and counts -> ``reciprocal`` of the counts ->
centres. No empty-cluster handling (an empty cluster breaks it; benchmark data avoid that).
"""

from __future__ import annotations

import torch

from mpc import secure_ops as so
from mpc.compat import import_crypten
from mpc.stats import CommLog


def naive_kmeans(X, C0: torch.Tensor, iters: int, log: CommLog | None = None, max_method: str = "log_reduction"):
    """``X``: encrypted ``N x m`` (fixed point); ``C0``: public ``k x m`` initial centres.
    Returns the encrypted one-hot labels (recomputed with the final centres) and centres."""
    ct = import_crypten()
    log = log if log is not None else CommLog()
    with ct.cfg.temp_override({"functions.max_method": max_method}):
        C = ct.cryptensor(C0.float(), src=0)
        x2 = (X * X).sum(1, keepdim=True)

        def assign(C):
            D = x2 - X.matmul(C.t()) * 2 + (C * C).sum(1).unsqueeze(0)
            return D.argmin(dim=1, one_hot=True)

        for _ in range(iters):
            with log.phase("naive_lloyd"):
                A = assign(C)
                sums = A.t().matmul(X)
                # CrypTen's one-hot argmin comes back with encoder scale 1; reciprocal needs
                # fixed point (without this the centres blew up to ~1e14 after one iteration)
                counts = so.as_fixed(so.mul_public_int(A.sum(0), torch.tensor(1 << so.FIXED_BITS)))
                C = sums * counts.reciprocal().unsqueeze(1)
        with log.phase("naive_assign_final"):
            A = assign(C)
    return A, C
