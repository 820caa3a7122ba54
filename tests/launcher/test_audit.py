"""The audit's attacks on cases whose answer is known, each able to fail.

* a prompt trained to memorise its members (random labels: only memorisation fits them) is
  caught by LiRA at TPR@1%FPR far above the 1% of chance, and by the loss threshold;
* a prompt that never saw the members scores AUC ~ 0.5, the bootstrap CI covering 0.5;
* on a real 3-party world, the leaky transcript controls are flagged and the real protocol is
  not, and a co-member of a 2-cluster reads the other member's prompt while min 3 stops it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from launcher.audit import metrics, mia
from launcher.audit.shadows import target_points, train_shadows

N, EPOCHS, LR, SHADOWS = 100, 40, 0.6, 4


@pytest.fixture(scope="module")
def case():
    """Client 0 of the default federation: 100 members and 100 non-members (random subsets of
    its train and held-out splits, random labels), a memorising prompt, one trained on other
    samples, and shadows on random halves."""
    from launcher.config import load_config
    from launcher.run import build_clients
    from prompts.training import train_local

    cfg = load_config("launcher/configs/default.yaml",
                      [f"rounds={EPOCHS}", "train.epochs=1", f"train.lr={LR}", "train.batch_size=128"])
    (c,), _, _ = build_clients(cfg, [0])
    g = torch.Generator().manual_seed(0)
    tr = torch.randperm(len(c.train_y), generator=g)
    te = torch.randperm(len(c.test_y), generator=g)[:N]
    y = torch.randint(0, 10, (3 * N,), generator=g)
    train_x = c.train_x[:, 0]
    victim = SimpleNamespace(cid=0, learner=c.learner, train_x=train_x[tr[:N]], train_y=y[:N],
                             test_x=c.test_x[te], test_y=y[N:2 * N])
    feats, labels, member = target_points(victim)
    init = {k: v.clone() for k, v in c.learner.state_dict().items()}

    def trained(x, yy):
        c.learner.load_state_dict(init)
        train_local(c.learner, x, yy, epochs=EPOCHS, lr=LR, batch_size=128, seed=1)
        out = mia.prompt_logits(c.learner, feats)
        c.learner.load_state_dict(init)
        return out

    memo = trained(victim.train_x, victim.train_y)
    unseen = trained(train_x[tr[N:2 * N]], y[2 * N:])  # other samples of the same client
    sh = train_shadows(victim, cfg, SHADOWS, class_prompt=True, seed=0)
    conf = np.stack([mia.logit_confidence(sh.logits[s], labels) for s in range(sh.count)])

    def lira(logits):
        return mia.lira_online(mia.logit_confidence(logits, labels), conf, sh.is_in)

    return SimpleNamespace(labels=labels, member=member, memo=memo, unseen=unseen, lira=lira, shadows=sh)


def test_memorising_prompt_is_detected(case):
    m = metrics.attack_metrics(case.lira(case.memo), case.member)
    assert m["members"] == N and m["non_members"] == N and case.shadows.count == SHADOWS
    assert m["tpr_at_1fpr"] >= 0.08, m  # chance is 0.01
    assert metrics.attack_metrics(mia.loss_scores(case.memo, case.labels), case.member)["auc"] > 0.65
    shadow = mia.shadow_attack(case.memo, case.labels, case.shadows.logits, case.shadows.is_in)
    assert metrics.attack_metrics(shadow, case.member)["auc"] > 0.6


def test_prompt_that_never_saw_the_members_scores_chance(case):
    for scores in (case.lira(case.unseen), mia.loss_scores(case.unseen, case.labels)):
        m = metrics.attack_metrics(scores, case.member)
        ci = metrics.bootstrap_ci(scores, case.member)
        assert ci["auc"][0] <= 0.5 <= ci["auc"][1], (m, ci)
        assert abs(m["auc"] - 0.5) < 0.1


def test_metrics_on_exact_cases():
    member = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    perfect = metrics.attack_metrics(member.astype(float), member)
    assert perfect["auc"] == 1.0 and perfect["tpr_at_1fpr"] == 1.0 and perfect["balanced_acc"] == 1.0
    # 10 members scored above every non-member, the rest indistinguishable: TPR@0.1%FPR = 5%
    scores = np.r_[np.full(10, 2.0), np.zeros(190), np.zeros(200)]
    assert metrics.attack_metrics(scores, member)["tpr_at_01fpr"] == pytest.approx(0.05)


@pytest.mark.timeout(300)
def test_transcript_controls_flagged_real_not_and_cluster_of_two_leaks():
    from launcher.audit.transcript import run_audit

    audit = run_audit(iters=1)
    v = audit.verdicts
    assert v["real"]["plaintext_hits"] == 0 and v["real"]["opened_values"] == 0
    assert not audit.real_flagged, v["real"]
    assert audit.leaky_flagged, v
    assert v["reduce_reveal"]["plaintext_hits"] > 0  # the victim's output sits in gloo's reduce buffers
    assert v["open_distance"]["opened_values"] > 0
    assert {"lloyd", "criterion", "aggregate", "reveal"} <= set(v["real"]["phases"])
    assert audit.cluster_size["min2"]["recovered"] and audit.cluster_size["min2"]["max_abs_error"] < 1e-3
    assert not audit.cluster_size["min3"]["recovered"]
    assert audit.as_dict()["leaky_flagged"] is True and audit.as_dict()["real_flagged"] is False


@pytest.mark.timeout(400)
def test_audit_command_on_a_real_run_directory(tmp_path):
    """The command end to end on what `launcher run` writes (checkpoints, typed metrics rows,
    config record), so a change to the run directory's format cannot silently break it."""
    import json
    import subprocess
    import sys

    run = tmp_path / "run"
    base = [sys.executable, "-m", "launcher"]
    done = subprocess.run(base + ["run", "--config", "launcher/configs/default.yaml", "method=clustered", "rounds=2",
                                  "train.epochs=1", "evaluation.gather=true", "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run(base + ["audit", "--run", str(run), "--victims", "0", "--shadows", "2", "--bootstrap", "50",
                                  "--no-transcript"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((run / "audit" / "results.json").read_text())
    (row,) = res["rows"]
    assert row["method"] == "clustered" and row["shadows"] == 2 and row["members"] > 0
    for key in ("mia_auc", "mia_tpr_at_1fpr", "mia_tpr_at_01fpr", "steal_cosine", "acc"):
        assert 0.0 <= row[key] <= 1.0 or key == "steal_cosine", (key, row[key])
