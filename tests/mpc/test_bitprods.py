"""The dealer's bit-product tuples (mpc.bitprods) with real CrypTen parties and the TTP dealer.

``and_all`` (arithmetic AND of D secret bits) and ``monomials`` (binary ANDs of shared words)
are checked against plaintext, online and with the offline dealer, and their round counts are
pinned: one round for up to ``MAX_WIDTH`` bits. ``onehot_wins`` (comparison and one-hot in
one) equals CrypTen's comparison followed by a product tree, ties included.
"""

from __future__ import annotations

import math

import pytest
import torch

from mpc import bitprods, preprocessing
from mpc.layout import pair_layout
from mpc.runtime import PartySpec, run_parties
from tests.mpc import _bitprods_jobs as jobs


def test_subset_products_are_products_of_subsets():
    r = torch.tensor([[1, 0, 1], [1, 1, 1]])
    R = bitprods.subset_expand(torch.ones_like(r), r)
    for t in range(8):
        want = torch.ones(2, dtype=torch.long)
        for s in range(3):
            if t >> s & 1:
                want = want * r[:, s]
        assert torch.equal(R[:, t], want)
    # the coefficients on the opened bits rebuild prod_s (c_s ^ r_s) from them
    c = torch.tensor([[0, 1, 1], [1, 0, 1]])
    got = (bitprods.subset_expand(c, 1 - 2 * c) * R).sum(-1)
    assert torch.equal(got, (c ^ r).prod(-1))


def test_malformed_requests_are_refused():
    with pytest.raises(ValueError, match="1 to 10 bits"):
        bitprods.check_width((4, bitprods.MAX_WIDTH + 1))
    with pytest.raises(preprocessing.PlanMismatch):
        preprocessing.output_shape(("bitand", (3,), 2, (4,)))  # subset 0b100 of 2 variables
    assert preprocessing.output_shape(("bitprods", (3, 5))) == (3, 32)
    assert preprocessing.output_shape(("bitand", (3,), 2, (1, 2, 3))) == (3, 3)
    # an edaBit with its group products: r's 5 additive shares, then 11 product words per 4 elements
    assert preprocessing.output_shape(("edabits4", (5,))) == (5 + 11 * 2,)
    with pytest.raises(preprocessing.PlanMismatch, match="negative size"):
        preprocessing.output_shape(("edabits4", (3, -2)))
    with pytest.raises(preprocessing.PlanMismatch, match="negative size"):  # the dealer checks a batch before drawing
        preprocessing.validate_batch([("edabits", (4,)), ("edabits4", (-8,))])


@pytest.mark.parametrize("n_parties", [2, 3])
def test_and_all_matches_plaintext_in_one_round(n_parties):
    g = torch.Generator().manual_seed(3)
    groups = {}
    for D in (1, 5, 10, 13):
        v = (torch.rand(30, D, generator=g) < 0.8).long()
        v[0], v[1] = 1, 0  # all ones, all zeros
        groups[D] = v
    out = run_parties(jobs.and_all, PartySpec(n_parties), groups)
    for o in out:
        for planned, res in o.items():
            for D, (z, _) in res.items():
                assert torch.equal(z, groups[D].prod(-1)), (planned, D)
    # party 1 makes no dealer request online: one round, and a product tree over the groups past MAX_WIDTH
    for planned, res in out[1].items():
        for D, (_, rounds) in res.items():
            assert rounds == 1 + math.ceil(math.log2(math.ceil(D / bitprods.MAX_WIDTH))), (planned, D)


@pytest.mark.parametrize("n_parties", [2, 3])
def test_binary_monomials_match_plaintext_in_one_round(n_parties):
    g = torch.Generator().manual_seed(4)
    words = [torch.randint(-(2**63), 2**63 - 1, (25,), generator=g, dtype=torch.long) for _ in range(4)]
    words[3][0] = -1  # all ones
    monos = [(0,), (0, 1), (0, 1, 2), (1, 2, 3), (0, 1, 2, 3)]
    for got, rounds in run_parties(jobs.monomials, PartySpec(n_parties), words, monos):
        for mono, value in zip(monos, got):
            want = words[mono[0]]
            for v in mono[1:]:
                want = want & words[v]
            assert torch.equal(value, want), mono
        assert rounds == 1


@pytest.mark.parametrize("n_parties", [2, 3])
def test_and_bits_of_packed_words_matches_plaintext(n_parties):
    """The AND of every bit of a row (the input check's), for widths at and around the word and
    four-word boundaries: all ones, one zero anywhere (first, last, next to the padding), and
    random rows; rounds are ceil(log4 ceil(W / 64)) + 3."""
    rows = []
    for W in (1, 63, 64, 65, 256, 257, 641):
        x = torch.ones(W + 3, W, dtype=torch.long)
        for i, j in enumerate((0, W - 1, min(63, W - 1))):
            x[i + 1, j] = 0  # row 0 stays all ones
        x[-1] = torch.randint(0, 2, (W,), generator=torch.Generator().manual_seed(W))
        rows.append(x)
    for got in run_parties(jobs.and_bits, PartySpec(n_parties), rows):
        for x, (value, rounds) in zip(rows, got):
            W = x.shape[1]
            assert torch.equal(value, x.prod(-1)), W
            assert rounds == math.ceil(math.log(math.ceil(W / 64), 4)) + 3, (W, rounds)


def test_onehot_wins_equals_crypten_with_ties():
    ks = [2, 3, 5]
    J, L = pair_layout(ks)
    g = torch.Generator().manual_seed(6)
    v = torch.randint(-2, 3, (12, sum(ks)), generator=g, dtype=torch.long)  # scores with many ties
    v[0] = 0
    d = v[:, J] - v[:, L]
    out = run_parties(jobs.onehot, PartySpec(3), d, ks)
    want = torch.cat([torch.nn.functional.one_hot(torch.argmax((v[:, off : off + k] == v[:, off : off + k].min(1, keepdim=True).values).long(), 1), k)
                      for off, k in zip([0, 2, 5], ks)], 1)  # the first minimum of each group
    for o in out:
        assert torch.equal(o["edabits"][0], o["crypten"][0])
        assert torch.equal(o["edabits"][0], want)
    # party 1 (no online dealer requests): 1 opening + 2 carry levels (the first is local) + the one-hot
    assert out[1]["edabits"][1] == 4
