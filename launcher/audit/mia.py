"""Membership-inference attacks on a prompt's outputs (logits over the classes, per sample).

Three attacks, weakest to strongest assumptions about the attacker:

* :func:`loss_scores` - loss/confidence threshold (Yeom et al.): members have lower loss;
* :func:`shadow_attack` - DP-FPL's anchor attack (Shokri et al., as DP-FPL evaluates it):
  shadow prompts' softmax outputs on samples they did / did not train on teach one attack
  classifier *per class*, which then labels the target prompt's outputs;
* :func:`lira_online` - LiRA, online variant (Carlini et al. 2022): per sample, Gaussians of the
  shadows' logit-scaled confidence with the sample IN and OUT of their training half; the score
  is the likelihood ratio of the target's confidence. With few shadows the variances are
  pooled over samples ("global variance"), as the paper recommends below 64 shadows.

Every function returns "higher = more likely a member".
"""

from __future__ import annotations

import numpy as np
import torch


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy loss of each sample."""
    return log_softmax(np.asarray(logits, float))[np.arange(len(labels)), labels]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y - log(1 - p_y)``, computed stably from logits: LiRA's statistic, close to Gaussian."""
    logits = np.asarray(logits, float)
    idx = np.arange(len(labels))
    true = logits[idx, labels]
    others = logits.copy()
    others[idx, labels] = -np.inf
    m = others.max(-1)
    return true - (m + np.log(np.exp(others - m[:, None]).sum(-1)))


def lira_online(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """LiRA scores. ``target``: (N,) statistic of the audited prompt; ``shadow``: (S, N) of the
    shadows; ``shadow_in``: (S, N) bool, sample n in shadow s's training half."""
    shadow, shadow_in = np.asarray(shadow, float), np.asarray(shadow_in, bool)
    n_in, n_out = shadow_in.sum(0), (~shadow_in).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError("every sample needs at least one IN and one OUT shadow; train more shadows")
    mu_in = (shadow * shadow_in).sum(0) / n_in
    mu_out = (shadow * ~shadow_in).sum(0) / n_out
    var_in = ((shadow - mu_in) ** 2)[shadow_in].mean() + 1e-6  # global variances
    var_out = ((shadow - mu_out) ** 2)[~shadow_in].mean() + 1e-6
    ll_in = -0.5 * (target - mu_in) ** 2 / var_in - 0.5 * np.log(var_in)
    ll_out = -0.5 * (target - mu_out) ** 2 / var_out - 0.5 * np.log(var_out)
    return ll_in - ll_out


def shadow_attack(target_logits: np.ndarray, labels: np.ndarray, shadow_logits: np.ndarray,
                  shadow_in: np.ndarray, seed: int = 0) -> np.ndarray:
    """Shokri-style attack, one classifier per true class, on the sorted softmax vector.

    ``shadow_logits``: (S, N, C); the attack trains on every (shadow, sample) pair of a class
    and scores the target's outputs on that class's samples. Sorting the probabilities makes
    the classifier see "how peaked", not which wrong class - the feature DP-FPL's attack keys on.
    """
    from sklearn.linear_model import LogisticRegression

    def feats(logits: np.ndarray) -> np.ndarray:
        lp = log_softmax(logits)
        true = lp[np.arange(len(labels)), labels][:, None]
        return np.concatenate([np.sort(lp, -1)[..., ::-1], true], -1)

    S, N, C = shadow_logits.shape
    target_f = feats(np.asarray(target_logits, float))
    shadow_f = np.stack([feats(np.asarray(shadow_logits[s], float)) for s in range(S)])  # S, N, F
    out = np.zeros(N)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        X = shadow_f[:, idx].reshape(-1, shadow_f.shape[-1])
        y = shadow_in[:, idx].reshape(-1)
        if y.all() or (~y).all():
            continue  # no contrast for this class: score 0 (uninformative)
        clf = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(X, y)
        out[idx] = clf.decision_function(target_f[idx])
    return out


def prompt_logits(learner: torch.nn.Module, features: torch.Tensor) -> np.ndarray:
    """(N, C) logits of a prompt learner on cached (clean-view) image features."""
    with torch.no_grad():
        f = (features if features.dim() == 2 else features[:, 0]).to(learner.backbone.device)
        return learner(f).cpu().double().numpy()
