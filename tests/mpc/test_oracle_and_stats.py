"""In-process checks of the plaintext pieces the multi-party tests lean on: the oracle against
scikit-learn, the transcript statistics on inputs whose verdict is known, and the pickle-free
message codec. (The multi-party tests run these inside party subprocesses, where a mutation
run cannot see them; these pin them in the test process too.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc import layout as lay
from mpc import reference as ref
from mpc import transcript, wire


def _blobs(seed: int, n_per: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.6, 0.0], [-0.6, 0.0], [0.0, 0.6]])
    X = torch.cat([c + 0.05 * torch.randn(n_per, 2, generator=g) for c in centres])
    return X / X.norm(dim=1, keepdim=True).clamp_min(1.0)


def test_oracle_lloyd_equals_sklearn_kmeans_from_the_same_centres():
    from sklearn.cluster import KMeans

    for seed in range(4):
        X = _blobs(seed)
        bits = lay.quant_bits(len(X))
        xq = lay.quantize(X, bits)
        S0, n0 = ref.initial_state([3], xq, seed)
        _, _, A = ref.lloyd_int(xq, S0, n0, [3], iters=10)
        init = (S0.double() / n0.double().unsqueeze(1)).numpy()
        km = KMeans(3, init=init, n_init=1, max_iter=10, tol=0, algorithm="lloyd").fit(xq.double().numpy())
        assert A.argmax(1).tolist() == km.labels_.tolist(), seed


def test_oracle_picks_the_true_k_and_aggregates_each_clusters_mean():
    X = _blobs(1)
    P = torch.arange(len(X) * 2, dtype=torch.float64).reshape(len(X), 2)
    res = ref.secpc_reference(X, P, lay.SecPCConfig(k_min=2, k_max=4, iters=10, seed=0, restarts=4))
    truth = np.repeat([0, 1, 2], 6)
    assert res.k == 3
    assert len({(int(a), int(b)) for a, b in zip(res.labels, truth)}) == 3  # the same partition
    for c in range(3):
        members = (res.labels == c).nonzero().flatten()
        torch.testing.assert_close(res.rows[members], P[members].mean(0).expand(len(members), 2))


def test_holm_adjusts_in_the_given_order():
    assert transcript.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert transcript.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _msgs(words: list[np.ndarray]) -> list:
    return [("phase", "op", w) for w in words]


def test_compare_flags_a_secret_dependent_message_and_not_fresh_shares():
    rng = np.random.default_rng(0)
    fresh = lambda: _msgs([rng.integers(-2**62, 2**62, 400) for _ in range(3)])  # noqa: E731
    assert not transcript.compare(fresh(), fresh(), fresh(), fresh()).flagged
    opened_a, opened_b = rng.integers(-2**62, 2**62, 400), rng.integers(-2**62, 2**62, 400)
    a1, a2, b1, b2 = fresh(), fresh(), fresh(), fresh()
    for run, words in ((a1, opened_a), (a2, opened_a), (b1, opened_b), (b2, opened_b)):
        run[1] = ("phase", "open", words)  # the same words whenever the secret is the same
    v = transcript.compare(a1, a2, b1, b2)
    assert v.flagged and v.worst[0]["index"] == 1
    shifted = _msgs([rng.normal(5, 1, 400).astype(np.int64) * 2**20 for _ in range(3)])  # a skewed message
    assert transcript.compare(fresh(), fresh(), shifted, shifted).flagged
    assert transcript.compare(fresh(), fresh(), fresh()[:2], fresh()[:2]).flagged  # control flow differs
    grown = fresh()
    grown[0] = ("phase", "op", rng.integers(0, 9, 401))
    assert transcript.compare(fresh(), fresh(), grown, grown).flagged


def test_plaintext_hits_count_only_large_secret_words():
    msgs = _msgs([np.array([5, 1000, -3000, 7]), np.array([1000])])
    assert transcript.plaintext_hits(msgs, np.array([1000, -3000, 5])) == 3  # 5 is below min_abs
    assert transcript.plaintext_hits(msgs, np.array([123456])) == 0


def test_wire_roundtrips_what_ranks_exchange_and_refuses_the_rest():
    obj = {"acc": {0: 0.5, 3: 1.0}, "k": 3, ("a", 1): [None, True, "x"], "t": torch.arange(6).reshape(2, 3),
           "h": torch.tensor([1.5], dtype=torch.bfloat16), "e": torch.empty(0, 4), "tup": (1, 2.5)}
    back = wire.decode(wire.encode(obj))
    assert back.keys() == obj.keys() and back["acc"] == {0: 0.5, 3: 1.0} and back[("a", 1)] == [None, True, "x"]
    assert back["tup"] == (1, 2.5) and back["k"] == 3
    for key in ("t", "h", "e"):
        assert back[key].dtype == obj[key].dtype and torch.equal(back[key], obj[key])
    assert wire.decode(wire.encode(np.int64(7))) == 7 and wire.decode(wire.encode(np.float32(0.5))) == 0.5
    with pytest.raises(TypeError, match="cannot send set"):
        wire.encode({1, 2})
    with pytest.raises(TypeError, match="dtype"):
        wire.encode(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="malformed"):
        wire.decode(b'{"__reduce__": 1}')
    with pytest.raises(ValueError, match="unknown tensor dtype"):
        wire.decode(b'{"~t": ["os.system", [1], ""]}')
