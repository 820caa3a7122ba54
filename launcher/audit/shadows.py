"""Shadow prompts for LiRA and DP-FPL's attack: trained on random halves of a victim's target points.

The target points are the victim's members (train split) and non-members (held-out split).
Shadow s trains a fresh prompt, from the same public initialisation as every client, on a
random half of them (each sample IN exactly half of the shadows, so every sample has IN and
OUT statistics however few shadows there are) with the victim's local recipe (optimiser, learning rate, batch size,
class-balanced loss) for as many epochs as the victim trained in total (``rounds x
train.epochs``); whether the class prompt is learned follows the audited method (PromptFL has
none). Each sample is IN about half the shadows: the online LiRA setting. Training is on
cached features, so a shadow costs about a second.

Shadows model an attacker who knows the recipe but not the federation; they are shared by
every method with the same data and class-prompt setting (the attacker's shadows do not
depend on the victim's defence), which makes the comparison between methods like-for-like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from launcher.audit.mia import prompt_logits
from launcher.config import Config


@dataclass
class Shadows:
    logits: np.ndarray  # (S, N, C) each shadow's logits on every target point
    is_in: np.ndarray  # (S, N) bool: sample n in shadow s's training half

    @property
    def count(self) -> int:
        return int(self.logits.shape[0])


def target_points(client) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Clean-view features, labels and membership of a victim's members then non-members."""
    train = client.train_x if client.train_x.dim() == 2 else client.train_x[:, 0]
    feats = torch.cat([train, client.test_x])
    labels = torch.cat([client.train_y, client.test_y]).numpy()
    member = np.r_[np.ones(len(client.train_y), bool), np.zeros(len(client.test_y), bool)]
    return feats, labels, member


def train_shadows(client, cfg: Config, count: int, class_prompt: bool, seed: int = 0) -> Shadows:
    """``count`` shadows of one victim (the victim's learner is used as scratch, then restored)."""
    from prompts.training import train_local

    learner = client.learner
    saved = {k: v.clone() for k, v in learner.state_dict().items()}
    feats, labels, _ = target_points(client)
    y = torch.as_tensor(labels)
    rng = np.random.default_rng([seed, client.cid, int(class_prompt)])
    n = len(labels)
    if count < 2 or count % 2:
        raise ValueError(f"need an even number of shadows >= 2, got {count}")
    plan = rng.random((count, n)).argsort(0) < count // 2  # column n: which shadows hold sample n
    logits, is_in = [], []
    try:
        for half in plan:
            with torch.no_grad():
                learner.domain_ctx.copy_(learner.domain_init.to(learner.domain_ctx))
                learner.class_ctx.zero_()
            learner.class_ctx.requires_grad_(class_prompt)
            idx = torch.from_numpy(np.flatnonzero(half))
            train_local(learner, feats[idx], y[idx], epochs=cfg.rounds * cfg.train.epochs, lr=cfg.train.lr,
                        batch_size=cfg.train.batch_size, optimizer=cfg.train.optimizer,
                        balanced=cfg.train.balanced, softmax=cfg.train.softmax,
                        absent_logit_scale=cfg.train.absent_logit_scale, seed=int(rng.integers(2**31)))
            logits.append(prompt_logits(learner, feats))
            is_in.append(half)
    finally:
        learner.class_ctx.requires_grad_(True)
        learner.load_state_dict(saved)
    return Shadows(np.stack(logits), np.stack(is_in))
