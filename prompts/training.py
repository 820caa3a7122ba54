"""Local prompt training and evaluation for one client (plaintext).

Why: each SecFPP round a client trains its domain prompt ``D`` and class prompt ``L`` for ``E`` local
epochs on its own data, then ``D`` goes to the MPC layer. :class:`BatchStepper` is one client's batch stream
and optimiser, stepped from outside (DP-FPL trains clients in lockstep); :func:`train_local` runs one
client's epochs on it. Training reads cached image features (see
``prompts.features``) so a step costs one batched text-encoder pass; an ``OnTheFlyFeatures`` source gives the
uncached baseline with the same batches. Runs are deterministic given ``seed``.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, Union

import torch
import torch.nn.functional as F

from prompts.backbone import Backbone
from prompts.learner import PromptLearner


class FeatureSource(Protocol):
    def __len__(self) -> int: ...

    def batch(self, index: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor: ...


Features = Union[torch.Tensor, FeatureSource]  # (N, E) or (N, V, E) tensor, or a source


def _as_views(features: torch.Tensor) -> torch.Tensor:
    if features.ndim == 2:
        return features[:, None]
    if features.ndim != 3:
        raise ValueError(f"features must be (N, E) or (N, V, E), got {tuple(features.shape)}")
    return features


def _batch(features: Features, index: torch.Tensor, views: torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        f = _as_views(features)
        return f[index.to(f.device), views.to(f.device)].to(device)
    return features.batch(index, views).to(device)


def _make_optimizer(params: list[torch.nn.Parameter], optimizer: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")


class BatchStepper:
    """One client's minibatch stream and optimiser, driven one step at a time.

    Why: most methods train a client alone (:func:`train_local`), but DP-FPL trains all clients
    in lockstep, exchanging the shared prompt's gradient between backward and step. The stepper
    splits a step in two so the caller can rewrite gradients in between::

        loss = stepper.backward()   # next minibatch, forward, zero_grad, backward
        ...                         # read / replace p.grad
        stepper.step()              # optimiser step

    Batches: the stream is a sequence of epochs. Each epoch starts (lazily, at the first batch
    it serves) by drawing a fresh permutation and then one view index per sample from the
    stream's generator, in that order, and serves ``ceil(n / batch_size)`` batches (the last
    one shorter). When an epoch is used up the next batch starts a new one, so a caller that
    needs more steps than a client has batches (lockstep with a larger client) simply cycles.

    The stepper puts the learner in train mode; :meth:`close` puts it back in eval mode.
    """

    def __init__(self, learner: PromptLearner, features: Features, labels: torch.Tensor, *, lr: float = 0.02,
                 batch_size: int = 32, optimizer: str = "sgd", seed: int = 0,
                 device: str | torch.device | None = None, momentum: float = 0.9, weight_decay: float = 0.0,
                 balanced: bool = False, softmax: str = "all", absent_logit_scale: float | None = None) -> None:
        dev = torch.device(device) if device is not None else learner.backbone.device
        labels = torch.as_tensor(labels, dtype=torch.long)
        n = len(labels)
        if n == 0:
            raise ValueError("no training samples")
        if len(features) != n:
            raise ValueError(f"{len(features)} feature rows but {n} labels")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if int(labels.min()) < 0 or int(labels.max()) >= len(learner.classnames):
            raise ValueError(f"labels must lie in [0, {len(learner.classnames)})")
        self.learner = learner
        self.features = features
        self.device = dev
        self.n = n
        self.batch_size = batch_size
        self.n_views = _as_views(features).shape[1] if isinstance(features, torch.Tensor) else 1
        self.class_weight: torch.Tensor | None = None
        if balanced:
            counts = torch.bincount(labels, minlength=len(learner.classnames)).float()
            self.class_weight = torch.where(counts > 0, n / (counts.clamp(min=1) * int((counts > 0).sum())),
                                            0.0).to(dev)
        if softmax not in ("all", "seen"):
            raise ValueError(f"softmax must be 'all' or 'seen', got {softmax!r}")
        if absent_logit_scale is not None and (softmax != "seen" or not 0 <= absent_logit_scale <= 1):
            raise ValueError("absent_logit_scale needs softmax='seen' and a value in [0, 1]")
        # softmax="seen": the classes absent from this client's training split leave the softmax
        # (FedRS's restricted softmax), or with ``absent_logit_scale`` stay with scaled logits
        self.absent: torch.Tensor | None = None
        self.absent_logit_scale = absent_logit_scale
        if softmax == "seen":
            absent = torch.bincount(labels, minlength=len(learner.classnames)) == 0
            self.absent = absent.to(dev) if bool(absent.any()) else None
        self.params = [learner.domain_ctx, learner.class_ctx]
        self.optimizer = _make_optimizer(self.params, optimizer, lr, momentum, weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self._y = labels.to(dev)
        self._perm = torch.empty(0, dtype=torch.long)
        self._views = torch.empty(0, dtype=torch.long)
        self._pos = n  # no epoch drawn yet: the first batch starts one
        self.batch_len = 0  # samples in the last batch served
        learner.train()

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    @property
    def epoch_done(self) -> bool:
        """True when the current epoch has served its last batch (the next one starts a new epoch)."""
        return self._pos >= self.n

    def _next_index(self) -> torch.Tensor:
        if self.epoch_done:
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._views = torch.randint(self.n_views, (self.n,), generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def backward(self) -> float:
        """Forward and backward on the next minibatch; returns its (mean) loss. Gradients are fresh."""
        idx = self._next_index()
        x = _batch(self.features, idx, self._views[idx], self.device)
        loss = F.cross_entropy(self._restrict(self.learner(x)), self._y[idx.to(self.device)], weight=self.class_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.batch_len = len(idx)
        return float(loss.detach())

    def _restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits the softmax runs over: all, or (softmax="seen") without the absent classes
        (-inf: no probability, no gradient) or with their logits scaled (FedRS)."""
        if self.absent is None:
            return logits
        if self.absent_logit_scale is None:
            return logits.masked_fill(self.absent, float("-inf"))
        return torch.where(self.absent, logits * self.absent_logit_scale, logits)

    def step(self) -> None:
        """Optimiser step with whatever the parameters' ``.grad`` now hold."""
        self.optimizer.step()

    def close(self) -> None:
        """Wait for the device and put the learner back in eval mode."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.learner.eval()


def train_local(learner: PromptLearner, features: Features, labels: torch.Tensor, epochs: int = 1,
                lr: float = 0.02, batch_size: int = 32, optimizer: str = "sgd", seed: int = 0,
                device: str | torch.device | None = None, momentum: float = 0.9, weight_decay: float = 0.0,
                max_steps: int | None = None, balanced: bool = False, softmax: str = "all",
                absent_logit_scale: float | None = None) -> dict:
    """Train ``learner.domain_ctx`` and ``learner.class_ctx`` with cross-entropy for ``epochs`` epochs.

    ``features``: cached (N, E) / (N, V, E) features (a random view per sample and step when V > 1) or a
    source with ``batch(index, views)``. ``balanced`` weighs
    the loss by inverse class frequency, so the update of the shared prompt carries the client's
    domain rather than its label prior (label skew would otherwise dominate what SecPC clusters).
    ``softmax="seen"`` restricts the softmax to the classes of ``labels`` (FedRS), so the class
    prompts of absent classes get no gradient; ``absent_logit_scale`` is FedRS's scaled form.
    ``max_steps`` stops early. One :class:`BatchStepper` run for ``epochs`` full epochs. Returns
    {"loss" (mean of the last epoch), "epoch_losses", "steps", "seconds"}.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    stepper = BatchStepper(learner, features, labels, lr=lr, batch_size=batch_size, optimizer=optimizer,
                           seed=seed, device=device, momentum=momentum, weight_decay=weight_decay,
                           balanced=balanced, softmax=softmax, absent_logit_scale=absent_logit_scale)
    steps, epoch_losses = 0, []
    t0 = time.perf_counter()
    for _ in range(epochs):
        total, count = 0.0, 0
        for _ in range(stepper.steps_per_epoch):
            if max_steps is not None and steps >= max_steps:
                break
            loss = stepper.backward()
            stepper.step()
            total += loss * stepper.batch_len
            count += stepper.batch_len
            steps += 1
        if count:
            epoch_losses.append(total / count)
    stepper.close()
    return dict(loss=epoch_losses[-1] if epoch_losses else math.nan, epoch_losses=epoch_losses, steps=steps,
                seconds=time.perf_counter() - t0)


def log_prior(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Log of a client's training label prior, add-one smoothed (a class it has no image of keeps a
    finite prior): the post-hoc logit adjustment of Menon et al. (2021) with temperature 1."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=n_classes).double()
    return ((counts + 1) / (counts.sum() + n_classes)).log().float()


@torch.no_grad()
def logits(learner: PromptLearner, features: torch.Tensor, domain_only: torch.Tensor | None = None,
           prior: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the learned prompts on (clean view 0 of) ``features``. ``domain_only``: a bool mask
    of classes predicted with the domain prompt alone (``L[c] = 0``); ``prior``: log prior added."""
    f = _as_views(features)[:, 0].to(learner.backbone.device)
    if domain_only is None or not learner.class_specific or not bool(domain_only.any()):
        out = learner(f)  # a unified L serves every class alike
    else:
        saved = learner.class_ctx.detach().clone()
        learner.class_ctx[domain_only.to(saved.device)] = 0.0
        try:
            out = learner(f)
        finally:
            learner.class_ctx.copy_(saved)
    out = out.cpu()
    return out if prior is None else out + prior


@torch.no_grad()
def predict(learner: PromptLearner, features: torch.Tensor, domain_only: torch.Tensor | None = None,
            prior: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted class per sample (clean view 0 when features have views); see :func:`logits`."""
    return logits(learner, features, domain_only, prior).argmax(-1)


def evaluate(learner: PromptLearner, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the learned prompts."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) == 0:
        return math.nan
    return float((predict(learner, features) == labels).float().mean())


@torch.no_grad()
def zero_shot_classifier(backbone: Backbone, classnames: list[str], template: str = "a photo of a {}.") -> torch.Tensor:
    """Unit-norm text features (C, E) of hand-written class prompts."""
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}', got {template!r}")
    tokens = backbone.tokenizer([template.format(c.replace("_", " ")) for c in classnames]).to(backbone.device)
    return F.normalize(backbone.model.encode_text(tokens).float(), dim=-1)


@torch.no_grad()
def zero_shot_logits(backbone: Backbone, classnames: list[str], features: torch.Tensor,
                     prior: torch.Tensor | None = None, template: str = "a photo of a {}.") -> torch.Tensor:
    """CLIP zero-shot logits (``logit_scale.exp()`` times the cosines, as a learner's), log prior added."""
    w = zero_shot_classifier(backbone, classnames, template)
    f = F.normalize(_as_views(features)[:, 0].to(backbone.device).float(), dim=-1)
    out = (backbone.model.logit_scale.exp().float() * f @ w.T).cpu()
    return out if prior is None else out + prior


@torch.no_grad()
def zero_shot_accuracy(backbone: Backbone, classnames: list[str], features: torch.Tensor, labels: torch.Tensor,
                       template: str = "a photo of a {}.") -> float:
    """CLIP zero-shot accuracy: nearest class prompt to each (clean-view) image feature."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) == 0:
        return math.nan
    w = zero_shot_classifier(backbone, classnames, template)
    f = F.normalize(_as_views(features)[:, 0].to(backbone.device).float(), dim=-1)
    return float(((f @ w.T).argmax(-1).cpu() == labels).float().mean())
