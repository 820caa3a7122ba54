"""The AND of a few secret bits, as an arithmetic share, in one online round.

A one-hot winner (every pairwise comparison of a row's centre won), an empty cluster (every
bit of the masked count agrees) and the like are ANDs of ``D`` secret bits. A Beaver tree
needs ``ceil(log2 D)`` rounds for it and a B2A conversion one more. Here the dealer supplies,
per group of ``D`` bits, ``D`` random bits ``r_s`` shared bitwise *and* arithmetic shares of
the products of every subset of them, ``R_T = prod_{s in T} r_s`` (``2^D`` values, ``R_{} =
1``): a "bit-product tuple", the multi-input generalisation of CrypTen's B2A bits (``D = 1``)
and of the multiplication tuples of Damgard et al. (TCC 2006) for unbounded fan-in AND.
Then:

1. open ``c_s = b_s ^ r_s`` (one round; ``r_s`` is a fresh uniform bit, so ``c_s`` is too);
2. ``b_s = c_s + (1 - 2 c_s) r_s`` on the ring, so
   ``prod_s b_s = sum_T (prod_{s not in T} c_s) (prod_{s in T} (1 - 2 c_s)) R_T``:
   public coefficients times the dealer's shares, a local linear map.

Cost: one round and ``2^D`` dealer words per group (``D`` is at most :data:`MAX_WIDTH`). What
anyone learns: the parties see uniform bits ``c``; the dealer sees the request's shape, as
for every other request (:mod:`mpc.preprocessing` makes the material offline, in the same
batches as the rest of a block).
"""

from __future__ import annotations

import math

import torch

from mpc import secure_ops as so
from mpc import transport
from mpc.compat import import_crypten

#: Most bits one group may AND together (``2^MAX_WIDTH`` dealer words per group).
MAX_WIDTH = 10


def subset_expand(excluded: torch.Tensor, included: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = prod_s (included_s if bit s of t is set else excluded_s)``: ``(..., D)``
    to ``(..., 2^D)``. With ``excluded = 1`` and ``included = r`` these are the subset products
    ``R_T`` the dealer makes; with ``(c, 1 - 2c)`` the coefficients the parties apply to them."""
    if excluded.shape != included.shape:
        raise ValueError("subset_expand needs factors of one shape")
    out = torch.ones(*excluded.shape[:-1], 1, dtype=excluded.dtype, device=excluded.device)
    for s in range(excluded.shape[-1]):
        out = torch.cat([out * excluded[..., s : s + 1], out * included[..., s : s + 1]], dim=-1)
    return out


def check_width(size) -> None:  # noqa: ANN001
    """Refuse groups wider than :data:`MAX_WIDTH` (the dealer's material grows as ``2^D``)."""
    if len(size) == 0 or not 1 <= int(size[-1]) <= MAX_WIDTH:
        raise ValueError(f"a bit-product group has 1 to {MAX_WIDTH} bits in its last dimension, got shape {list(size)}")


def and_all(bits: torch.Tensor, also_open: list[torch.Tensor] = ()) -> tuple[object, list[torch.Tensor]]:
    """``prod_s b_s`` over the last dimension, as int arithmetic shares, in one round.

    ``bits``: this party's XOR shares (``..., D``) of bits held in bit 0 (higher bits are
    cleared before anything is sent). Wider than :data:`MAX_WIDTH`, the bits are cut into
    ``ceil(D / MAX_WIDTH)`` groups (padded with the public 1) whose products a Beaver tree
    multiplies: ``ceil(log2 groups)`` more rounds. ``also_open``: arithmetic shares of other
    values to open in the first round (their sums are returned, in order), so a caller can fold
    independent work into it.
    """
    (out,), opened = and_all_many([bits], also_open)
    return out, opened


def and_all_many(bit_sets: list[torch.Tensor], also_open: list[torch.Tensor] = ()) -> tuple[list, list[torch.Tensor]]:
    """:func:`and_all` for several tensors of different widths, all opened in the same round."""
    ct = import_crypten()
    rank = ct.communicator.get().get_rank()
    provider = ct.mpc.get_default_provider()
    prepared = []
    for bits in bit_sets:
        D = int(bits.shape[-1])
        if D < 1:
            raise ValueError("and_all needs at least one bit")
        groups = math.ceil(D / MAX_WIDTH)
        width = math.ceil(D / groups)
        bits = bits & 1
        pad = groups * width - D
        if pad:  # the public 1: party 0's share 1, the others' 0
            ones = torch.full((*bits.shape[:-1], pad), int(rank == 0), dtype=torch.long)
            bits = torch.cat([bits, ones], dim=-1)
        bits = bits.reshape(*bits.shape[:-1], groups, width)
        R, rB = provider.bitprods_rng(bits.size())
        prepared.append((bits ^ rB.share, R, groups))
    # the masked bits travel 64 to a word (an XOR opening is bitwise, so packing commutes with it)
    opened = transport.open_all([(pack_bits(m.reshape(-1)), "xor") for m, _, _ in prepared]
                                + [(t, "sum") for t in also_open])
    outs = []
    for (m, R, groups), c in zip(prepared, opened):
        c = unpack_bits(c, (m.numel(),)).view(m.shape)
        out = so.int_tensor((subset_expand(c, 1 - 2 * c) * R.share).sum(-1))
        if groups > 1:
            out = so.prod_tree(out, -1)
        else:
            out = out.squeeze(-1)
        outs.append(out)
    return outs, opened[len(prepared) :]


def _bitmask(mono: tuple[int, ...]) -> int:
    return sum(1 << v for v in set(mono))


def _submasks(full: int):
    """Every submask of ``full``, ``full`` itself first and 0 last."""
    sub = full
    while True:
        yield sub
        if sub == 0:
            return
        sub = (sub - 1) & full


def _and_of(x: torch.Tensor, T: int) -> torch.Tensor | None:
    """``AND_{v in T} x[..., v]`` (None for the empty set)."""
    acc = None
    for v in range(x.shape[-1]):
        if T >> v & 1:
            acc = x[..., v] if acc is None else acc & x[..., v]
    return acc


def subsets_of(monomials: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Every non-empty subset (as a bitmask over the variables) of every monomial, sorted."""
    return tuple(sorted({sub for mono in monomials for sub in _submasks(_bitmask(mono)) if sub}))


def and_words(r: torch.Tensor, subsets: tuple[int, ...]) -> torch.Tensor:
    """``R_T = AND_{v in T} r_v`` for each bitmask T: ``(..., V)`` words to ``(..., len(subsets))``
    (the dealer's binary bit-product words; every bit position is its own tuple)."""
    return torch.stack([_and_of(r, T) for T in subsets], dim=-1)


def monomials(words: list[torch.Tensor], monos: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """XOR shares of ``AND_{v in S} words[v]`` for every monomial ``S`` in ``monos``, bitwise on
    64-bit words, in one round: a binary bit-product tuple per element (the dealer's ``bitand``
    request: masks ``r_v`` and every subset product the monomials need). After opening
    ``c_v = w_v ^ r_v``: ``AND_{v in S} w_v = XOR_{T subset of S} (AND_{v in S - T} c_v) & R_T``
    (``R_{}`` the public all-ones word, held by party 0)."""
    ct = import_crypten()
    rank = ct.communicator.get().get_rank()
    subsets = subsets_of(monos)
    col = {T: i for i, T in enumerate(subsets)}
    R, rB = ct.mpc.get_default_provider().bitand_rng(words[0].shape, len(words), subsets)
    (c,) = transport.open_all([(torch.stack(words, -1) ^ rB.share, "xor")])
    out = []
    for mono in monos:
        full = _bitmask(mono)
        acc = None
        for sub in _submasks(full):
            coef = _and_of(c, full & ~sub)  # the opened factors of this term
            if sub:
                r_sub = R.share[..., col[sub]]
                term = r_sub if coef is None else coef & r_sub
            else:  # R_{} = the public all-ones word: party 0's share
                term = coef if rank == 0 else torch.zeros_like(coef)
            acc = term if acc is None else acc ^ term
        out.append(acc)
    return out


#: Bits packed into one word by :func:`pack_bits`.
WORD_BITS = 64
_SHIFT = torch.arange(WORD_BITS, dtype=torch.long)


def pack_bits(bits: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Bit 0 of each element along the last dimension, 64 to a word (``..., ceil(W / 64)``),
    the last word padded with ``pad`` (0 or 1). Bits move to disjoint places, so XOR shares of
    the bits pack to XOR shares of the words. (The carry tree's ``comparison._pack`` packs
    words whose bits sit at multiples of ``f``: a different layout, kept there.)"""
    lead, W = tuple(bits.shape[:-1]), int(bits.shape[-1])
    bits = bits & 1
    extra = (-W) % WORD_BITS
    if extra:
        bits = torch.cat([bits, torch.full(lead + (extra,), pad, dtype=torch.long)], dim=-1)
    return (bits.reshape(*lead, -1, WORD_BITS) << _SHIFT).sum(-1)  # disjoint bits: the sum is the OR


def unpack_bits(words: torch.Tensor, shape) -> torch.Tensor:  # noqa: ANN001 - a torch.Size or tuple
    """:func:`pack_bits` undone: the 0/1 tensor of ``shape`` (``..., W``)."""
    W = int(shape[-1])
    return ((words.unsqueeze(-1) >> _SHIFT) & 1).reshape(*words.shape[:-1], -1)[..., :W].reshape(shape)


def and_bits(bits: torch.Tensor) -> torch.Tensor:
    """XOR shares (in bit 0) of the AND of every bit along the last dimension.

    ``bits``: this party's XOR shares (``..., W``) of bits held in bit 0. They are packed 64 to
    a word (padded with the public 1; packing moves bits to disjoint places, so XOR shares stay
    XOR shares), the words ANDed four at a time, then each word's 64 bits folded onto bit 0 (64
    -> 16 -> 4 -> 1), every step one :func:`monomials` round of four-way ANDs:
    ``ceil(log4 ceil(W / 64)) + 3`` rounds, and the dealer's tuples are per word, not per bit
    (the input check's 641 bits per row: 5 rounds against 10 of a Beaver tree over the bits,
    with a B2A and 64-bit words per bit on top).
    """
    rank = import_crypten().communicator.get().get_rank()
    lead = tuple(bits.shape[:-1])
    if int(bits.shape[-1]) < 1:
        raise ValueError("and_bits needs at least one bit")
    words = pack_bits(bits, pad=int(rank == 0))  # padded with the public 1: party 0's share 1, the others' 0
    ones = -1 if rank == 0 else 0  # the public all-ones word
    while words.shape[-1] > 1:
        pad = (-words.shape[-1]) % 4
        if pad:
            words = torch.cat([words, torch.full(lead + (pad,), ones, dtype=torch.long)], dim=-1)
        quads = words.reshape(*lead, -1, 4)
        (words,) = monomials([quads[..., v] for v in range(4)], [(0, 1, 2, 3)])
    w = words[..., 0]
    for s in (16, 4, 1):  # bits [0, 4s) of w hold the AND of every bit of the word so far
        (w,) = monomials([w, w >> s, w >> (2 * s), w >> (3 * s)], [(0, 1, 2, 3)])
    return w & 1
