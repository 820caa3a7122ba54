"""Comparisons whose online rounds do not grow with the number of parties (edaBits).

CrypTen's ``_ltz`` converts arithmetic shares to binary ones by re-sharing every party's share
bitwise and adding the P binary sharings with a tree of 64-bit carry-lookahead adders:
about ``7 * ceil(log2 P) + 1`` rounds, 29 at nine parties. Here the dealer supplies, per
compared element, a random ring element ``r`` shared *both* arithmetically and bitwise (an
"edaBit", Escudero et al., CRYPTO 2020; CrypTen's own B2A bits are the one-bit case). Then:

1. open ``c = x + r`` (one round; ``r`` is uniform on the ring, so ``c`` is too, whatever x);
2. ``x = c - r = c + ~r + 1`` on the ring, computed bitwise between the *public* ``c`` and the
   XOR-shared bits of ``r``: generate and propagate bits are local (public AND/XOR shared), the
   carry-in 1 folds into bit 0, and a Kogge-Stone prefix over bits 0..62 gives the carry into
   bit 63 in ``log2 64 = 6`` AND levels (both ANDs of a level in one Beaver round);
3. the sign bit ``msb(x) = c63 ^ ~r63 ^ carry63`` goes back to arithmetic with CrypTen's
   single-bit B2A (one round).

So a batched comparison costs **8 online rounds for any number of parties**, and is exact on
the whole ring (no wrap-around assumption on ``|x|``): the adder computes ``c - r mod 2^64``,
which is ``x``'s raw ring value. What anyone learns is what CrypTen's comparison lets them
learn: the parties see ``c`` (masked by a fresh uniform ``r``) and Beaver openings (masked by
fresh triples); the dealer sees request shapes only, as before.

The dealer request is the ``edabits`` kind of :mod:`mpc.preprocessing` (made offline with the
rest of a block's material). :func:`using` ``("crypten")`` selects CrypTen's own non-linear
primitives instead (its comparison, a product tree for :func:`none_of`, its ``reciprocal`` in
:func:`mpc.secure_ops.reciprocal_bounded`): the baseline of ``bench secpc --baseline``.

Also here: :func:`is_zero_small`, ``[v == 0]`` for integers known to lie in ``[0, 2^b)``; only
the low ``b`` bits of ``c - r`` matter, so it costs ``ceil(log2 b) + 2`` rounds (an AND tree
over ``b`` bits instead of one over the N rows the value counts).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch

from mpc.compat import import_crypten
from mpc.layout import RING_BITS

METHODS = ("edabits", "crypten")
_METHOD = "edabits"
_WORD = RING_BITS


def set_method(name: str) -> None:
    """Choose the comparison protocol (every party must make the same choice)."""
    global _METHOD
    if name not in METHODS:
        raise ValueError(f"unknown comparison method {name!r}; choose one of {', '.join(METHODS)}")
    _METHOD = name


def method() -> str:
    return _METHOD


@contextmanager
def using(name: str) -> Iterator[None]:
    """Run a block with the given comparison protocol (at every party alike)."""
    old = _METHOD
    set_method(name)
    try:
        yield
    finally:
        set_method(old)


def _binary(share: torch.Tensor):
    from crypten.mpc.primitives import BinarySharedTensor

    return BinarySharedTensor.from_shares(share)


def _as_int_mpc(arith):
    """An ``ArithmeticSharedTensor`` of 0/1 ints as an MPCTensor with encoder scale 1."""
    ct = import_crypten()
    from crypten.encoder import FixedPointEncoder

    out = ct.mpc.MPCTensor.from_shares(arith.share, precision=0)
    out.encoder = FixedPointEncoder(precision_bits=0)
    return out


def _open_masked(x):
    """``c = x + r`` opened, with ``r``'s bitwise sharing (one round)."""
    ct = import_crypten()
    comm = ct.communicator.get()
    rA, rB = ct.mpc.get_default_provider().edabits_rng(x.share.size())
    c = comm.all_reduce(x.share + rA.share)
    return c, rB


def _not_r_bits(rB, c: torch.Tensor):
    """Generate and propagate bits of ``c + ~r`` (local: ``c`` is public)."""
    rank = import_crypten().communicator.get().get_rank()
    y = rB.share if rank else ~rB.share  # ~r: one party flips its share
    g = _binary(y & c)
    p = _binary(y ^ c) if rank == 0 else _binary(y.clone())
    return g, p


def ltz(x):
    """Batched ``[x < 0]`` on raw ring values, as an int (scale 1) 0/1 MPCTensor."""
    ct = import_crypten()
    if _METHOD == "crypten" or ct.communicator.get().get_world_size() < 2:
        from mpc.secure_ops import as_int

        return as_int(x)._ltz()
    from crypten.mpc.primitives import beaver

    c, rB = _open_masked(x)
    g, p = _not_r_bits(rB, c)
    # carry-in 1 at bit 0: bit 0 generates iff it generates or propagates; nothing below it propagates
    G = g ^ (p & 1)
    P = p & ~1
    top = p  # bit 63 of p, kept for the sum bit
    shift = 1
    while shift < _WORD - 1:
        if 2 * shift < _WORD - 1:
            both = _binary(torch.stack([P.share, P.share])) & _binary(torch.stack([G.share << shift, P.share << shift]))
            G, P = G ^ _binary(both.share[0]), _binary(both.share[1])
        else:  # the last level needs only G
            G = G ^ (P & _binary(G.share << shift))
        shift *= 2
    # after the prefix, bit i of G is the carry out of bit i; bit 63 of the sum is p63 ^ carry62
    msb = top ^ _binary(G.share << 1)
    bit = _binary((msb.share >> (_WORD - 1)) & 1)
    return _as_int_mpc(beaver.B2A_single_bit(bit))


def is_zero_small(v, bits: int):
    """Batched ``[v == 0]`` for int shares known to hold integers in ``[0, 2^bits)``.

    ``v == 0`` iff ``c = v + r`` agrees with ``r`` on the low ``bits`` bits (no carry: ``v <
    2^bits``), so the test is an AND over ``bits`` bits of ``~(c ^ r)``: ``ceil(log2 bits)``
    AND levels, plus the opening and the B2A.
    """
    ct = import_crypten()
    if not 1 <= bits < _WORD:
        raise ValueError(f"is_zero_small needs 1 <= bits < {_WORD}, got {bits}")
    if _METHOD == "crypten" or ct.communicator.get().get_world_size() < 2:
        from mpc.secure_ops import as_int

        return (as_int(v) - 1)._ltz()
    from crypten.mpc.primitives import beaver

    rank = ct.communicator.get().get_rank()
    low = (1 << bits) - 1
    c, rB = _open_masked(v)
    if rank == 0:  # ~(c ^ r) on the low bits, the public 1 above them
        E = _binary((~(rB.share ^ c) & low) | ~low)
    else:
        E = _binary(rB.share & low)
    width = 1 << math.ceil(math.log2(bits))
    while width > 1:
        width //= 2
        E = E & _binary(E.share >> width)
    return _as_int_mpc(beaver.B2A_single_bit(_binary(E.share & 1)))


def none_of(A, dim: int):
    """``[no 1 along dim]`` for 0/1 int shares (k-means: the clusters that received no row).

    edaBits: one :func:`is_zero_small` on the column counts, ``ceil(log2 ceil(log2(n+1))) + 2``
    rounds; CrypTen: a product tree of ``1 - A``, ``ceil(log2 n)`` rounds (the baseline).
    """
    from mpc import secure_ops as so

    n = A.shape[dim]
    if _METHOD == "crypten" or import_crypten().communicator.get().get_world_size() < 2:
        return so.prod_tree(1 - A, dim)
    return is_zero_small(A.sum(dim), max(1, math.ceil(math.log2(n + 1))))
