"""Attack metrics: ROC, AUC, TPR at a fixed low FPR, balanced accuracy, bootstrap CIs.

Why TPR at 1% / 0.1% FPR: an attack that is confidently right about a few members is a privacy
failure even at AUC ~ 0.5 (Carlini et al., "Membership inference from first principles");
AUC alone averages those few away. The interpolation is the conservative one: the largest TPR
whose FPR does not exceed the target.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """Largest true-positive rate at a threshold whose false-positive rate is <= ``fpr``."""
    f, t, _ = roc_curve(is_member, scores)
    ok = f <= fpr
    return float(t[ok].max()) if ok.any() else 0.0


def attack_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    """AUC, TPR at 1% and 0.1% FPR, and the best balanced accuracy over thresholds
    (higher score = "member")."""
    scores, is_member = np.asarray(scores, float), np.asarray(is_member, bool)
    f, t, _ = roc_curve(is_member, scores)
    return {
        "auc": float(roc_auc_score(is_member, scores)),
        "tpr_at_1fpr": tpr_at_fpr(scores, is_member, 0.01),
        "tpr_at_01fpr": tpr_at_fpr(scores, is_member, 0.001),
        "balanced_acc": float(np.max((t + 1 - f) / 2)),
        "members": int(is_member.sum()),
        "non_members": int((~is_member).sum()),
    }


def bootstrap_ci(scores: np.ndarray, is_member: np.ndarray, n: int = 200, level: float = 0.95,
                 seed: int = 0, groups: np.ndarray | None = None) -> dict[str, list[float]]:
    """Percentile CIs of AUC and TPR@1%FPR.

    Without ``groups``: members and non-members resampled separately (stratified). With
    ``groups`` (one id per sample, e.g. the victim client): whole groups are resampled, because
    one prompt's scores are correlated (a class prompt moves all its class's samples together)
    and a sample-level bootstrap would then be too narrow.
    """
    scores, is_member = np.asarray(scores, float), np.asarray(is_member, bool)
    rng = np.random.default_rng(seed)
    if groups is None:
        pos, neg = np.flatnonzero(is_member), np.flatnonzero(~is_member)
        draw = lambda: np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])  # noqa: E731
    else:
        members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        draw = lambda: np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])  # noqa: E731
    aucs, tprs = [], []
    for _ in range(n):
        idx = draw()
        s, m = scores[idx], is_member[idx]
        if m.all() or not m.any():
            continue
        aucs.append(roc_auc_score(m, s))
        tprs.append(tpr_at_fpr(s, m, 0.01))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"auc": [float(np.percentile(aucs, lo)), float(np.percentile(aucs, hi))],
            "tpr_at_1fpr": [float(np.percentile(tprs, lo)), float(np.percentile(tprs, hi))]}
