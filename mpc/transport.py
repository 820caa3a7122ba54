"""Openings in one hop: every party sends its share straight to every other party.

CrypTen opens a shared value with ``torch.distributed.all_reduce``; gloo runs it as a ring,
``2 (P - 1)`` message steps one after the other. On loopback with more processes than cores,
each step costs a context switch, so at nine parties one opening took ~42 ms against ~8 ms
for a direct exchange (``P - 1`` sends and receives in flight together, then a local sum), and
2.5 vs 0.8 ms at three (2 busy cores, 2,000 words). SecPC is latency-bound, so this is the
difference between a round that costs a ring and one that costs a hop.

What a party sees changes in form, not in substance: with the ring, each party receives partial
sums of the others' shares; here it receives each other party's share of the opened value. Every
value CrypTen opens is masked share by share with fresh correlated randomness (Beaver's
``x - a``, B2A's ``b ^ r``, the edaBits' ``x + r``, the wraps' ``x + r``, which CrypTen already
opens with an all-gather of the individual shares), or is a public output whose shares are
fresh sums of such terms; ``tests/mpc/test_security.py`` records every message and buffer of a
whole round and checks that none depends on another party's secret.

Bytes: a direct opening sends ``(P - 1) x`` the value where the ring sends about twice it, so
from 3 parties on, messages over :data:`DIRECT_MAX_WORDS` words keep the ring (bandwidth
matters there, not latency). At 2 parties both send the value once, the ring in two steps of
half of it, so every opening goes direct (the input check's 64,100-word opening at 100 clients
took the ring: ~14 ms a round). :func:`using` ``(False)`` restores CrypTen's ring everywhere (the benchmark's baseline).
"""

from __future__ import annotations

import timeit
from contextlib import contextmanager
from typing import Iterator

import torch

#: Largest tensor (in 64-bit words) opened by direct exchange; bigger ones use gloo's ring.
DIRECT_MAX_WORDS = 1 << 16

_DIRECT = True
_INSTALLED = False


def set_direct(flag: bool) -> None:
    """Open by direct exchange (True) or with gloo's ring (False); every party alike."""
    global _DIRECT
    _DIRECT = bool(flag)


@contextmanager
def using(flag: bool) -> Iterator[None]:
    old = _DIRECT
    set_direct(flag)
    try:
        yield
    finally:
        set_direct(old)


def _exchange(comm, tensors: list[torch.Tensor], op) -> list[torch.Tensor]:  # noqa: ANN001
    """Every party's tensors summed (or XORed) at every party, in one hop. ``op``: one reduce
    op for all tensors, or a list of them, one per tensor.

    The tensors travel packed in one int64 message per peer: on an oversubscribed host each
    message costs a send call and a wake-up at both ends, and a step often opens two to five
    values together."""
    import torch.distributed as dist

    rank, size, group = comm.get_rank(), comm.get_world_size(), comm.main_group
    flat = torch.cat([t.reshape(-1) for t in tensors])
    reqs, got = [], []
    for p in range(size):
        if p == rank:
            continue
        reqs.append(dist.isend(flat, dst=p, group=group))
        b = torch.empty_like(flat)
        reqs.append(dist.irecv(b, src=p, group=group))
        got.append(b)
    for r in reqs:
        r.wait()
    ops = list(op) if isinstance(op, (list, tuple)) else [op] * len(tensors)
    sizes = [t.numel() for t in tensors]
    runs: list[list] = []  # [start, end, xor?]: neighbours of one kind reduce together
    lo = 0
    for n, o in zip(sizes, ops):
        xor = o == dist.ReduceOp.BXOR
        if runs and runs[-1][2] == xor:
            runs[-1][1] = lo + n
        else:
            runs.append([lo, lo + n, xor])
        lo += n
    total = flat.clone()
    for b in got:
        for a, e, xor in runs:
            if xor:
                total[a:e] ^= b[a:e]
            else:
                total[a:e] += b[a:e]
    return [part.view(t.shape) for part, t in zip(total.split(sizes), tensors)]


def _direct_ok(tensors: list, world_size: int) -> bool:
    """int64 CPU tensors go by direct exchange (when it is on): any size between 2 parties,
    up to :data:`DIRECT_MAX_WORDS` words from 3 on; the rest keep the ring."""
    return (
        _DIRECT
        and all(torch.is_tensor(t) and not t.is_cuda and t.dtype == torch.long for t in tensors)
        and (world_size <= 2 or sum(t.numel() for t in tensors) <= DIRECT_MAX_WORDS)
    )


def _direct(comm, tensors: list[torch.Tensor], op) -> list[torch.Tensor]:  # noqa: ANN001
    """:func:`_exchange`, logged as CrypTen logs an all-reduce (one round; the bytes sent)."""
    from mpc.compat import import_crypten

    if import_crypten().cfg.communicator.verbose:
        comm._log_communication((comm.get_world_size() - 1) * sum(t.numel() for t in tensors))
    tic = timeit.default_timer()
    out = _exchange(comm, tensors, op)
    comm._log_communication_time(timeit.default_timer() - tic)
    return out


def open_all(items: list[tuple[torch.Tensor, str]]) -> list[torch.Tensor]:
    """Open several shared values at once, each summed (``"sum"``) or XORed (``"xor"``): one
    round when the direct exchange carries them (both kinds in the same hop), otherwise one
    CrypTen all-reduce per kind. Lets a protocol step open independent values together."""
    import torch.distributed as dist
    from crypten.communicator.distributed_communicator import DistributedCommunicator

    from mpc.compat import import_crypten

    comm = import_crypten().communicator.get()
    kinds = {"sum": dist.ReduceOp.SUM, "xor": dist.ReduceOp.BXOR}
    bad = [k for _, k in items if k not in kinds]
    if bad:
        raise ValueError(f"open_all: unknown kind(s) {bad}; use 'sum' or 'xor'")
    tensors = [t for t, _ in items]
    ops = [kinds[k] for _, k in items]
    if len(set(ops)) > 1 and isinstance(comm, DistributedCommunicator) and _direct_ok(tensors, comm.get_world_size()):
        return _direct(comm, tensors, ops)
    out: list[torch.Tensor | None] = [None] * len(items)
    for op in dict.fromkeys(ops):  # one all-reduce per kind, in first-use order
        idx = [i for i, o in enumerate(ops) if o == op]
        got = comm.all_reduce([tensors[i] for i in idx], op=op, batched=True)
        for i, g in zip(idx, got):
            out[i] = g
    return out


def install() -> None:
    """Route CrypTen's ``all_reduce`` through :func:`_exchange` for small sum/XOR openings.
    Called by :func:`mpc.compat.apply`; rounds and bytes are logged as CrypTen logs them (one
    round; the bytes this party sends)."""
    global _INSTALLED
    if _INSTALLED:
        return
    import torch.distributed as dist
    from crypten.communicator.distributed_communicator import DistributedCommunicator

    ring = DistributedCommunicator.all_reduce  # CrypTen's, with its logging

    def all_reduce(self, input, op=dist.ReduceOp.SUM, batched=False):  # noqa: A002, ANN001
        tensors = list(input) if batched else [input]
        if op not in (dist.ReduceOp.SUM, dist.ReduceOp.BXOR) or not _direct_ok(tensors, self.get_world_size()):
            return ring(self, input, op=op, batched=batched)
        out = _direct(self, tensors, op)
        return out if batched else out[0]

    DistributedCommunicator.all_reduce = all_reduce
    _INSTALLED = True
