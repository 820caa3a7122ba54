"""Comparisons whose online rounds do not grow with the number of parties (edaBits).

CrypTen's ``_ltz`` converts arithmetic shares to binary ones by re-sharing every party's share
bitwise and adding the P binary sharings with a tree of 64-bit carry-lookahead adders:
about ``7 * ceil(log2 P) + 1`` rounds, 29 at nine parties. Here the dealer supplies, per
compared element, a random ring element ``r`` shared *both* arithmetically and bitwise (an
"edaBit", Escudero et al., CRYPTO 2020; CrypTen's own B2A bits are the one-bit case). Then:

1. open ``c = x + r`` (one round; ``r`` is uniform on the ring, so ``c`` is too, whatever x);
2. ``x = c - r = c + ~r + 1`` on the ring, computed bitwise between the *public* ``c`` and the
   XOR-shared bits of ``r``: generate and propagate bits are local (public AND/XOR shared), the
   carry-in 1 folds into bit 0, and a radix-4 carry tree (pruned to its root: only the carry
   into bit 63 is needed) gives it in ``log4 64 = 3`` levels. Each level merges four
   neighbouring groups, least significant first, ``G = g3 ^ p3 g2 ^ p3 p2 g1 ^ p3 p2 p1 g0`` and
   ``P = p3 p2 p1 p0`` (the terms are disjoint, so OR is XOR): ANDs of up to four shared
   words. The **first level is local**: each leaf is an affine function of one bit of ``r``
   with public coefficients from ``c``, so its products are public words times products of
   ``r``'s bits, which the dealer supplies with the edaBit (:func:`group_products`, XOR-shared;
   :func:`_first_level`). The other two levels take one round each from the dealer's binary
   bit-product tuples (:func:`mpc.bitprods.monomials`; unbounded fan-in multiplication from
   correlated randomness is the idea of Damgard et al., TCC 2006);
3. the sign bit ``msb(x) = c63 ^ ~r63 ^ carry63`` goes back to arithmetic with CrypTen's
   single-bit B2A (one round), or straight into an AND of several such bits
   (:func:`onehot_wins`: the one-hot winner among k centres, one round for all of it).

So a batched comparison costs **4 online rounds for any number of parties** (3 before its bit
is converted), and is exact on the whole ring (no wrap-around assumption on ``|x|``): the adder
computes ``c - r mod 2^64``, which is ``x``'s raw ring value. What anyone learns is what
CrypTen's comparison lets them learn: the parties see ``c`` (masked by a fresh uniform ``r``)
and words masked by fresh uniform masks; the dealer sees request shapes only, as before.

The dealer requests are the ``edabits``, ``edabits4`` (with the group products), ``bitand`` and ``bitprods`` kinds of
:mod:`mpc.preprocessing` (made offline with the rest of a block's material). :func:`using` ``("crypten")`` selects CrypTen's own non-linear
primitives instead (its comparison, a product tree for :func:`none_of`, its ``reciprocal`` in
:func:`mpc.secure_ops.reciprocal_bounded`): the baseline of ``bench secpc --baseline``.

Also here: :func:`is_zero_small`, ``[v == 0]`` for integers known to lie in ``[0, 2^b)``; only
the low ``b`` bits of ``c - r`` matter, so it costs 2 rounds (the opening, then one
:func:`mpc.bitprods.and_all` over ``b`` bits instead of an AND tree over the N rows the value
counts).
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
    from mpc.secure_ops import int_tensor

    return int_tensor(arith.share)


def uses_edabits() -> bool:
    """True where this module's own protocols run (edaBits chosen and two or more parties);
    otherwise every function here falls back to CrypTen's."""
    return _METHOD == "edabits" and import_crypten().communicator.get().get_world_size() >= 2


def open_masked(x, also_open: list[torch.Tensor] = (), group_products: bool = False):
    """``c = x + r`` opened, with ``r``'s bitwise sharing (one round). ``also_open``: other
    arithmetic shares opened in the same round. ``group_products``: the dealer's edaBit also
    carries XOR shares of the products of each 4-bit group of ``r``'s bits
    (:func:`group_products`, for :func:`ltz_bits`' first carry level). Returns ``(c, rB, their
    sums)``, and the products' shares (flat, ``len(GROUP_SUBSETS) * ceil(n / 4)`` words) when
    asked for."""
    from mpc import transport

    ct = import_crypten()
    provider = ct.mpc.get_default_provider()
    if group_products:
        rA, rB, W = provider.edabits4_rng(x.share.size())
    else:
        rA, rB = provider.edabits_rng(x.share.size())
    opened = transport.open_all([(x.share + rA.share, "sum")] + [(t, "sum") for t in also_open])
    if group_products:
        return opened[0], rB, opened[1:], W
    return opened[0], rB, opened[1:]


def ltz(x):
    """Batched ``[x < 0]`` on raw ring values, as an int (scale 1) 0/1 MPCTensor."""
    if not uses_edabits():
        from mpc.secure_ops import as_int

        return as_int(x)._ltz()
    from crypten.mpc.primitives import beaver

    return _as_int_mpc(beaver.B2A_single_bit(_binary(ltz_bits(x))))


def _spaced(step: int) -> int:
    """The int64 word with bits at every multiple of ``step``."""
    word = 0
    for i in range(0, _WORD, step):
        word |= 1 << i
    return word - (1 << _WORD) if word >= 1 << (_WORD - 1) else word


def _pack(v: torch.Tensor, f: int) -> torch.Tensor:
    """Words whose bits sit at multiples of ``f`` only, ``f`` of them to a word (shifted by 0 ..
    f - 1 and OR-ed; zero padded). XOR shares stay XOR shares: it is a bit permutation."""
    pad = (-v.numel()) % f
    if pad:
        v = torch.cat([v, torch.zeros(pad, dtype=v.dtype)])
    return (v.view(-1, f) << torch.arange(f, dtype=torch.long)).sum(-1)  # disjoint bits: the sum is the OR


def _unpack(w: torch.Tensor, f: int, n: int, mask: int) -> torch.Tensor:
    return ((w.unsqueeze(-1) >> torch.arange(f, dtype=torch.long)) & mask).reshape(-1)[:n]


def _combine4(G: torch.Tensor, P: torch.Tensor, s: int, last: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One radix-4 level of the carry tree on flat word tensors whose nodes sit at the multiples
    of ``s``: nodes ``t = 0..3`` at ``4 s j + t s`` (least significant first) merge into one at
    ``4 s j``, ``G = g3 ^ p3 g2 ^ p3 p2 g1 ^ p3 p2 p1 g0`` and ``P = p3 p2 p1 p0`` (the terms are
    disjoint, so OR is XOR). The ``64 / 4s`` nodes of each element are packed ``4 s`` elements to
    a word, so a level costs the dealer and the opening a fraction of a word per element."""
    from mpc.bitprods import monomials

    f, mask, n = 4 * s, _spaced(4 * s), G.numel()
    v = [(G >> (t * s)) & mask for t in range(4)] + [(P >> (t * s)) & mask for t in range(4)]
    # variables: g0..g3 = 0..3, p0..p3 = 4..7
    monos = [(7, 2), (7, 6, 1), (7, 6, 5, 0)] + ([] if last else [(7, 6, 5, 4)])
    out = [_unpack(w, f, n, mask) for w in monomials([_pack(x, f) for x in v], monos)]
    return v[3] ^ out[0] ^ out[1] ^ out[2], None if last else out[3]


#: The subsets (bitmasks over t = 0..3) of a 4-bit group whose products the dealer supplies with
#: an edaBit for :func:`ltz_bits` (the singletons are ``r``'s own bits).
GROUP_SUBSETS = tuple(T for T in range(16) if bin(T).count("1") >= 2)


def group_products(r: torch.Tensor) -> torch.Tensor:
    """The dealer's products of each 4-bit group of the words ``r`` (flat, ``n``): for every
    subset ``T`` in :data:`GROUP_SUBSETS`, ``AND_{t in T}`` bit ``4 j + t`` of ``r`` at bit
    ``4 j``, packed four elements to a word as :func:`_pack` (``len(GROUP_SUBSETS) x ceil(n /
    4)``). Also what the insecure TFP dealer and the tests compute in the clear."""
    mask = _spaced(4)
    bits = [(r >> t) & mask for t in range(4)]
    out = []
    for T in GROUP_SUBSETS:
        acc = None
        for t in range(4):
            if T >> t & 1:
                acc = bits[t] if acc is None else acc & bits[t]
        out.append(_pack(acc, 4))
    return torch.stack(out)


def _first_level(c: torch.Tensor, r: torch.Tensor, W: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The carry tree's first radix-4 level, with no opening.

    Every leaf is an affine function of one bit of the dealer's ``r`` with public coefficients
    from the opened ``c`` (bits 1..62: ``g = ~r & c = c ^ c r``, ``p = ~r ^ c = ~c ^ r``; bit 0
    with the carry-in 1 folded in: ``G = 1 ^ ~c r``, ``P = 0``; bit 63 neutral: ``G = 0``,
    ``P = 1``). A product of such leaves over distinct bits of one group expands into public
    words ANDed with products of ``r``'s bits: ``r``'s own bits for one factor, the dealer's
    :func:`group_products` (``W``: this party's XOR shares) for two or more. So the level is
    local, where opening its eight masked leaf words cost a round and two words per element.
    Returns ``(G, P)`` per element with the nodes at multiples of 4, as :func:`_combine4`."""
    n, mask, high = c.numel(), _spaced(4), -(1 << (_WORD - 1))
    alpha = {"g": (c | 1) & ~high, "p": (~c & ~1) | high}
    beta = {"g": (c ^ 1) & ~high, "p": torch.full_like(c, ~1 & ~high)}
    packed = {(x, t): (_pack((alpha[x] >> t) & mask, 4), _pack((beta[x] >> t) & mask, 4)) for x in "gp" for t in range(4)}
    single = [_pack((r >> t) & mask, 4) for t in range(4)]
    col = {T: i for i, T in enumerate(GROUP_SUBSETS)}

    def product(factors: list[tuple[str, int]]) -> torch.Tensor:
        """XOR share of the AND of the leaves ``factors`` (distinct bits t)."""
        acc = None
        for U in range(1 << len(factors)):  # the factors taken from r; the others contribute alpha
            coef, T = None, 0
            for i, f in enumerate(factors):
                a, b = packed[f]
                w = b if U >> i & 1 else a
                coef = w if coef is None else coef & w
                if U >> i & 1:
                    T |= 1 << f[1]
            if T == 0:
                term = coef if rank == 0 else None  # the public product: party 0's share
            elif T & (T - 1) == 0:
                term = coef & single[T.bit_length() - 1]
            else:
                term = coef & W[col[T]]
            if term is not None:
                acc = term if acc is None else acc ^ term
        return acc if acc is not None else torch.zeros_like(single[0])

    G = product([("g", 3)]) ^ product([("p", 3), ("g", 2)]) ^ product([("p", 3), ("p", 2), ("g", 1)]) \
        ^ product([("p", 3), ("p", 2), ("p", 1), ("g", 0)])
    P = product([("p", 3), ("p", 2), ("p", 1), ("p", 0)])
    return _unpack(G, 4, n, mask), _unpack(P, 4, n, mask)


def ltz_bits(x) -> torch.Tensor:
    """This party's XOR share of ``[x < 0]`` in bit 0 (edaBits; 3 rounds: no B2A yet).

    For callers that combine the bits before converting them (:func:`onehot_wins`)."""
    c, rB, _, W = open_masked(x, group_products=True)
    rank = import_crypten().communicator.get().get_rank()
    shape = c.shape
    c, r = c.reshape(-1), rB.share.reshape(-1)
    # p63 = ~r63 ^ c63, kept for the sum bit (one party flips)
    top = ((r >> (_WORD - 1)) & 1) ^ (((~c >> (_WORD - 1)) & 1) if rank == 0 else 0)
    # carry-in 1 at bit 0 and bit 63 made neutral (G 0, P the public 1): the tree over 64 bits
    # then gives the carry into bit 63; its first level is local (_first_level)
    G, P = _first_level(c, r, W.reshape(len(GROUP_SUBSETS), -1), rank)
    for s in (4, 16):  # 16 -> 4 -> 1 nodes per element
        G, P = _combine4(G, P, s, last=s == 16)
    return (top ^ G).reshape(shape) & 1


def onehot_wins(d, n_rows: int, ks: list[int], J: torch.Tensor, L: torch.Tensor):
    """One-hot winners per candidate group from pairwise differences ``d`` (``n_rows x P``):
    column ``J[p]`` beats ``L[p]`` iff ``d[:, p] <= 0`` (ties to the lower index).

    edaBits: the comparison's bits go straight into one AND over each column's ``k - 1`` pairs
    (:func:`mpc.bitprods.and_all_many`, one width per group size, all in one round): 3 + 1
    rounds for comparison and one-hot together. CrypTen: its comparison, then a product tree
    (:func:`mpc.secure_ops.onehot_from_pairs`).
    """
    from mpc import bitprods
    from mpc import layout as lay
    from mpc import secure_ops as so

    ct = import_crypten()
    if len(J) == 0 or not uses_edabits():
        w = so.ltz(so.add_raw(d, -1)) if len(J) else None
        return so.onehot_from_pairs(w, n_rows, ks, J, L)
    w = ltz_bits(so.add_raw(d, -1))  # [d <= 0]
    pair, flip = so.slot_map(ks, J, L)  # K x (max k - 1): source pair (-1: padding) and public XOR
    rank = ct.communicator.get().get_rank()
    # a centre of a group of size k has k - 1 real slots (the rest would be the public 1): AND
    # only those, one width per k, so the dealer's tuples are 2^(k-1) words, not 2^(max k - 1)
    cols_by_k: dict[int, list[int]] = {}
    for off, k in lay.group_layout(ks):
        cols_by_k.setdefault(k, []).extend(range(off, off + k))
    share = torch.zeros(n_rows, sum(ks), dtype=torch.long)
    sets, where = [], []
    for k, cols in cols_by_k.items():
        cols = torch.tensor(cols)
        if k == 1:  # a lone centre always wins: the public 1
            share[:, cols] = int(rank == 0)
            continue
        slots = w[:, pair[cols, : k - 1]]  # n_rows x len(cols) x (k - 1)
        sets.append(slots ^ flip[cols, : k - 1] if rank == 0 else slots)
        where.append(cols)
    outs, _ = bitprods.and_all_many(sets)
    for cols, out in zip(where, outs):
        share[:, cols] = out.share
    return so.int_tensor(share)


def zero_bits(c: torch.Tensor, rB: torch.Tensor, bits: int) -> torch.Tensor:
    """This party's XOR shares (``..., bits``) of ``~(c ^ r)`` on the low ``bits`` bits, from
    an opened ``c = v + r``: all ones iff ``v == 0`` when ``0 <= v < 2^bits`` (no carry)."""
    if not 1 <= bits < _WORD:
        raise ValueError(f"a small zero test needs 1 <= bits < {_WORD}, got {bits}")
    rank = import_crypten().communicator.get().get_rank()
    shift = torch.arange(bits, dtype=torch.long)
    y = ~(rB ^ c) if rank == 0 else rB
    return (y.unsqueeze(-1) >> shift) & 1


def is_zero_small(v, bits: int):
    """Batched ``[v == 0]`` for int shares known to hold integers in ``[0, 2^bits)``.

    ``v == 0`` iff ``c = v + r`` agrees with ``r`` on the low ``bits`` bits (no carry: ``v <
    2^bits``): one opening, then one :func:`mpc.bitprods.and_all` over those bits (2 rounds).
    """
    from mpc import bitprods

    if not 1 <= bits < _WORD:
        raise ValueError(f"is_zero_small needs 1 <= bits < {_WORD}, got {bits}")
    if not uses_edabits():
        from mpc.secure_ops import as_int

        return (as_int(v) - 1)._ltz()
    c, rB, _ = open_masked(v)
    z, _ = bitprods.and_all(zero_bits(c, rB.share, bits))
    return z


def none_of(A, dim: int):
    """``[no 1 along dim]`` for 0/1 int shares (k-means: the clusters that received no row).

    edaBits: one :func:`is_zero_small` on the column counts, 2 rounds; CrypTen: a product tree of ``1 - A``, ``ceil(log2 n)`` rounds (the baseline).
    """
    from mpc import secure_ops as so

    n = A.shape[dim]
    if not uses_edabits():
        return so.prod_tree(1 - A, dim)
    return is_zero_small(A.sum(dim), max(1, math.ceil(math.log2(n + 1))))
