"""The input contract of SecPC, checked on the *shares*: no party has to trust another's word.

SecPC's arithmetic is sound only if every shared entry is small: a ring word of 2^31 in one
client's prompt wraps the all-client mean and moves every client's aggregate, and an out-of-range
reduced row can wrap ``||x||^2`` and move k. A client's own range check (or the code it
publishes about it) proves nothing to the others, so after sharing the parties check, under
encryption, in one batched comparison:

* every reduced coordinate ``|xq_ij| <= 2^s + 1`` (``s`` fractional bits; ``||x|| <= 1``
  rounds to at most that),
* every prompt entry ``|pq_ij| <= ceil(B 2^16) + 1`` (``B = max_prompt_abs(N)``, the ring
  budget of the aggregation),
* ``||xq_i||^2 <= ceil((2^s (1 + 1e-6) + sqrt(m) / 2)^2)``, computed from the shares (one
  multiplication round; with the entries bounded it cannot wrap),

then AND the bits of each row and open **one bit per row**: valid or not. With the edaBits
comparisons the bits stay XOR-shared, are packed 64 to a word and ANDed four words at a time
(:func:`mpc.bitprods.and_bits`), and the row's bit is opened as an XOR; on CrypTen's path, a
log-depth product tree of the arithmetic bits. For an honest row the bit is always 1, so it
says nothing about the row's values; for an invalid row it says only that it broke the contract.
"""

from __future__ import annotations

import math

import torch

from mpc import bitprods, comparison, transport
from mpc import secure_ops as so
from mpc.compat import import_crypten

NORM_TOL = 1e-6  # a row of norm up to 1 + NORM_TOL counts as normalised (float rounding)


def bounds(bits: int, m: int, prompt_abs: float) -> tuple[int, int, int]:
    """Integer bounds (reduced coordinate, prompt entry, squared norm) of a valid row."""
    x_bound = 2**bits + 1
    p_bound = math.ceil(prompt_abs * 2**so.FIXED_BITS) + 1
    n_bound = math.ceil((2**bits * (1 + NORM_TOL) + math.sqrt(m) / 2) ** 2)
    return x_bound, p_bound, n_bound


def valid_rows(Xq, F, bits: int, prompt_abs: float) -> torch.Tensor:
    """Public bool per row: does row i of the shared ``Xq`` (``N x m`` int) and ``F`` (``N x d``
    fixed point at 16 bits) satisfy the input contract? Opened at every party; nothing else is.

    Rounds: 1 multiplication (norms) + 1 batched comparison + the AND of ``W = 2m + 2d + 1``
    bits per row + 1 opening. edaBits: ``1 + 3 + (ceil(log4 ceil(W / 64)) + 3) + 1`` (10 for m
    64, d 256); CrypTen's path: its comparison and B2A, then ``ceil(log2 W)`` AND rounds.
    """
    ct = import_crypten()
    N, m = Xq.shape
    if N == 0:
        return torch.zeros(0, dtype=torch.bool)
    xb, pb, nb = bounds(bits, m, prompt_abs)
    x2 = (Xq * Xq).sum(1).unsqueeze(1)  # int, scale 1: no truncation
    P = so.as_int(F)  # raw ring words round(p 2^16)
    slack = ct.cat([so.add_raw(Xq, xb), so.add_raw(-Xq, xb), so.add_raw(P, pb), so.add_raw(-P, pb),
                    so.add_raw(-x2, nb)], dim=1)  # all >= 0 iff the row is valid (no wrap, see module)
    if not comparison.uses_edabits():
        ok = so.prod_tree(1 - so.ltz(slack), -1)
        return ok.get_plain_text().round().long().view(N) == 1
    rank = ct.communicator.get().get_rank()
    good = comparison.ltz_bits(slack) ^ int(rank == 0)  # NOT [slack < 0]: party 0 flips its share
    (ok,) = transport.open_all([(bitprods.and_bits(good), "xor")])
    return (ok & 1).view(N) == 1
