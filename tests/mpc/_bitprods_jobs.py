"""Party functions for the bit-product tests (module level so run_parties can pickle them)."""

from __future__ import annotations

import torch

from mpc import bitprods, comparison, preprocessing
from mpc import secure_ops as so
from mpc.compat import import_crypten
from mpc.stats import CommLog


def _rounds() -> int:
    return int(import_crypten().communicator.get().get_communication_stats()["rounds"])


def _bits(values: torch.Tensor) -> torch.Tensor:
    """This party's XOR share of ``values`` (input by party 0)."""
    from crypten.mpc.primitives import BinarySharedTensor

    return BinarySharedTensor(values, src=0).share


def and_all(party, groups: dict):
    """``bitprods.and_all`` on each ``(rows x D)`` 0/1 tensor, online and planned: opened
    products and this party's rounds per call (the result's opening not counted)."""
    out = {}
    for planned in (False, True):
        def block(log, planned=planned):
            res = {}
            for D, values in groups.items():
                b = _bits(values)
                r0 = _rounds()
                z, _ = bitprods.and_all(b)
                r1 = _rounds()
                res[D] = (z.get_plain_text().long(), r1 - r0)
            return res

        with preprocessing.enabled(planned):
            out[planned] = preprocessing.planned("and_all", block, CommLog())
    return out


def monomials(party, words: list[torch.Tensor], monos: list[tuple[int, ...]]):
    """``bitprods.monomials`` on XOR-shared words, planned: opened products and rounds."""

    def block(log):
        shares = [_bits(w) for w in words]
        r0 = _rounds()
        got = bitprods.monomials(shares, monos)
        r1 = _rounds()
        from crypten.mpc.primitives import BinarySharedTensor

        return [BinarySharedTensor.from_shares(g).reveal() for g in got], r1 - r0

    return preprocessing.planned("monomials", block, CommLog())


def and_bits(party, rows: list[torch.Tensor]):
    """``bitprods.and_bits`` on XOR-shared 0/1 rows of several widths, planned: the opened AND per
    row and this party's rounds per call."""

    def block(log):
        from crypten.mpc.primitives import BinarySharedTensor

        out = []
        for values in rows:
            b = _bits(values)
            r0 = _rounds()
            z = bitprods.and_bits(b)
            r1 = _rounds()
            out.append((BinarySharedTensor.from_shares(z).reveal() & 1, r1 - r0))
        return out

    return preprocessing.planned("and_bits", block, CommLog())


def onehot(party, d: torch.Tensor, ks: list[int]):
    """``comparison.onehot_wins`` with both protocols on the same differences."""
    from mpc import layout as lay

    J, L = lay.pair_layout(ks)
    out = {}
    for name in comparison.METHODS:
        with comparison.using(name):
            x = so.as_int(import_crypten().cryptensor(d, src=0, precision=0))
            r0 = _rounds()
            A = comparison.onehot_wins(x, d.shape[0], ks, J, L)
            out[name] = (A.get_plain_text().long(), _rounds() - r0 - 1)
    return out
