"""SecPC's shared conventions against first principles (not against the code that shares them).

The secure protocol and its oracle both import :mod:`mpc.layout`, so a bug there would make
them agree with each other and both be wrong; these tests pin the conventions independently.
"""

from __future__ import annotations

import pytest
import torch

from mpc import layout as lay
from mpc import reference as ref
from mpc.projection import projection_matrix, reduce_prompt


def test_placement_is_round_robin_and_rows_of_inverts_it():
    assert lay.round_robin(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    owners = lay.round_robin(10, 4)
    assert [lay.rows_of(p, owners) for p in range(4)] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert lay.rows_of(5, owners) == []
    assert lay.round_robin(3, 1) == [0, 0, 0]


def test_pair_layout_lists_j_before_l_within_each_group():
    J, L = lay.pair_layout([3])
    assert J.tolist() == [0, 0, 1] and L.tolist() == [1, 2, 2]
    J, L = lay.pair_layout([2, 3])
    assert J.tolist() == [0, 2, 2, 3] and L.tolist() == [1, 3, 4, 4]


def test_assignment_is_argmin_over_exact_integer_distances_ties_to_the_lowest_index():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        xq = torch.randint(-20, 21, (15, 3), generator=g)
        k = 2 + trial % 4
        S = torch.randint(-40, 41, (k, 3), generator=g)
        n = torch.randint(1, 4, (k,), generator=g)
        if trial % 5 == 0:
            S[1], n[1] = S[0], n[0]  # an exact tie between centres 0 and 1
        A = ref.assign_int(xq, S, n, [k])
        # squared distance to centre S/n, scaled by n^2 so that it is an exact integer
        d = ((xq.unsqueeze(1) * n.view(1, -1, 1) - S.unsqueeze(0)) ** 2).sum(-1) * (n.prod() ** 2 // n**2).view(1, -1)
        assert torch.equal(A.argmax(1), d.argmin(1))  # torch's argmin returns the first minimum
        assert (A.sum(1) == 1).all()


def test_an_empty_cluster_keeps_its_centre():
    xq = torch.tensor([[0, 0], [1, 0], [0, 1]])
    S = torch.tensor([[0, 0], [100, 100]])  # centre 1 is far from every row: it empties
    n = torch.tensor([1, 1])
    S1, n1, A = ref.lloyd_int(xq, S, n, [2], iters=1)
    assert A[:, 1].sum() == 0
    assert S1[1].tolist() == [100, 100] and n1[1] == 1  # kept, not reset
    assert S1[0].tolist() == [1, 1] and n1[0] == 3


def test_initial_rows_are_distinct_per_group_and_public():
    rows = lay.initial_rows(lay.candidate_groups(2, 5, 3), 9, seed=4)
    off = 0
    for k in lay.candidate_groups(2, 5, 3):
        block = rows[off : off + k]
        assert len(set(block.tolist())) == k and int(block.max()) < 9
        off += k
    assert torch.equal(rows, lay.initial_rows(lay.candidate_groups(2, 5, 3), 9, seed=4))


def test_reduce_prompt_projects_the_movement_from_d_init():
    D_init = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    v = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    R = projection_matrix(32, 6, seed=3)
    want = R.double() @ v.reshape(-1).double()
    got = reduce_prompt(D_init + v, D_init, R)
    torch.testing.assert_close(got.double(), want / want.norm(), atol=1e-5, rtol=0)
    assert torch.equal(reduce_prompt(D_init, D_init, R), torch.zeros(6))  # no movement, no NaN


def test_projection_is_public_seeded_gaussian_with_variance_one_over_m():
    R = projection_matrix(4000, 16, seed=7)
    assert R.shape == (16, 4000) and R.dtype == torch.float32
    assert torch.equal(R, projection_matrix(4000, 16, seed=7))  # every party builds the same matrix
    assert not torch.equal(R, projection_matrix(4000, 16, seed=8))
    assert abs(float(R.double().var()) * 16 - 1) < 0.05 and abs(float(R.double().mean())) < 0.01
    for bad in ((0, 4), (4, 0)):
        with pytest.raises(ValueError, match="must be positive"):
            projection_matrix(*bad)


def test_reduce_prompt_batches_are_rows_and_shapes_are_checked():
    g = torch.Generator().manual_seed(5)
    D_init = torch.randn(3, 5, generator=g)
    batch = D_init + torch.randn(4, 3, 5, generator=g)
    R = projection_matrix(15, 8, seed=1)
    got = reduce_prompt(batch, D_init, R)
    assert got.shape == (4, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.stack([reduce_prompt(b, D_init, R) for b in batch]), atol=0, rtol=0)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4), atol=1e-6, rtol=0)
    # tiny but real movement still gives a unit row (only exact zero movement gives zeros)
    tiny = reduce_prompt(D_init.double() + 1e-9, D_init.double(), R)
    assert abs(float(tiny.norm()) - 1) < 1e-5
    with pytest.raises(ValueError, match="does not match D_init"):
        reduce_prompt(torch.zeros(3, 4), D_init, R)
    with pytest.raises(ValueError, match="R expects 15 inputs"):
        reduce_prompt(torch.zeros(2, 2), torch.zeros(2, 2), R)


@pytest.mark.parametrize("n_max, bits", [(115, 16), (163, 15), (231, 14), (327, 13), (462, 12), (654, 11),
                                         (925, 10), (1308, 9), (1850, 8)])
def test_quant_bits_table_keeps_the_largest_operand_below_2_62(n_max, bits):
    """The docstring's (and README's) table, and its reason: |f| <= 6 N^4 2^(2s) < 2^62."""
    assert lay.quant_bits(n_max) == bits
    assert 6 * n_max**4 * 2 ** (2 * bits) < 2**62
    if bits < 16:
        assert 6 * n_max**4 * 2 ** (2 * (bits + 1)) >= 2**62  # one more bit would overflow
    if n_max < 1850:
        assert lay.quant_bits(n_max + 1) == bits - 1
    else:
        with pytest.raises(ValueError, match="too many for the 64-bit ring"):
            lay.quant_bits(n_max + 1)
    assert lay.quant_bits(2) == 16
    with pytest.raises(ValueError):
        lay.quant_bits(0)


def test_quantize_rounds_to_the_nearest_integer_and_refuses_rows_longer_than_one():
    x = torch.tensor([[0.5, -0.25], [0.6, 0.8]])
    assert lay.quantize(x, 4).tolist() == [[8, -4], [10, 13]]  # 0.8 * 16 = 12.8 -> 13
    assert lay.quantize(x, 4).dtype == torch.int64
    assert lay.quantize(torch.tensor([[1.0, 0.0]]), 16).tolist() == [[65536, 0]]
    with pytest.raises(ValueError, match="norm <= 1"):
        lay.quantize(torch.tensor([[0.8, 0.61]]), 8)


def test_small_clusters_need_an_explicit_opt_in_and_defaults_match_the_launcher():
    from launcher.config import MPCConfig

    with pytest.raises(ValueError, match="min_cluster_size=2 < 3"):
        lay.SecPCConfig(min_cluster_size=2)
    assert lay.SecPCConfig(min_cluster_size=2, allow_insecure=True).min_cluster_size == 2
    assert lay.SecPCConfig(min_cluster_size=3).min_cluster_size == 3
    schema, protocol = MPCConfig(), lay.SecPCConfig()
    for key in ("k_min", "k_max", "iters", "min_cluster_size", "restarts", "allow_insecure"):
        assert getattr(protocol, key) == getattr(schema, key), key
    with pytest.raises(ValueError, match="at least one party"):
        lay.round_robin(3, 0)


def test_a_distance_larger_by_exactly_one_is_not_a_tie():
    """f = e_J n_L^2 - e_L n_J^2 = 1 means column L is strictly nearer: only f <= 0 keeps J."""
    xq, S, n = torch.tensor([[0]]), torch.tensor([[1], [0]]), torch.tensor([1, 1])  # dist^2 1 vs 0
    assert ref.assign_int(xq, S, n, [2]).tolist() == [[0, 1]]
    assert ref.assign_int(xq, torch.tensor([[0], [0]]), n, [2]).tolist() == [[1, 0]]  # a true tie: lower index


def test_the_input_contract_is_one_function():
    """Both topologies' clients check their rows with ``input_problem``; each code names one breach."""
    from mpc.layout import INPUT_PROBLEMS, input_problem, max_prompt_abs, min_rows

    x, p = torch.full((2, 4), 0.5), torch.zeros(2, 6)
    assert input_problem(x, p, 9) == 0
    bad_x = x.clone()
    bad_x[0, 0] = float("nan")
    assert "NaN" in INPUT_PROBLEMS[input_problem(bad_x, p, 9)]
    assert "norm > 1" in INPUT_PROBLEMS[input_problem(x * 2, p, 9)]
    big = p.clone()
    big[1, 2] = 1.01 * max_prompt_abs(9)
    assert "above the bound" in INPUT_PROBLEMS[input_problem(x, big, 9)]
    assert input_problem(x, big, 1) == 0  # the bound scales as 2^18 / N
    assert min_rows(4) == 4 and min_rows(2) == 3 and min_rows(2, allow_insecure=True) == 2
