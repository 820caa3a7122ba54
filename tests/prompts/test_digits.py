import numpy as np
import pytest
import torch

from prompts.data import digits


def test_render_deterministic_and_subset_consistent():
    for d in range(len(digits.DOMAIN_NAMES)):
        a = digits.render(np.arange(50), d)
        assert a.shape == (50, 3, 32, 32) and a.dtype == torch.uint8
        assert torch.equal(a, digits.render(np.arange(50), d))
        assert torch.equal(a[10:20], digits.render(np.arange(10, 20), d))


def test_domains_clearly_different():
    imgs = [digits.render(np.arange(200), d).float() for d in range(len(digits.DOMAIN_NAMES))]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert (imgs[i] - imgs[j]).abs().mean() > 20, (digits.DOMAIN_NAMES[i], digits.DOMAIN_NAMES[j])


def test_split_scans_disjoint_and_errors():
    pre, fed = digits.split_scans(0.4)
    assert len(np.intersect1d(pre, fed)) == 0 and len(pre) + len(fed) == 1797
    with pytest.raises(ValueError):
        digits.split_scans(1.5)
    with pytest.raises(ValueError, match="unknown"):
        digits.render([0], 99)


def test_digits_federation_shape(digits_fed):
    assert digits_fed.n_clients == 6 and digits_fed.classnames == digits.CLASSNAMES
    assert digits_fed.true_domains == [0, 0, 1, 1, 2, 2]
    for c in digits_fed.clients:
        assert c.domain_name == digits.DOMAIN_NAMES[c.domain]
        assert len(c.train_images) == len(c.train_labels) >= 20 and len(c.test_images) == len(c.test_labels) > 0


def test_a_rank_builds_only_its_own_clients(digits_fed):
    """``only=`` gives exactly the full federation's clients, drawing only their images."""
    from prompts.data import digits_federation

    part = digits_federation(n_domains=3, clients_per_domain=2, alpha=0.5, seed=0, min_samples=20,
                             test_fraction=0.25, only=[4, 1])
    assert sorted(c.client_id for c in part.clients) == [1, 4]
    for cid in (1, 4):
        a, b = digits_fed.client(cid), part.client(cid)
        assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    with pytest.raises(KeyError):
        part.client(0)
