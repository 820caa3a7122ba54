"""SecPC's shared conventions against first principles (not against the code that shares them).

The secure protocol and its oracle both import :mod:`mpc.layout`, so a bug there would make
them agree with each other and both be wrong; these tests pin the conventions independently.
"""

from __future__ import annotations

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
