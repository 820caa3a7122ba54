"""edaBits comparisons (mpc.comparison) with real CrypTen parties and the TTP dealer.

Checked against plaintext on the ring's edge values (0, +-1, +-2^62, the extremes, ties of
differences), for 2, 3 and 4 parties, on CrypTen's online dealer path and with the dealer's
offline phase; and their online rounds do not depend on the number of parties (4 for ``ltz``)
while CrypTen's grow with it.
"""

from __future__ import annotations

import math

import pytest
import torch

from mpc.runtime import PartySpec, run_parties
from tests.mpc import _comparison_jobs as jobs

EDGES = [0, 1, -1, 2, -2, 2**62, -(2**62), 2**62 - 1, -(2**62) + 1, 2**63 - 1, -(2**63), 12345, -12345]


def _inputs():
    g = torch.Generator().manual_seed(5)
    values = torch.cat([torch.tensor(EDGES, dtype=torch.long),
                        torch.randint(-(2**63), 2**63 - 1, (40,), generator=g, dtype=torch.long),
                        torch.randint(-1000, 1000, (40,), generator=g, dtype=torch.long)])
    bits = 5
    small = torch.arange(2**bits, dtype=torch.long).repeat(2)
    A = (torch.rand(9, 6, generator=g) < 0.2).long()
    A[:, 0] = 0  # a column with no 1 at all
    A[0, 1] = 1  # and one with exactly one
    return values, small, bits, A


@pytest.mark.parametrize("n_parties", [2, 3, 4])
def test_comparisons_match_plaintext_and_edabits_rounds_do_not_grow(n_parties):
    values, small, bits, A = _inputs()
    out = run_parties(jobs.compare_all, PartySpec(n_parties), values, small, bits, A)
    want_lt = (values < 0).long()
    want_z = (small == 0).long()
    want_e = (A.sum(0) == 0).long()
    for o in out:
        for key, r in o.items():
            assert torch.equal(r["lt"], want_lt), f"ltz wrong for {key}: {values[r['lt'] != want_lt].tolist()}"
            assert torch.equal(r["z"], want_z), f"is_zero_small wrong for {key}"
            assert torch.equal(r["e"], want_e), f"none_of wrong for {key}"
    for rank, o in enumerate(out):
        # party 0's counter also has its online dealer requests when nothing is planned
        for planned in (True,) if rank == 0 else (False, True):
            assert o[("edabits", planned)]["lt_rounds"] == 4  # open c; 2 carry levels (the first is local); B2A
            assert o[("edabits", planned)]["z_rounds"] == 2
    # CrypTen's A2B adds the P binary sharings with a tree of adders: 7 ceil(log2 P) + 1 rounds
    assert out[1][("crypten", False)]["lt_rounds"] == 7 * math.ceil(math.log2(n_parties)) + 1
    # with the offline phase party 0 makes no online dealer request: its online count is the others'
    assert len({o[("edabits", True)]["online"] for o in out}) == 1


def _first_level_in_the_clear(c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The carry tree's leaves for ``c - r = c + ~r + 1`` (bit 0 takes the carry-in, bit 63 is
    neutral) and its first radix-4 level, on plaintext words: what the shares must add up to."""
    from mpc.comparison import _spaced

    high, mask = -(1 << 63), _spaced(4)
    y = ~r
    g, p = y & c, y ^ c
    G, P = (g ^ (p & 1)) & ~high, (p & ~1 & ~high) | high
    gs = [(G >> t) & mask for t in range(4)]
    ps = [(P >> t) & mask for t in range(4)]
    Gout = gs[3] ^ (ps[3] & gs[2]) ^ (ps[3] & ps[2] & gs[1]) ^ (ps[3] & ps[2] & ps[1] & gs[0])
    return Gout, ps[3] & ps[2] & ps[1] & ps[0]


@pytest.mark.parametrize("n_parties", [2, 3])
def test_the_local_first_carry_level_adds_up_to_the_plaintext_level(n_parties):
    """``ltz_bits``' first level needs no opening: from the public ``c`` and XOR shares of ``r``
    and of its groups' products (as the dealer deals them), every party's local result XORs to the
    plaintext level. Every 4-bit (c, r) pattern in every group position, bit 0 (carry-in) and bit
    63 (neutral) included, then random words and extremes; element counts not a multiple of 4."""
    from mpc.comparison import _first_level, group_products

    grid = torch.arange(256, dtype=torch.long)
    c_pat, r_pat = grid & 15, grid >> 4
    cs, rs = [], []
    for j in range(16):  # the pattern in group j, the other bits random
        g = torch.Generator().manual_seed(j)
        base_c = torch.randint(-(2**63), 2**63 - 1, (256,), generator=g, dtype=torch.long)
        base_r = torch.randint(-(2**63), 2**63 - 1, (256,), generator=g, dtype=torch.long)
        keep = ~(15 << (4 * j)) if j < 15 else (1 << 60) - 1
        cs.append((base_c & keep) | (c_pat << (4 * j)))
        rs.append((base_r & keep) | (r_pat << (4 * j)))
    ext = torch.tensor([0, -1, 1, -(2**63), 2**63 - 1, 2**62, -(2**62), 0x5555555555555555], dtype=torch.long)
    c = torch.cat(cs + [ext, ext.flip(0), ext[:3]])
    r = torch.cat(rs + [ext.flip(0), ext, ext[3:6]])
    assert c.numel() % 4 != 0
    g = torch.Generator().manual_seed(99)
    rand = lambda shape: torch.randint(-(2**63), 2**63 - 1, shape, generator=g, dtype=torch.long)  # noqa: E731
    W = group_products(r)
    r_sh = [rand(r.shape) for _ in range(n_parties - 1)]
    W_sh = [rand(W.shape) for _ in range(n_parties - 1)]
    r_sh.insert(0, _xor_all([r] + r_sh))
    W_sh.insert(0, _xor_all([W] + W_sh))
    G = P = torch.zeros_like(c)
    for rank in range(n_parties):
        g_, p_ = _first_level(c, r_sh[rank], W_sh[rank], rank)
        G, P = G ^ g_, P ^ p_
    want_G, want_P = _first_level_in_the_clear(c, r)
    assert torch.equal(G, want_G) and torch.equal(P, want_P)


def _xor_all(ts: list[torch.Tensor]) -> torch.Tensor:
    out = ts[0].clone()
    for t in ts[1:]:
        out ^= t
    return out


@pytest.mark.parametrize("n_parties", [2, 3])
def test_bounded_reciprocal_matches_one_over_x_on_its_range(n_parties):
    """The silhouette's ``1 / (b + 2^-8)`` (b in [0, 4]): an octave comparison and 4 Newton steps."""
    x = torch.cat([torch.tensor([2.0**-8 - 1e-4, 2.0**-8, 0.01, 0.5, 1.0, 1.999, 2.0, 4.0 + 2.0**-8, 7.99]),
                   torch.rand(50, generator=torch.Generator().manual_seed(1)) * 4 + 2.0**-8])
    encoded = torch.round(x.double() * 2**16) / 2**16  # what the parties hold
    for y, _ in run_parties(jobs.reciprocal, PartySpec(n_parties), x):
        # fixed point: x * y is truncated to 2^-16, so the error grows with 1/x (as CrypTen's own)
        assert torch.allclose(y.double(), 1 / encoded, rtol=3e-4, atol=2e-4), (y - 1 / encoded).abs().max()
