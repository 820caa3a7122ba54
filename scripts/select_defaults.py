"""Choose issue 21's prediction defaults on validation splits only.

For each finished run directory given, rebuild its clients, load their prompts after the last
round, and evaluate the validation splits (``acc_val`` with the client's label mix,
``acc_domain_val`` class-balanced, and the latter's seen / unseen parts) under every
prediction option: ``evaluation.unseen_classes`` in (trained, domain) x ``evaluation.label_prior``
in (false, true). Training options (``train.softmax``) differ between the runs given.

Rule, fixed before any run: the default is the (train.softmax, unseen_classes, label_prior)
combination with the highest mean of ``acc_val`` and ``acc_domain_val``, averaged over the
methods evaluated (each method weighs the same). No test split is read.

    python scripts/select_defaults.py RUN_DIR [RUN_DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys

VAL = ("acc_val", "acc_domain_val", "acc_seen_val", "acc_unseen_val")


def evaluate_run(path: str) -> list[dict]:
    from launcher.audit.sources import load_run, set_state
    from launcher.run import build_clients, client_metrics

    run = load_run(path)
    cfg = run.cfg
    clients, backbone, classnames = build_clients(cfg, list(range(cfg.n_clients)))
    for c in clients:
        set_state(c.learner, run.final[c.cid])
    out = []
    for unseen in ("trained", "domain"):
        for prior in (False, True):
            ev = dataclasses.replace(cfg.evaluation, unseen_classes=unseen, label_prior=prior)
            variant = dataclasses.replace(cfg, evaluation=ev)
            per = [client_metrics(c, backbone, classnames, cfg.method == "zeroshot", variant)
                   for c in clients]
            # only validation splits are kept: the test splits are evaluated by the same call
            # but never read here
            row = {"run": path, "method": cfg.method, "seed": cfg.seed, "softmax": cfg.train.softmax,
                   "unseen_classes": unseen, "label_prior": prior}
            for key in VAL:
                vals = [m[key] for m in per if key in m]
                row[key] = statistics.fmean(vals) if vals else None
            out.append(row)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--json", help="write every row here")
    a = p.parse_args(argv)
    rows = [r for path in a.runs for r in evaluate_run(path)]
    print("| method | softmax | unseen_classes | label_prior | acc_val | acc_domain_val | acc_seen_val | acc_unseen_val |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['softmax']} | {r['unseen_classes']} | {r['label_prior']} | "
              + " | ".join("—" if r[k] is None else f"{100 * r[k]:.1f}" for k in VAL) + " |")
    combos: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        key = (r["softmax"], r["unseen_classes"], r["label_prior"])
        combos.setdefault(key, {}).setdefault(r["method"], []).append((r["acc_val"] + r["acc_domain_val"]) / 2)
    methods = {r["method"] for r in rows}
    scores = {k: statistics.fmean(statistics.fmean(v) for v in per.values())
              for k, per in combos.items() if set(per) == methods}  # only combinations every method ran
    print("\nscore = mean over methods of (acc_val + acc_domain_val) / 2:")
    for k, v in sorted(scores.items(), key=lambda kv: -kv[1]):
        print(f"  softmax={k[0]} unseen_classes={k[1]} label_prior={k[2]}: {100 * v:.2f}")
    best = max(scores, key=scores.get)
    print(f"chosen: train.softmax={best[0]} evaluation.unseen_classes={best[1]} evaluation.label_prior={best[2]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "scores": {"/".join(map(str, k)): v for k, v in scores.items()},
                       "chosen": best}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
