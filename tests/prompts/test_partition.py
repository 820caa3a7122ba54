import math

import numpy as np
import torch
import pytest

from prompts.data.partition import label_distribution, partition


def _data(n_per=(400, 300, 500), n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    domains = np.concatenate([np.full(n, d) for d, n in enumerate(n_per)])
    labels = rng.integers(0, n_classes, size=len(domains))
    return domains, labels


def test_each_sample_at_most_once_and_domain_pure():
    domains, labels = _data()
    clients = partition(domains, labels, clients_per_domain=3, alpha=0.3, seed=1, min_samples=15)
    assert len(clients) == 9 and [c.client_id for c in clients] == list(range(9))
    assert [c.domain for c in clients] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    allidx = np.concatenate([np.concatenate([c.train_idx, c.test_idx]) for c in clients])
    assert len(allidx) == len(np.unique(allidx)) == len(domains)  # every sample used, exactly once
    for c in clients:
        assert (domains[c.train_idx] == c.domain).all() and (domains[c.test_idx] == c.domain).all()
        assert len(c.train_idx) + len(c.test_idx) >= 15


def test_seeded_reproducibility():
    domains, labels = _data()
    a = partition(domains, labels, 2, 0.5, seed=3)
    b = partition(domains, labels, 2, 0.5, seed=3)
    c = partition(domains, labels, 2, 0.5, seed=4)
    assert all(np.array_equal(x.train_idx, y.train_idx) and np.array_equal(x.test_idx, y.test_idx) for x, y in zip(a, b))
    assert any(not np.array_equal(x.train_idx, y.train_idx) for x, y in zip(a, c))


def _skew(alpha, seeds=range(5)):
    domains, labels = _data((2000, 2000))
    tv = []
    for s in seeds:
        for c in partition(domains, labels, 4, alpha, seed=s, min_samples=5):
            p = label_distribution(labels[np.concatenate([c.train_idx, c.test_idx])], 10)
            tv.append(0.5 * np.abs(p - 0.1).sum())
    return float(np.mean(tv))


def test_label_skew_increases_as_alpha_decreases():
    s = [_skew(a) for a in (math.inf, 10.0, 1.0, 0.1)]
    assert s[0] < 0.05 and s[0] < s[1] < s[2] < s[3], s


def test_train_test_distributions_match():
    domains, labels = _data((3000,))
    for c in partition(domains, labels, 3, 0.5, seed=0, test_fraction=0.25):
        tr = np.bincount(labels[c.train_idx], minlength=10)
        te = np.bincount(labels[c.test_idx], minlength=10)
        expected = 0.25 * (tr + te)
        assert np.all(np.abs(te - expected) <= 1.0)  # stratified: off by rounding only
        assert abs(len(c.test_idx) / (len(c.train_idx) + len(c.test_idx)) - 0.25) < 0.02


def test_min_samples_and_errors():
    domains, labels = _data((60,))
    with pytest.raises(ValueError, match="fewer than"):
        partition(domains, labels, 4, 0.5, min_samples=20)
    with pytest.raises(ValueError, match="alpha"):
        partition(domains, labels, 2, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        partition(domains, labels, 2, -1.0)
    with pytest.raises(ValueError, match="Dirichlet draws"):
        partition(domains, labels, 3, 0.01, min_samples=19, max_tries=5)
    with pytest.raises(ValueError, match="equal length"):
        partition(domains, labels[:-1], 2, 0.5)
    for c in partition(domains, labels, 3, 0.5, min_samples=15, seed=2):
        assert len(c.train_idx) + len(c.test_idx) >= 15


def test_few_shot_keeps_at_most_shots_per_class_and_is_seeded():
    from prompts.data.federation import digits_federation

    fed = digits_federation(n_domains=2, clients_per_domain=2, alpha=5.0, seed=0, min_samples=20, test_fraction=0.25)
    few = fed.few_shot(3, seed=1)
    for full, c in zip(fed.clients, few.clients):
        counts = np.bincount(c.train_labels.numpy(), minlength=10)
        full_counts = np.bincount(full.train_labels.numpy(), minlength=10)
        assert (counts == np.minimum(full_counts, 3)).all()
        assert len(c.train_images) == len(c.train_labels)
        assert torch.equal(c.test_labels, full.test_labels)  # test sets untouched
    again = fed.few_shot(3, seed=1)
    assert all(torch.equal(a.train_images, b.train_images) for a, b in zip(few.clients, again.clients))
    with pytest.raises(ValueError, match="shots"):
        fed.few_shot(0)
