"""Openings by direct exchange (mpc.transport) with real CrypTen parties: which path a large
opening takes, and that it sums right either way."""

from __future__ import annotations

import pytest
import torch

from mpc.compat import import_crypten
from mpc.runtime import PartySpec, run_parties

BIG = (1 << 16) + 4_500  # over DIRECT_MAX_WORDS: the input check's opening at 100 clients is 64,100 words


def _share(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randint(-(2**63), 2**63 - 1, (BIG,), generator=g, dtype=torch.long)


def _open_big(party):
    """Sum every party's ``BIG``-word share through CrypTen's all_reduce (as an opening does);
    count the direct exchanges it took."""
    from mpc import transport

    calls = []
    inner = transport._exchange

    def counting(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)

    transport._exchange = counting
    try:
        total = import_crypten().communicator.get().all_reduce(_share(party.rank))
    finally:
        transport._exchange = inner
    return total, len(calls)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n_parties, direct", [(2, 1), (3, 0)])
def test_a_large_opening_goes_direct_between_two_parties_only(n_parties, direct):
    """Between 2 parties a direct opening sends the value once, as the ring does, in one step
    instead of two: any size goes direct. From 3 on, past 2^16 words, the ring sends less."""
    want = _share(0)
    for r in range(1, n_parties):
        want = want + _share(r)  # int64 wraps: the ring's sum
    for total, calls in run_parties(_open_big, PartySpec(n_parties)):
        assert torch.equal(total, want)
        assert calls == direct
