"""Issue 21's hierarchy made literal, on the real tiny CLIP and real digit scans.

* the restricted softmax (``softmax="seen"``, FedRS) gives the class prompts of classes absent
  from the training split no gradient, while the full softmax does, and FedRS's scaled form
  gives them a scaled one;
* the fallback predicts an unseen class with the domain prompt alone (``L[c] = 0``), leaves the
  seen classes' logits as they were and the learner's class prompts untouched;
* the log prior added to own-mix logits is the add-one smoothed training label prior.
"""

from __future__ import annotations

import torch

from prompts.features import compute_features
from prompts.learner import PromptLearner
from prompts.training import BatchStepper, log_prior, logits, train_local


def _client(tiny, digits_fed, absent=(3, 7)):
    c = digits_fed.clients[0]
    keep = ~torch.isin(c.train_labels, torch.tensor(absent))
    f = compute_features(tiny, c.train_images)[keep.numpy()]
    return f, c.train_labels[keep]


def test_restricted_softmax_gives_absent_classes_no_gradient(tiny, digits_fed):
    f, y = _client(tiny, digits_fed)
    grads = {}
    for softmax, scale in (("all", None), ("seen", None), ("seen", 0.5)):
        learner = PromptLearner(tiny, digits_fed.classnames)
        stepper = BatchStepper(learner, f, y, batch_size=64, seed=0, softmax=softmax, absent_logit_scale=scale)
        stepper.backward()
        g = learner.class_ctx.grad.detach().clone()
        grads[(softmax, scale)] = g.flatten(1).norm(dim=1)
        stepper.close()
    counts = torch.bincount(y, minlength=10)
    absent, present = counts == 0, counts > 0
    assert bool(absent[[3, 7]].all()) and int(present.sum()) >= 6
    assert torch.all(grads[("all", None)][absent] > 0)  # the full softmax pushes absent classes away
    assert torch.all(grads[("seen", None)][absent] == 0)  # restricted: exactly no gradient
    assert torch.all(grads[("seen", None)][present] > 0)
    assert torch.all(grads[("seen", 0.5)][absent] > 0)  # FedRS's scaled form keeps a scaled one

    learner = PromptLearner(tiny, digits_fed.classnames)
    train_local(learner, f, y, epochs=2, batch_size=32, seed=1, softmax="seen")
    L = learner.get_class_prompt()
    assert torch.all(L[absent] == 0) and torch.all(L[present].flatten(1).norm(dim=1) > 0)


def test_fallback_predicts_unseen_classes_with_the_domain_prompt_alone(tiny, digits_fed):
    f, y = _client(tiny, digits_fed)
    learner = PromptLearner(tiny, digits_fed.classnames)
    train_local(learner, f, y, epochs=2, batch_size=32, seed=1)  # full softmax: absent rows move too
    L = learner.get_class_prompt()
    unseen = torch.bincount(y, minlength=10) == 0
    assert torch.all(L[unseen].flatten(1).norm(dim=1) > 0)
    x = compute_features(tiny, digits_fed.clients[0].test_images)
    mixed = logits(learner, x, domain_only=unseen)
    assert torch.equal(learner.get_class_prompt(), L)  # restored
    plain = logits(learner, x)
    assert torch.allclose(mixed[:, ~unseen], plain[:, ~unseen], atol=1e-5)
    with torch.no_grad():
        learner.class_ctx.zero_()  # D alone for every class
    d_only = logits(learner, x)
    assert torch.allclose(mixed[:, unseen], d_only[:, unseen], atol=1e-5)
    assert not torch.allclose(plain[:, unseen], d_only[:, unseen], atol=1e-3)


def test_log_prior_is_the_smoothed_training_label_prior():
    y = torch.tensor([0, 0, 0, 1])
    p = log_prior(y, 3).exp()
    assert torch.allclose(p, torch.tensor([4 / 7, 2 / 7, 1 / 7]))
