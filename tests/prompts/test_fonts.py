"""The font benchmark's dataset: deterministic glyphs, no tofu, separable domains, few-shot skewed clients."""

import warnings

import numpy as np
import pytest
import torch

from prompts.data import dirichlet_counts, dirichlet_proportions, fonts, fonts_federation


def test_render_deterministic_and_seeded():
    labels, ids = np.arange(36), np.arange(36) + 123
    a = fonts.render("handwriting", labels, ids)
    assert a.shape == (36, 3, fonts.IMAGE_SIZE, fonts.IMAGE_SIZE) and a.dtype == torch.uint8
    assert a.numpy().tobytes() == fonts.render("handwriting", labels, ids).numpy().tobytes()
    assert torch.equal(a[5:9], fonts.render("handwriting", labels[5:9], ids[5:9]))  # a subset draws the same
    assert not torch.equal(a, fonts.render("handwriting", labels, ids + 1000))  # other ids, other jitter


def test_every_class_renders_in_every_family():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped family would warn
        kept = {d: fonts.families(d) for d in fonts.DOMAIN_NAMES}
    for d, paths in kept.items():
        assert len(paths) == len(fonts.DOMAINS[d]) >= 5, d
        for p in paths:
            assert fonts.missing_glyphs(p) == "", (d, p.name)
            for i, ch in enumerate(fonts.CHARS):
                g = fonts.render_glyph(p, ch, (0, i)).astype(float)
                assert g.max() - g.min() > 100, (d, p.name, ch)  # ink on paper, not a blank glyph


def test_missing_glyph_is_detected_and_family_skipped():
    cjk = "\u4e2d"  # no family here has Chinese
    assert fonts.missing_glyphs(fonts.font_path("caveat"), "A" + cjk) == cjk
    with pytest.warns(UserWarning, match="no glyph"), pytest.raises(ValueError, match="no family"):
        fonts.families("display", fonts.CHARS + cjk)
    # Cyrillic: the classic DejaVu/STIX fonts have it, the Computer Modern ones do not -> skipped, rest kept
    with pytest.warns(UserWarning) as rec:
        kept = fonts.families("classic", "A\u0416")
    assert sorted(str(w.message).split("'")[1] for w in rec) == ["mpl:cmr10.ttf", "mpl:cmss10.ttf"]
    assert 0 < len(kept) < len(fonts.DOMAINS["classic"]) and all(not p.name.startswith("cm") for p in kept)


def _style_features(x: torch.Tensor) -> np.ndarray:
    """Ink-independent style cues: gradient-orientation histograms per 8x8 cell, and ink coverage."""
    g = x[:, 0].float() / 255.0
    g = (g - g.amin((1, 2), keepdim=True)) / (g.amax((1, 2), keepdim=True) - g.amin((1, 2), keepdim=True) + 1e-6)
    gy, gx = torch.gradient(g, dim=(1, 2))
    mag, ang = torch.hypot(gx, gy), torch.atan2(gy, gx) % np.pi
    bins = (ang / np.pi * 8).long().clamp(max=7)
    hist = torch.zeros(len(g), 8, 4, 4)
    cell = (torch.arange(fonts.IMAGE_SIZE) // 8)
    idx = bins * 16 + cell[:, None] * 4 + cell[None, :]
    hist.view(len(g), -1).scatter_add_(1, idx.flatten(1), mag.flatten(1))
    hist = hist / (hist.sum((1, 2, 3), keepdim=True) + 1e-6)
    return torch.cat([hist.flatten(1), (g < 0.5).float().mean((1, 2))[:, None]], 1).numpy()


def test_domains_separable_by_a_linear_classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    labels = np.tile(np.arange(36), 3)
    feats = {d: _style_features(fonts.render(d, labels, 900_000 + np.arange(len(labels)))) for d in fonts.DOMAIN_NAMES}
    # the clients' families (fonts.pool); all six: the plain text styles (classic, serif, monospace) are
    # close cousins, so "well above" is 2.2x chance; the benchmark's four unseen domains: twice chance
    # (measured: 0.41 and 0.58)
    for doms, factor in ((fonts.DOMAIN_NAMES, 2.2), (fonts.UNSEEN_DOMAINS, 2.0)):
        x, y = np.concatenate([feats[d] for d in doms]), np.repeat(np.arange(len(doms)), len(labels))
        acc = cross_val_score(LogisticRegression(C=10.0, max_iter=3000), x, y, cv=3).mean()
        assert acc > factor / len(doms), (doms, acc)


def test_dirichlet_counts_exact_per_class():
    p = dirichlet_proportions(4, 36, 0.3, np.random.default_rng(0))
    c = dirichlet_counts([32] * 36, p)
    assert c.shape == (4, 36) and (c >= 0).all() and (c.sum(0) == 32).all()
    assert np.allclose(dirichlet_proportions(3, 5, float("inf"), np.random.default_rng(0)), 1 / 3)


def test_fonts_federation_shots_and_skew():
    k, shots = 4, 4
    fed = fonts_federation(domains=["techno", "display"], n_domains=2, clients_per_domain=k, alpha=0.3, seed=1, shots=shots,
                           val_per_class=1, test_per_class=2, domain_test_per_class=1, min_samples=10,
                           domain_val_per_class=2)
    assert fed.n_clients == 2 * k and fed.true_domains == [0] * k + [1] * k
    for d in range(2):
        cs = fed.clients[d * k:(d + 1) * k]
        train = np.stack([np.bincount(c.train_labels.numpy(), minlength=36) for c in cs])
        assert (train.sum(0) == shots * k).all()  # the shots budget holds per class, before the skew
        share = train / train.sum(1, keepdims=True)
        assert np.abs(share - 1 / 36).sum(1).mean() / 2 > 0.3  # strong label skew (total variation)
        for c, tr in zip(cs, train):
            te = np.bincount(c.test_labels.numpy(), minlength=36)
            assert tr.sum() >= 10 and ((tr == 0) <= (te <= 2)).all()  # test follows the client's classes
            assert (np.bincount(c.domain_test_labels.numpy(), minlength=36) == 1).all()  # balanced, all classes
            assert (np.bincount(c.domain_val_labels.numpy(), minlength=36) == 2).all()
            assert len(c.val_labels) > 0 and c.train_images.shape[1:] == (3, 32, 32)
    one = fonts_federation(domains=["techno", "display"], n_domains=2, clients_per_domain=k, alpha=0.3, seed=1, shots=shots,
                           val_per_class=1, test_per_class=2, domain_test_per_class=1, min_samples=10, only=[5])
    assert [c.client_id for c in one.clients] == [5]
    assert torch.equal(one.clients[0].train_images, fed.clients[5].train_images)
    assert not torch.equal(fed.clients[0].domain_test_images, fed.clients[1].domain_test_images)



def test_pretraining_and_client_families_are_disjoint():
    """An unseen domain's first families are the backbone's; its clients never draw them."""
    for d in fonts.UNSEEN_DOMAINS:
        pre, cli = fonts.pool(d, "pretrain"), fonts.pool(d, "clients")
        assert len(pre) == fonts.PRETRAIN_FAMILIES and len(cli) >= 3 and not set(pre) & set(cli)
        assert set(pre) | set(cli) == set(fonts.families(d))
    for d in fonts.PRETRAIN_DOMAINS:
        assert fonts.pool(d, "pretrain") == fonts.pool(d, "clients") == fonts.families(d)
    labels, ids = np.zeros(8, dtype=int), np.arange(8)
    assert not torch.equal(fonts.render("serif", labels, ids), fonts.render("serif", labels, ids, "pretrain"))
    with pytest.raises(ValueError, match="part"):
        fonts.pool("serif", "test")
