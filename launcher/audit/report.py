"""The audit's outputs: ``results.json`` (one row per method x epsilon, per-seed rows inside),
``audit.md`` (tables and how to read them) and ``privacy_utility.png``.

Scores of every victim of every seed are pooled into one ROC per (method, epsilon, view,
attack): members and non-members are each victim's own, so pooling only adds samples. The
headline ``mia_*`` fields are the release view's LiRA (the strongest attack); ``training_view``
holds the same attacks against the observer's reconstruction.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from launcher.audit.metrics import attack_metrics, bootstrap_ci
from launcher.methods import get as get_method

ATTACKS = ("lira", "loss", "dpfpl_shadow")
VIEWS = ("release", "training_view")


def _pooled(recs: list[dict[str, Any]], view: str, attack: str) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([r[view][attack] for r in recs]), np.concatenate([r["member"] for r in recs]))


def _mean(recs: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(r[key] for r in recs)


def _row(recs: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for view in VIEWS:
        views[view] = {}
        for attack in ATTACKS:
            s, m = _pooled(recs, view, attack)
            views[view][attack] = attack_metrics(s, m)
        s, m = _pooled(recs, view, "lira")
        groups = np.concatenate([np.full(len(r["member"]), i) for i, r in enumerate(recs)])
        views[view]["lira"]["ci95"] = bootstrap_ci(s, m, n=n_boot, groups=groups if len(recs) > 1 else None)
    views["training_view"]["observer"] = get_method(recs[0]["method"]).observer_sees
    head = views["release"]["lira"]
    return {
        "method": recs[0]["method"], "epsilon": recs[0]["epsilon"],
        "acc": _mean(recs, "acc"), "zeroshot_acc": _mean(recs, "zeroshot_acc"),
        "mia_auc": head["auc"], "mia_tpr_at_1fpr": head["tpr_at_1fpr"], "mia_tpr_at_01fpr": head["tpr_at_01fpr"],
        "mia_balanced_acc": head["balanced_acc"], "mia_ci95": head["ci95"],
        "steal_cosine": _mean(recs, "steal_cosine"), "steal_cosine_domain": _mean(recs, "steal_cosine_domain"),
        "stolen_acc": _mean(recs, "stolen_acc"),
        "tv_mia_auc": views["training_view"]["lira"]["auc"],
        "tv_mia_tpr_at_1fpr": views["training_view"]["lira"]["tpr_at_1fpr"],
        "members": head["members"], "non_members": head["non_members"],
        "shadows": recs[0]["shadows"], "seeds": len({r["seed"] for r in recs}), "victims": len(recs),
        "release": views["release"], "training_view": views["training_view"],
    }


def build(records: list[dict[str, Any]], facts: list[dict[str, Any]], transcript: dict | None,
          n_boot: int = 200) -> dict[str, Any]:
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], r["epsilon"]), []).append(r)
    rows = []
    for (method, eps), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        row = _row(recs, n_boot)
        per_seed = []
        for seed in sorted({r["seed"] for r in recs}):
            sr = [r for r in recs if r["seed"] == seed]
            s, m = _pooled(sr, "release", "lira")
            ts, tm = _pooled(sr, "training_view", "lira")
            rel, tv = attack_metrics(s, m), attack_metrics(ts, tm)
            per_seed.append({"seed": seed, "acc": _mean(sr, "acc"), "mia_auc": rel["auc"],
                             "mia_tpr_at_1fpr": rel["tpr_at_1fpr"], "mia_tpr_at_01fpr": rel["tpr_at_01fpr"],
                             "tv_mia_auc": tv["auc"], "tv_mia_tpr_at_1fpr": tv["tpr_at_1fpr"],
                             "steal_cosine": _mean(sr, "steal_cosine")})
        row["per_seed"] = per_seed
        mine = [f for f in facts if (f["method"], f["epsilon"]) == (method, eps)]
        row["insecure_dealer"] = any(f.get("insecure_dealer") for f in mine)
        # the release is not private if its noise is a function of the public config (label), or
        # if the seed-knowing observer actually removed it (measured, DP-FedAvg)
        row["noise_not_private"] = any(f.get("reproducible_noise") or (f.get("seed_observer") or {}).get("noise_removed")
                                       for f in mine)
        rows.append(row)
    return {"rows": rows, "runs": facts, "transcript": transcript,
            "notes": {"headline": "mia_* = release view, LiRA online (global variance), pooled over victims and seeds",
                      "steal_cosine": "cosine of (reconstruction - public init) and (victim's private prompt - init), "
                                      "all classes' contexts",
                      "ci95": "bootstrap percentile interval resampling whole victims (a prompt's scores are "
                              "correlated); stratified by membership when there is one victim"}}


def _eps(e: float | None) -> str:
    return "—" if e is None else f"{e:g}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| method | ε | acc (%) | release AUC [95% CI] | release TPR@1%FPR | release TPR@0.1%FPR | loss-attack AUC "
        "| DP-FPL-attack AUC | observer | training-view AUC | training-view TPR@1%FPR | steal cos | stolen acc (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        lo, hi = r["mia_ci95"]["auc"]
        lines.append(
            f"| {r['method']} | {_eps(r['epsilon'])} | {100 * r['acc']:.1f} | {r['mia_auc']:.3f} [{lo:.3f}, {hi:.3f}] "
            f"| {100 * r['mia_tpr_at_1fpr']:.1f}% | {100 * r['mia_tpr_at_01fpr']:.1f}% "
            f"| {r['release']['loss']['auc']:.3f} | {r['release']['dpfpl_shadow']['auc']:.3f} "
            f"| {r['training_view']['observer']} | {r['tv_mia_auc']:.3f} | {100 * r['tv_mia_tpr_at_1fpr']:.1f}% "
            f"| {r['steal_cosine']:.2f} | {100 * r['stolen_acc']:.1f} |")
    flags = [f"{r['method']} ε={_eps(r['epsilon'])}: DP noise NOT PRIVATE (seeded by the public config)"
             for r in results["rows"] if r.get("noise_not_private")]
    flags += [f"{r['method']}: INSECURE DEALER (party 0 makes the triples)" for r in results["rows"]
              if r.get("insecure_dealer")]
    if flags:
        lines += ["", *(f"**{f}**" for f in flags)]
    observed = [f for f in results["runs"] if f.get("seed_observer")]
    if observed:
        lines += ["", "| seed observer: run | reproducible noise | noise std | recovery error (max abs) | noise removed |",
                  "| --- | --- | --- | --- | --- |"]
        for f in observed:
            o = f["seed_observer"]
            lines.append(f"| {f['method']} ε={_eps(f['epsilon'])} seed {f['seed']} | {o['reproducible_noise']} "
                         f"| {o['noise_std']:.3g} | {o['recovery_max_abs_error']:.2e} | {o['noise_removed']} |")
    r0 = results["rows"][0]
    lines += ["", f"Per row: {r0['members']} members, {r0['non_members']} non-members pooled over {r0['victims']} "
              f"victims x seeds, {r0['shadows']} shadow prompts per victim; zero-shot accuracy "
              f"{100 * statistics.fmean(r['zeroshot_acc'] for r in results['rows']):.1f}%."]
    t = results.get("transcript")
    if t:
        lines += ["", "| transcript variant | flagged | by per-message test | plaintext hits | opened values | messages |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for v, d in t["variants"].items():
            lines.append(f"| {v} | {d['flagged']} | {d['by_test']} | {d['plaintext_hits']} | {d['opened_values']} "
                         f"| {d['n_messages']} |")
        cs = t["cluster_size"]
        lines += ["", "| cluster policy | co-member's reconstruction error (max abs) | victim recovered |",
                  "| --- | --- | --- |"]
        for k, d in cs.items():
            lines.append(f"| min_cluster_size={k[3:]} | {d['max_abs_error']:.2e} | {d['recovered']} |")
    return "\n".join(lines) + "\n"


HOW_TO_READ = """
How to read this:

* **Release view** (the victim's final personalised prompt is public): LiRA online with shadow
  prompts is the strong attack; the loss threshold and DP-FPL's shadow-model attack (per-class
  attack classifier) are the weaker, classic ones. AUC 0.5 and TPR@1%FPR = 1% are chance.
  SecFPP adds no noise: its released prompt leaks about as much as the non-private methods'.
* **Training view**: what the method's honest-but-curious observer sees during training
  (column *observer*); the attacks run on its best reconstruction of the victim's private prompt,
  and *steal cos* is how close that reconstruction is to the private prompt (0 = nothing beyond
  the public init). *stolen acc* is the reconstruction's accuracy on the victim's test data.
* **Transcript**: the real protocol must not be flagged, each deliberate leak must be.
* **Cluster policy**: with clusters of 2 a co-member reads the other member's prompt exactly.
* **Seed observer** (DP-FedAvg): knows the public config, redraws the last round's noise as a
  seeded run would and subtracts it. *noise removed* (error at float rounding) means the DP
  release is not private; with secret noise (the default) the error is the noise's own size.
"""


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, sharex=True)
    methods = sorted({r["method"] for r in results["rows"]})
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    for ax, key, title in ((axes[0], "mia_tpr_at_1fpr", "release view (final prompt public)"),
                           (axes[1], "tv_mia_tpr_at_1fpr", "training view (observer's reconstruction)")):
        for r in results["rows"]:
            hollow = r["method"] == "secfpp"  # drawn open and larger: it often sits on its plaintext twin
            ax.scatter(100 * r[key], 100 * r["acc"], s=90 if hollow else 40,
                       facecolors="none" if hollow else colours[r["method"]], edgecolors=colours[r["method"]],
                       marker="o" if r["epsilon"] is None else "s",
                       label=r["method"] if r["epsilon"] in (None, 1.0) else None)
            if r["epsilon"] is not None:
                ax.annotate(f"ε={r['epsilon']:g}", (100 * r[key], 100 * r["acc"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.axvline(1.0, color="grey", linestyle=":", label="chance" if ax is axes[0] else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("LiRA TPR at 1% FPR (%)")
        ax.grid(alpha=0.3)
    top = max(100 * r[k] for r in results["rows"] for k in ("mia_tpr_at_1fpr", "tv_mia_tpr_at_1fpr"))
    axes[0].set_xlim(0, max(2.0, 1.15 * top))
    axes[0].set_ylabel("final test accuracy (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "privacy_utility.png", dpi=120)
    plt.close(fig)


def write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "audit.md").write_text("# Privacy audit\n\n" + table(results) + HOW_TO_READ)
    plot(out, results)
