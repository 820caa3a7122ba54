"""SecPC's public conventions, shared by the secure protocol and its plaintext oracle.

Both :mod:`mpc.clustering` / :mod:`mpc.secpc` (under encryption) and :mod:`mpc.reference` (in
the clear) import these, so a bug here cannot hide as a disagreement between them: the tests
check these helpers against first principles instead (argmin over exact integer distances,
explicit pair layouts, distinct initial rows). What the conventions are and why is in
:mod:`mpc.reference`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPS_SIL = 2.0**-8  # keeps the silhouette ratio finite when a point sits on two centres

# ------------------------------------------------------------------ the ring and its fixed point
RING_BITS = 64  # CrypTen's ring: Z_2^64, as signed int64 words
RING_BITS_BUDGET = 62  # intermediates are kept below 2^62 (the ring is signed 64-bit)
FIXED_BITS = 16  # CrypTen's default fixed-point precision
INV_BITS = 20  # fractional bits of the encrypted reciprocal counts round(2^20 / n)
TRUNCATION_MARGIN_BITS = 8  # headroom under the ring budget (CrypTen's truncation errs w.p. ~|x|/2^63)

SAFE_MIN_CLUSTER = 3  # below this a cluster mean hands a member the other member's prompt


@dataclass(frozen=True)
class SecPCConfig:
    """Public parameters of a round; defaults equal the launcher's config schema (``mpc.*``)."""

    k_min: int = 2
    k_max: int = 4
    iters: int = 10
    seed: int = 0
    min_cluster_size: int = SAFE_MIN_CLUSTER
    reveal_own_assignment: bool = False  # evaluation only (ARI); written into results when on
    restarts: int = 4  # Forgy draws per candidate k (the best silhouette wins, see mpc.reference)
    allow_insecure: bool = False  # clusters smaller than 3, or 2 clients: a member reads another's prompt

    def __post_init__(self) -> None:
        if self.min_cluster_size < SAFE_MIN_CLUSTER and not self.allow_insecure:
            raise ValueError(
                f"min_cluster_size={self.min_cluster_size} < {SAFE_MIN_CLUSTER} lets a cluster member "
                "subtract its own prompt from the mean and read the others'; set allow_insecure=True "
                "to run it anyway (tests, benchmarks)"
            )


def round_robin(n_rows: int, n_parties: int) -> list[int]:
    """The public placement of rows (clients) on parties (ranks): row ``i`` lives on ``i % n_parties``.

    Every placement in the project goes through here, so the launcher's ranks, SecPC's owners
    list and the benchmarks cannot disagree on who holds which client.
    """
    if n_parties < 1:
        raise ValueError(f"need at least one party, got {n_parties}")
    return [i % n_parties for i in range(n_rows)]


def rows_of(party: int, owners: list[int]) -> list[int]:
    """The global indices of the rows ``party`` owns, in global order."""
    return [i for i, o in enumerate(owners) if int(o) == party]


def quant_bits(n_rows: int, max_bits: int = 16, min_bits: int = 8) -> int:
    """Fractional bits for the inputs so the largest comparison operand stays below 2^62.

    The operand is ``f = e_j n_l^2 - e_l n_j^2`` with ``|e| <= 3 N^2 2^(2s)`` and ``n <= N``, so
    ``|f| <= 6 N^4 2^(2s)``: 16 bits for N <= 115, 15 to 163, 14 to 231, 13 to 327, 12 to 462,
    11 to 654, 10 to 925, 9 to 1,308, 8 (the minimum accepted) to 1,850; N >= 1,851 is refused.
    """
    if n_rows < 1:
        raise ValueError("need at least one row")
    s = math.floor((RING_BITS_BUDGET - math.log2(6.0 * float(n_rows) ** 4)) / 2)
    s = min(max_bits, s)
    if s < min_bits:
        raise ValueError(f"N={n_rows} rows is too many for the 64-bit ring (needs < {min_bits} fractional bits)")
    return s


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(x * 2^bits)`` as int64; rows must have norm <= 1 (checked)."""
    x = torch.as_tensor(x)
    if not _norms_ok(x):
        raise ValueError("SecPC rows must have Euclidean norm <= 1 (normalise them first)")
    return torch.round(x.double() * (2.0**bits)).long()


# ------------------------------------------------------------------ the input contract


def min_rows(k_max: int, allow_insecure: bool = False) -> int:
    """Fewest rows a round may cluster: ``k_max`` centres need as many distinct rows, and with
    fewer than ``SAFE_MIN_CLUSTER`` rows the all-client mean hands a client the other's prompt."""
    return max(k_max, 1 if allow_insecure else SAFE_MIN_CLUSTER)


def max_prompt_abs(n_rows: int) -> float:
    """Largest accepted ``|entry|`` of a shared prompt with ``n_rows`` rows in the round.

    The aggregation forms ``sum_i p_i`` at ``FIXED_BITS`` fractional bits and multiplies it by
    ``round(2^INV_BITS / n)``, so ``N * B * 2^36`` must stay below the 2^62 budget; a further
    ``TRUNCATION_MARGIN_BITS`` of headroom keep CrypTen's probabilistic truncation error
    (probability ~|x| / 2^63) rare. ``B = 2^18 / N``: 29,127 for 9 rows, 262 for 1,000 (learned
    prompt entries are ~0.01-1).
    """
    return 2.0 ** (RING_BITS_BUDGET - FIXED_BITS - INV_BITS - TRUNCATION_MARGIN_BITS) / n_rows


#: Why a client's rows break the input contract, by code (0: they keep it). Codes, not text,
#: so that parties can publish them in one small all-gather and every rank can say why.
INPUT_PROBLEMS = (
    None,
    "a reduced row has a NaN or infinite entry",
    "a reduced row has Euclidean norm > 1 (rows must be normalised)",
    "a domain prompt has a NaN or infinite entry",
    "a domain prompt entry is above the bound 2^18/N",
    "its row counts or shapes do not match the owners list",
)


def _norms_ok(x: torch.Tensor) -> bool:
    return not x.numel() or float(x.double().norm(dim=-1).max()) <= 1.0 + 1e-6


def input_problem(x: torch.Tensor, p: torch.Tensor, n_rows: int) -> int:
    """Index into ``INPUT_PROBLEMS`` of why reduced rows ``x`` and prompts ``p`` cannot be
    shared in a round of ``n_rows`` rows: finite, rows of norm <= 1, entries <= ``max_prompt_abs``.
    Checked by the client itself before it shares (both topologies); the compute parties check
    the norm and the bound again on the shares (:mod:`mpc.validity`)."""
    if not torch.isfinite(x).all():
        return 1
    if not _norms_ok(x):
        return 2
    if not torch.isfinite(p).all():
        return 3
    if p.numel() and float(p.abs().max()) > max_prompt_abs(n_rows):
        return 4
    return 0


RESTART_STRIDE = 1_000_003  # seed offset between restarts of the same k (restart 0 = no offset)


def initial_rows(ks: list[int], n_rows: int, seed: int) -> torch.Tensor:
    """Public, data-independent row indices of the initial centres, group after group.

    The r-th group with a given k (a restart) draws from its own seeded permutation."""
    idx, seen = [], {}
    for k in ks:
        if k > n_rows:
            raise ValueError(f"cannot start {k} centres from {n_rows} rows")
        r = seen.get(k, 0)
        seen[k] = r + 1
        gen = torch.Generator().manual_seed(int(seed) * 1000 + int(k) + RESTART_STRIDE * r)
        idx.append(torch.randperm(n_rows, generator=gen)[:k])
    return torch.cat(idx)


def candidate_ks(k_min: int, k_max: int) -> list[int]:
    if not 1 <= k_min <= k_max:
        raise ValueError(f"need 1 <= k_min <= k_max, got {k_min}, {k_max}")
    return list(range(k_min, k_max + 1))


def candidate_groups(k_min: int, k_max: int, restarts: int = 1) -> list[int]:
    """The k of every column group: each candidate k ``restarts`` times, k-major."""
    if restarts < 1:
        raise ValueError(f"need restarts >= 1, got {restarts}")
    return [k for k in candidate_ks(k_min, k_max) for _ in range(restarts)]


def group_layout(ks: list[int]) -> list[tuple[int, int]]:
    """(offset, k) of each candidate's column block."""
    out, off = [], 0
    for k in ks:
        out.append((off, k))
        off += k
    return out


def pair_layout(ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global column indices (J, L), J < L, of every unordered pair inside a candidate group."""
    J, L = [], []
    for off, k in group_layout(ks):
        for j in range(k):
            for l in range(j + 1, k):
                J.append(off + j)
                L.append(off + l)
    return torch.tensor(J, dtype=torch.long), torch.tensor(L, dtype=torch.long)
