"""``python -m launcher audit --run DIR``: audit a run or a ``compare`` directory.

For every run (method x epsilon x seed) and every victim client: membership inference on its
final personalised prompt (release view) and on the observer's reconstruction (training view),
prompt stealing, and accuracies; then, once, the transcript and cluster-size audits on a real
party world. Writes ``results.json``, ``audit.md`` and plots into ``--out`` (default
``DIR/audit``). Nothing audited is retrained; shadows are trained on cached features.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from launcher.audit import mia, noise, report, sources, steal
from launcher.audit.shadows import Shadows, target_points, train_shadows


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launcher audit", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run directory or a compare directory (with runs/)")
    p.add_argument("--out", help="output directory (default RUN/audit)")
    p.add_argument("--shadows", type=int, default=8,
                   help="shadow prompts per victim, even (LiRA online, DP-FPL attack)")
    p.add_argument("--victims", default="all", help="'all' clients, or comma-separated client ids")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the CIs")
    p.add_argument("--no-transcript", action="store_true", help="skip the multi-party transcript audit")
    return p.parse_args(argv)


def _scores(logits: np.ndarray, labels: np.ndarray, sh: Shadows) -> dict[str, np.ndarray]:
    """Every attack's membership score of one prompt on one victim's target points."""
    shadow_conf = np.stack([mia.logit_confidence(sh.logits[s], labels) for s in range(sh.count)])
    return {
        "loss": mia.loss_scores(logits, labels),
        "lira": mia.lira_online(mia.logit_confidence(logits, labels), shadow_conf, sh.is_in),
        "dpfpl_shadow": mia.shadow_attack(logits, labels, sh.logits, sh.is_in),
    }


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(-1) == labels).mean())


def audit_run(run: sources.AuditedRun, cache: sources.ClientCache, shadow_cache: dict, n_shadows: int,
              victims: list[int] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-victim records (scores, membership, accuracies, stealing) and per-run facts."""
    from launcher.methods import get as get_method
    from prompts.training import zero_shot_accuracy

    clients = cache.clients(run.cfg)
    uploads = sources.replay_uploads(run, clients)
    weights = {c.cid: int(len(c.train_y)) for c in clients}
    replay_err = sources.upload_check(run, uploads, weights)
    init = clients[0].learner.domain_init
    class_prompt = get_method(run.method).class_prompt
    records = []
    for c in clients:
        if victims is not None and c.cid not in victims:
            continue
        key = (sources.data_key(run.cfg), c.cid, class_prompt)
        if key not in shadow_cache:
            shadow_cache[key] = train_shadows(c, run.cfg, n_shadows, class_prompt, seed=run.cfg.seed)
        sh = shadow_cache[key]
        feats, labels, member = target_points(c)
        n_train = int(member.sum())
        sources.set_state(c.learner, run.final[c.cid])
        release = mia.prompt_logits(c.learner, feats)
        rec = steal.reconstruct(run, c.cid, uploads, init)
        true_d, true_l = steal.private_domain(run, c.cid, uploads), run.final[c.cid]["class_ctx"].cpu()
        sources.set_state(c.learner, {"domain_ctx": rec.domain, "class_ctx": rec.class_ctx})
        view = mia.prompt_logits(c.learner, feats)
        records.append({
            "method": run.method, "epsilon": run.epsilon, "seed": run.cfg.seed, "client": c.cid,
            "member": member, "release": _scores(release, labels, sh), "training_view": _scores(view, labels, sh),
            "acc": _accuracy(release[n_train:], labels[n_train:]),
            "stolen_acc": _accuracy(view[n_train:], labels[n_train:]),
            "zeroshot_acc": zero_shot_accuracy(cache.backbone, cache.classnames, c.test_x, c.test_y),
            "steal_cosine": steal.delta_cosine(rec.domain, rec.class_ctx, true_d, true_l, init),
            "steal_cosine_domain": steal.delta_cosine(rec.domain, torch.zeros_like(true_l), true_d,
                                                      torch.zeros_like(true_l), init),
            "shadows": sh.count, "observer_note": rec.note,
        })
    facts = {"run_dir": str(run.path), "method": run.method, "epsilon": run.epsilon, "seed": run.cfg.seed,
             "upload_replay_max_error": replay_err, "uploads_replayed": bool(uploads),
             "insecure_dealer": bool(run.summary.get("insecure_dealer", False)),
             "reproducible_noise": bool(get_method(run.method).dp and run.cfg.dp.reproducible_noise),
             "seed_observer": noise.seed_observer(run, uploads)}
    return records, facts


def main(argv: list[str]) -> int:
    a = _parse(argv)
    try:
        paths = sources.find_runs(a.run)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run) / "audit"
    victims = None if a.victims == "all" else [int(v) for v in a.victims.split(",")]
    cache, shadow_cache = sources.ClientCache(), {}
    records, facts = [], []
    t0 = time.perf_counter()
    for i, path in enumerate(paths, 1):
        try:
            run = sources.load_run(path)
        except (FileNotFoundError, ValueError) as err:
            print(f"[{i}/{len(paths)}] skipped {path}: {err}", file=sys.stderr, flush=True)
            continue
        recs, fact = audit_run(run, cache, shadow_cache, a.shadows, victims)
        records += recs
        facts.append(fact)
        print(f"[{i}/{len(paths)}] {path.name}: {len(recs)} victims, {time.perf_counter() - t0:.0f} s", flush=True)
    if not records:
        print("error: nothing to audit", file=sys.stderr)
        return 1
    transcript = None
    if not a.no_transcript:
        from launcher.audit.transcript import run_audit

        print("transcript audit (3 parties + dealer) ...", flush=True)
        transcript = run_audit().as_dict()
    results = report.build(records, facts, transcript, a.bootstrap)
    report.write(out, results)
    print(report.table(results))
    print(f"results: {out}/results.json, audit.md, privacy_utility.png")
    return 0
