import numpy as np
import pytest
import torch

from prompts.features import OnTheFlyFeatures, compute_features, encode_images
from prompts.learner import PromptLearner
from prompts.training import BatchStepper, evaluate, train_local, zero_shot_accuracy


def test_pretrained_tiny_clip_zero_shot_well_above_chance(tiny, digits_fed):
    per_domain: dict[str, list[float]] = {}
    for c in digits_fed.clients:
        f = compute_features(tiny, c.test_images)
        per_domain.setdefault(c.domain_name, []).append(zero_shot_accuracy(tiny, digits_fed.classnames, f, c.test_labels))
    means = {d: float(np.mean(v)) for d, v in per_domain.items()}
    assert min(means.values()) > 0.3, means  # chance is 0.1
    assert np.mean(list(means.values())) > 0.5, means


def test_local_training_improves_training_accuracy(tiny, digits_fed):
    c = next(c for c in digits_fed.clients if c.domain_name == "noisy-thick")
    f = compute_features(tiny, c.train_images)
    learner = PromptLearner(tiny, digits_fed.classnames)
    before = evaluate(learner, f, c.train_labels)
    out = train_local(learner, f, c.train_labels, epochs=5, lr=0.02, batch_size=32, seed=0)
    assert out["steps"] == 5 * -(-len(c.train_labels) // 32)
    assert evaluate(learner, f, c.train_labels) > before + 0.03
    assert out["epoch_losses"][-1] < out["epoch_losses"][0]


def test_training_is_deterministic_and_cache_equivalent(tiny, digits_fed):
    c = digits_fed.clients[3]
    imgs, y = c.train_images[:96], c.train_labels[:96]
    runs = []
    for feats in (compute_features(tiny, imgs), compute_features(tiny, imgs), OnTheFlyFeatures(tiny, imgs)):
        learner = PromptLearner(tiny, digits_fed.classnames)
        r = train_local(learner, feats, y, epochs=2, lr=0.02, batch_size=16, seed=7)
        runs.append((learner.get_domain_prompt(), learner.get_class_prompt(), r["loss"]))
    for d, l, loss in runs[1:]:
        assert torch.allclose(d, runs[0][0], atol=1e-5) and torch.allclose(l, runs[0][1], atol=1e-5)
        assert abs(loss - runs[0][2]) < 1e-5


def test_batch_stepper_cycles_epochs_exactly_as_train_local(tiny, digits_fed):
    # driven step by step past the end of an epoch, a stepper starts the next epoch with a fresh
    # permutation: 2 epochs' worth of steps are bit for bit train_local(epochs=2)
    c = digits_fed.clients[1]
    f = compute_features(tiny, c.train_images[:40], n_views=2, seed=3)
    y = c.train_labels[:40]
    ref = PromptLearner(tiny, digits_fed.classnames)
    out = train_local(ref, f, y, epochs=2, batch_size=16, seed=5)
    learner = PromptLearner(tiny, digits_fed.classnames)
    s = BatchStepper(learner, f, y, batch_size=16, seed=5)
    assert s.steps_per_epoch == 3
    sizes, losses = [], []
    for _ in range(2 * s.steps_per_epoch):
        losses.append(s.backward())
        sizes.append(s.batch_len)
        s.step()
    s.close()
    assert sizes == [16, 16, 8] * 2 and s.epoch_done and not learner.training
    assert torch.equal(learner.get_domain_prompt(), ref.get_domain_prompt())
    assert torch.equal(learner.get_class_prompt(), ref.get_class_prompt())
    assert out["epoch_losses"][1] == sum(l * n for l, n in zip(losses[3:], sizes[3:])) / 40


def test_feature_cache_views_and_disk(tiny, digits_fed, tmp_path):
    imgs = digits_fed.clients[0].train_images[:40]
    f = compute_features(tiny, imgs, n_views=3, seed=1, cache_dir=tmp_path)
    assert f.shape == (40, 3, tiny.embed_dim)
    assert torch.allclose(f[:, 0], encode_images(tiny, imgs), atol=1e-6)
    assert not torch.allclose(f[:, 1], f[:, 0], atol=1e-3)  # augmented views differ
    assert torch.allclose(f.norm(dim=-1), torch.ones(40, 3), atol=1e-5)
    assert len(list(tmp_path.glob("feat-*.pt"))) == 1
    again = compute_features(tiny, imgs, n_views=3, seed=1, cache_dir=tmp_path, use_memory=False)
    assert torch.equal(again, f.cpu())
    learner = PromptLearner(tiny, digits_fed.classnames)
    train_local(learner, f, digits_fed.clients[0].train_labels[:40], epochs=1, seed=0)  # multi-view training runs


def test_bad_training_inputs(random_tiny):
    learner = PromptLearner(random_tiny, ["a", "b"])
    f = torch.randn(4, 64)
    with pytest.raises(ValueError, match="labels"):
        train_local(learner, f, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="optimizer"):
        train_local(learner, f, torch.tensor([0, 1, 1, 0]), optimizer="lbfgs")
    with pytest.raises(ValueError, match="feature rows"):
        train_local(learner, f, torch.tensor([0, 1]))
