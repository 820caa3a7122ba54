"""Round-frugal building blocks on CrypTen ``MPCTensor`` s used by SecPC.

Conventions: "int" tensors are MPCTensors with encoder scale 1 (CrypTen ``precision=0``);
products of two of them, or of an int tensor with a fixed-point one, need no truncation,
so every multiplication here costs exactly one Beaver round (plus party 0's request to the
TTP dealer). Comparisons are :mod:`mpc.comparison`'s (4 rounds for any number of parties),
always *batched*: MPC cost on loopback is latency (rounds), not FLOPs.
"""

from __future__ import annotations

import functools

import torch

from mpc import comparison
from mpc.compat import import_crypten
from mpc.layout import FIXED_BITS, rows_of


def _crypten():
    return import_crypten()


def _rank() -> int:
    """This party's rank; party 0 alone adds public constants to its share."""
    return _crypten().communicator.get().get_rank()


def share_rows(x_local: torch.Tensor, owners: list[int], rank: int, precision: int | None) -> "object":
    """Secret-share a row matrix whose rows come from several parties.

    ``owners[i]`` is the (public) owner rank of global row ``i``; ``x_local`` holds this party's
    rows in global order. Every owner shares its block (PRZS: no communication), blocks are
    concatenated and permuted into global row order (local on shares).
    """
    ct = _crypten()
    owners = [int(o) for o in owners]
    n_local = len(rows_of(rank, owners))
    if x_local.dim() != 2 or x_local.shape[0] != n_local:
        raise ValueError(f"party {rank} owns {n_local} rows, got x_local of shape {tuple(x_local.shape)}")
    width = x_local.shape[1]
    parties = sorted(set(owners))
    blocks, order = [], []
    for p in parties:
        rows = rows_of(p, owners)
        order += rows
        if p == rank:
            data = x_local
        else:
            data = torch.zeros(len(rows), width, dtype=x_local.dtype)
        blocks.append(ct.cryptensor(data, src=p, precision=precision))
    X = ct.cat(blocks, dim=0) if len(blocks) > 1 else blocks[0]
    perm = torch.empty(len(order), dtype=torch.long)
    perm[torch.tensor(order)] = torch.arange(len(order))
    if not torch.equal(perm, torch.arange(len(order))):
        X = X[perm]
    return X


def int_tensor(share: torch.Tensor):
    """Arithmetic shares of integers as an int MPCTensor (encoder scale 1)."""
    from crypten.encoder import FixedPointEncoder

    out = _crypten().mpc.MPCTensor.from_shares(share, precision=0)
    out.encoder = FixedPointEncoder(precision_bits=0)
    return out


def as_int(x):
    """Reinterpret ``x``'s shares with encoder scale 1 (no change to the shares)."""
    from crypten.encoder import FixedPointEncoder

    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=0)
    return y


def as_fixed(x, bits: int = FIXED_BITS):
    """Reinterpret ``x``'s shares as fixed point with ``bits`` fractional bits."""
    from crypten.encoder import FixedPointEncoder

    y = x.clone()
    y.encoder = FixedPointEncoder(precision_bits=bits)
    return y


def add_raw(x, value: int):
    """Add a public integer to the *raw* ring value (ignores the encoder)."""
    y = x.clone()
    if _rank() == 0:
        y.share = y.share + int(value)
    return y


def public_int(values: torch.Tensor):
    """A public int64 tensor as int shares (party 0 holds it, the others 0): no communication."""
    share = values.long() if _rank() == 0 else torch.zeros_like(values, dtype=torch.long)
    return _crypten().mpc.MPCTensor.from_shares(share, precision=0)


def mul_public_int(x, t: torch.Tensor):
    """Multiply shares by a public int64 tensor (local; the encoder is kept)."""
    y = x.clone()
    y.share = y.share * t.long()
    return y


def matmul_public_int(x, t: torch.Tensor):
    """``x @ t`` with public int64 ``t`` (local; the encoder is kept)."""
    y = x.clone()
    y.share = y.share.matmul(t.long())
    return y


class Beaver:
    """One Beaver product of int (scale 1) tensors whose masked operands the caller opens,
    together with other values, in one round: ``masked`` to open, then :meth:`finish`.

    Requests its triple from the dealer when made, as CrypTen's ``mul``/``matmul`` would."""

    def __init__(self, x, y, op: str = "mul") -> None:
        for t in (x, y):
            if t.encoder.scale != 1:
                raise ValueError("Beaver here multiplies int tensors (encoder scale 1)")
        self.op = op
        self.a, self.b, self.c = _crypten().mpc.get_default_provider().generate_additive_triple(x.size(), y.size(), op)
        self.masked = [x.share - self.a.share, y.share - self.b.share]

    def finish(self, eps: torch.Tensor, delta: torch.Tensor):
        """The product's int shares from the opened ``x - a`` and ``y - b``."""
        f = getattr(torch, self.op)
        z = self.c.share + f(eps, self.b.share) + f(self.a.share, delta)
        if _rank() == 0:
            z = z + f(eps, delta)
        return int_tensor(z)


def truncate(x, divisor: int):
    """Divide raw ring values by a public integer (CrypTen's truncation protocol: one round
    for 3+ parties, local for 2). Error at most one unit, except with probability about
    |x| / 2^63 (keep |x| well below the ring)."""
    y = x.clone()
    y._tensor.div_(int(divisor))
    return y


def ltz(x):
    """Batched ``[x < 0]`` on raw ring values, as an int (scale 1) 0/1 tensor."""
    return comparison.ltz(x)


def reciprocal_bounded(x, lo: int, hi: int, iters: int = 4):
    """``1 / x`` for fixed-point shares known to lie in ``[2^lo, 2^hi)``.

    CrypTen's ``reciprocal`` knows nothing about its input: a sign test, an 8-squaring ``exp``
    for the first guess, then 10 Newton steps (about 70 rounds at 3+ parties). With the range
    known, one batched comparison against the powers of two in it finds ``x``'s octave, the
    first guess ``2 / (3 * 2^j)`` is then within a factor 1 +- 1/3 of ``1/x``, and Newton's
    relative error ``e -> e^2`` is below 2^-25 after 4 steps: 8 + 4 * 2 rounds (+ truncations).
    With :func:`mpc.comparison.using` ``("crypten")`` (the benchmark's baseline): CrypTen's own.
    """
    if comparison.method() == "crypten":
        return x.reciprocal()
    scale = 1 << FIXED_BITS
    octaves = torch.arange(lo + 1, hi)  # thresholds 2^(lo+1) .. 2^(hi-1)
    thr = torch.round(torch.pow(2.0, octaves.double()) * scale).long()
    rep = x.unsqueeze(-1).expand(*x.shape, len(thr)).clone()
    if _rank() == 0:
        rep.share = rep.share - thr
    t = 1 - ltz(rep)  # [x >= 2^j], int
    guess = 2.0 / (3.0 * torch.pow(2.0, torch.arange(lo, hi).double()))  # per octave lo .. hi-1
    step = torch.round((guess[1:] - guess[:-1]) * scale).long()
    y = matmul_public_int(t, step)
    if _rank() == 0:
        y.share = y.share + int(round(float(guess[0]) * scale))
    y = as_fixed(y)
    for _ in range(iters):
        y = y * (2 - x * y)
    return y


def prod_tree(x, dim: int):
    """Product along ``dim`` with a log-depth tree (``ceil(log2 size)`` multiplication rounds).

    Meant for 0/1 int tensors (an AND); padding uses the public 1.
    """
    x = x.transpose(dim, -1) if dim not in (-1, x.dim() - 1) else x
    while x.shape[-1] > 1:
        size = x.shape[-1]
        half = size // 2
        lo = x[..., :half]
        hi = x[..., half : 2 * half]
        prod = lo * hi
        if size % 2:
            prod = _crypten().cat([prod, x[..., 2 * half :]], dim=-1)
        x = prod
    x = x.squeeze(-1)
    return x


def slot_map(ks: list[int], J: torch.Tensor, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each column's "beats every other column of its group" slots come from.

    Column j of a group has ``max k - 1`` slots; slot s holds pair ``pair[j, s]``'s bit ``w``
    (j = J), its complement (j = L: ``flip`` 1), or the public 1 for padding (``pair`` -1,
    ``flip`` 1). Returns ``(pair, flip)``, both ``K x (max k - 1)`` int64 (shared between
    calls with the same layout: read them, do not write them). Public and the same in every
    Lloyd iteration, so it is built once per layout (a Python loop over the pairs, ~2 ms).
    """
    return _slot_map(tuple(int(k) for k in ks), tuple(J.tolist()), tuple(L.tolist()))


@functools.lru_cache(maxsize=64)
def _slot_map(ks: tuple[int, ...], J: tuple[int, ...], L: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    K = sum(ks)
    D = max(1, max(ks) - 1)
    pair = torch.full((K, D), -1, dtype=torch.long)
    flip = torch.ones(K, D, dtype=torch.long)
    slot = [0] * K
    for p, (j, l) in enumerate(zip(J, L)):
        pair[j, slot[j]], flip[j, slot[j]] = p, 0
        slot[j] += 1
        pair[l, slot[l]] = p
        slot[l] += 1
    return pair, flip


def onehot_from_pairs(w, n_rows: int, ks: list[int], J: torch.Tensor, L: torch.Tensor):
    """One-hot winners from pairwise "J beats L" bits ``w`` (``n_rows x P``, 0/1 int).

    Column j of a group is hot iff it beats every other column of its group: slot values
    (:func:`slot_map`) are assembled by one public linear map, then ANDed with
    :func:`prod_tree` (``ceil(log2(max k - 1))`` rounds). :func:`mpc.comparison.onehot_wins`
    does the same in one round with the dealer's bit-product tuples.
    """
    if len(J) == 0:
        ct = _crypten()
        return ct.cryptensor(torch.ones(n_rows, sum(ks), dtype=torch.long), src=0, precision=0)
    pair, flip = slot_map(ks, J, L)
    K, D = pair.shape
    lin = torch.zeros(len(J), K * D, dtype=torch.long)
    flat = pair.reshape(-1)
    used = flat >= 0
    sign = 1 - 2 * flip.reshape(-1)  # w or 1 - w
    lin[flat[used], torch.arange(K * D)[used]] = sign[used]
    const = flip.reshape(-1)  # 1 - w and padding carry the public 1
    B = matmul_public_int(as_int(w), lin)
    if _rank() == 0:
        B.share = B.share + const.unsqueeze(0)
    B = B.view(n_rows, K, D)
    return prod_tree(B, -1)


def count_bits(counts, n_max: int):
    """``[n_j >= v]`` for v = 1..n_max as a ``K x n_max`` 0/1 int tensor (one batched comparison).

    Any function h of an integer count in [0, n_max] with h(0) = 0 is then *linear* in these bits:
    ``h(n) = sum_v [n >= v] (h(v) - h(v-1))`` (see :func:`lookup`).
    """
    v = torch.arange(1, n_max + 1, dtype=torch.long)
    diff = as_int(counts).unsqueeze(1) - v.unsqueeze(0)  # public int subtraction (scale 1)
    return 1 - ltz(diff)


def lookup(bits, table: torch.Tensor):
    """``h(n)`` from :func:`count_bits` and the public int64 table ``h(1..n_max)`` (h(0) = 0)."""
    table = table.long()
    coef = table - torch.cat([torch.zeros(1, dtype=torch.long), table[:-1]])
    return matmul_public_int(bits, coef)


def reveal_to_owners(x, owners: list[int], rank: int) -> torch.Tensor:
    """Decrypt row ``i`` of ``x`` at party ``owners[i]`` alone; returns this party's rows.

    Point to point: every party sends its share of party p's rows to p and nothing to anyone
    else; p adds the shares. CrypTen's ``get_plain_text(dst=p)`` is a ``dist.reduce``, which
    gloo runs as reduce-scatter + gather, so every *other* party's buffer ends up holding a
    fully summed segment (about 1/N) of p's plaintext output; that must never be used here.
    Costs one round (all sends in flight together).
    """
    import torch.distributed as dist

    comm = _crypten().communicator.get()
    group = comm.main_group
    share = x.share
    mine = rows_of(rank, owners)
    reqs, received, n_elem = [], [], 0
    for p in range(comm.get_world_size()):
        if p == rank:
            continue
        theirs = rows_of(p, owners)
        if theirs:
            out = share[theirs].contiguous()
            reqs.append(dist.isend(out, dst=p, group=group))
            n_elem += out.numel()
        if mine:
            buf = torch.empty((len(mine),) + tuple(share.shape[1:]), dtype=share.dtype)
            reqs.append(dist.irecv(buf, src=p, group=group))
            received.append(buf)
            n_elem += buf.numel()
    for r in reqs:
        r.wait()
    if comm.get_world_size() > 1 and _crypten().cfg.communicator.verbose:
        comm._log_communication(n_elem)  # one round, bytes sent + received
    total = share[mine].clone()
    for buf in received:
        total += buf
    return x.encoder.decode(total)
