"""``python -m launcher compare``: several methods x seeds (x epsilons) on one harness.

Each run is a separate ``python -m launcher run`` (under ``mpirun`` for SecFPP) with the
same config apart from ``method``/``seed``/``dp.epsilon``, so every method sees the same
data, backbone, rounds and seeds. Writes ``table.md``, ``results.json`` and plots into one
directory. Accuracy is the final round's, mean +- std over clients and seeds - never the
best round on test data.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from launcher.config import ConfigError, load_config
from launcher.topology import world_size
from launcher.rundir import RunDir
from launcher import methods
from launcher.metrics import CLIENT_METRICS, harmonic_mean

DEFAULT_METHODS = ",".join(methods.METHODS)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launcher compare", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="launcher/configs/default.yaml")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epsilons", default="1,4,8", help="target epsilons for the DP methods")
    p.add_argument("--out", help="output directory (default runs/compare-<time>); rerunning into the same "
                   "directory reuses the runs that finished and resumes the ones cut off")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    return p.parse_args(argv)


def _command(method: str, n: int, args: list[str]) -> list[str]:
    base = [sys.executable, "-m", "launcher", "run", *args]
    if not methods.get(method).uses_mpc:
        return base
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
    if mpirun is None:
        raise ConfigError("mpirun not found (run `source scripts/env.sh` or install via scripts/setup.sh)")
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # Open MPI refuses root
    return [mpirun, "--oversubscribe", *root, "-np", str(n), *base]


def _jobs(a: argparse.Namespace) -> list[dict[str, Any]]:
    jobs = []
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        eps_list = [float(e) for e in a.epsilons.split(",")] if methods.get(method).dp else [None]
        for seed in [int(s) for s in a.seeds.split(",")]:
            for eps in eps_list:
                jobs.append({"method": method, "seed": seed, "epsilon": eps})
    return jobs


def _aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, epsilon): mean +- std over every (client, seed) final accuracy."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["method"], r["epsilon"]), []).append(r)
    rows = []
    for (method, eps), runs in groups.items():
        per_client = [acc for r in runs for acc in r["summary"]["final_acc_per_client"].values()]
        per_seed = [r["summary"]["final_acc"] for r in runs]
        row = {
            "method": method,
            "epsilon": eps,
            "seeds": len(runs),
            "acc_mean": statistics.fmean(per_client),
            "acc_std": statistics.pstdev(per_client),
            "acc_std_over_seeds": statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0,
            "epsilon_heuristic": methods.get(method).heuristic_epsilon,
            # labels that change what a row means: carried from every run, never dropped
            "insecure_dealer": any(r["summary"].get("insecure_dealer", False) for r in runs),
            "reproducible_noise": any(r["summary"].get("reproducible_noise", False) for r in runs),
            "evaluation_gathered": all(r["summary"].get("evaluation_gathered", False) for r in runs),
        }
        row["acc_per_domain"] = _per_domain(runs, "final_acc_per_domain")
        for key in CLIENT_METRICS:  # the fonts benchmark's other metrics and the validation twins
            if all(f"final_{key}" in r["summary"] for r in runs):
                per_client_d = [a for r in runs for a in r["summary"][f"final_{key}_per_client"].values()]
                row[f"{key}_mean"] = statistics.fmean(per_client_d)
                row[f"{key}_std"] = statistics.pstdev(per_client_d)
                row[f"{key}_std_over_seeds"] = (statistics.pstdev(r["summary"][f"final_{key}"] for r in runs)
                                                if len(runs) > 1 else 0.0)
                row[f"{key}_per_domain"] = _per_domain(runs, f"final_{key}_per_domain")
        for suffix in ("", "_val"):  # harmonic mean of the seen and unseen means
            hm = harmonic_mean(row.get(f"acc_seen{suffix}_mean"), row.get(f"acc_unseen{suffix}_mean"))
            if hm is not None:
                row[f"acc_hm{suffix}_mean"] = hm
        mpc = [r["summary"]["mpc_over_local"] for r in runs if "mpc_over_local" in r["summary"]]
        if mpc:
            row["mpc_over_local"] = statistics.fmean(mpc)
        ari = [r["summary"]["ari_per_round"][-1] for r in runs if r["summary"].get("ari_per_round")]
        if ari:
            row["final_ari"] = statistics.fmean(ari)
            row["ari_per_round"] = _mean_curve([r["summary"]["ari_per_round"] for r in runs])
            row["k_per_round"] = {f"seed {r['seed']}": r["summary"]["k_per_round"] for r in runs
                                  if "k_per_round" in r["summary"]}
        rows.append(row)
    return rows


def _per_domain(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean over seeds of each domain's mean over its clients, keyed by the domain's index."""
    doms = sorted({d for r in runs for d in r["summary"][key]}, key=int)
    return {d: statistics.fmean(r["summary"][key][d] for r in runs if d in r["summary"][key]) for d in doms}


def _mean_curve(curves: list[list[float]]) -> list[float]:
    n = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]


#: optional columns of the table: (results key, header), shown when some row has them
_COLUMNS = (("acc_domain", "acc_domain (%)"), ("acc_seen", "acc_seen (%)"), ("acc_unseen", "acc_unseen (%)"),
            ("acc_hm", "H(seen, unseen)"), ("acc_newclient", "acc_newclient (%)"))


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [(key, head) for key, head in _COLUMNS if any(f"{key}_mean" in r for r in rows)]
    lines = [
        "| method | epsilon | accuracy (%) mean ± std over clients x seeds | "
        + "".join(f"{head} | " for _, head in cols) + "std over seeds | final ARI | MPC/local time | seeds |",
        "| --- | --- | --- | " + "--- | " * len(cols) + "--- | --- | --- | --- |",
    ]
    for r in rows:
        eps = "—" if r["epsilon"] is None else f"{r['epsilon']:g}" + ("*" if r.get("epsilon_heuristic") else "")
        ari = f"{r['final_ari']:.2f}" if "final_ari" in r else "—"
        ratio = f"{r['mpc_over_local']:.1f}" if "mpc_over_local" in r else "—"
        extra = ""
        for key, _ in cols:
            if f"{key}_mean" not in r:
                extra += "— | "
            elif f"{key}_std" in r:
                extra += f"{100 * r[f'{key}_mean']:.1f} ± {100 * r[f'{key}_std']:.1f} | "
            else:
                extra += f"{100 * r[f'{key}_mean']:.1f} | "
        lines.append(
            f"| {r['method']} | {eps} | {100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f} | {extra}"
            f"{100 * r['acc_std_over_seeds']:.1f} | {ari} | {ratio} | {r['seeds']} |"
        )
    if any(r.get("epsilon_heuristic") for r in rows):
        lines += ["", "\\* heuristic epsilon (DP-FPL's noise formula, no accountant): not comparable with an accounted one."]
    if any("acc_newclient_mean" in r for r in rows) and any("acc_newclient_mean" not in r for r in rows):
        lines += ["", "acc_newclient —: not evaluated (SecFPP: in its plaintext twin `clustered` only)."]
    return "\n".join(lines) + "\n"


def _save(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _plots(out: Path, results: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves: dict[str, list[list[float]]] = {}
    for r in results:
        label = r["method"] + (f" eps={r['epsilon']:g}" if r["epsilon"] is not None else "")
        curves.setdefault(label, []).append([m.mean_acc for m in r["metrics"]])
    colours = plt.get_cmap("tab20").colors  # > 10 curves: tab10 would repeat colours
    markers = "os^vDP*Xh<>"
    for j, (label, runs) in enumerate(sorted(curves.items())):
        n = min(len(c) for c in runs)
        mean = [100 * statistics.fmean(c[i] for c in runs) for i in range(n)]
        ax.plot(range(1, n + 1), mean, marker=markers[j % len(markers)], color=colours[(2 * j) % 20 + (j >= 10)],
                label=label, linestyle="--" if label.startswith("secfpp") else "-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, ax, out / "accuracy_per_round.png", "round", "test accuracy (%), mean over clients and seeds")

    dp_rows = [r for r in rows if r["epsilon"] is not None]
    if dp_rows:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        metrics = [("acc_mean", "acc", "-")] + ([("acc_domain_mean", "acc_domain", ":")]
                                                if all("acc_domain_mean" in r for r in rows) else [])
        for key, name, style in metrics:
            for method in sorted({r["method"] for r in dp_rows}):
                pts = sorted((r["epsilon"], 100 * r[key]) for r in dp_rows if r["method"] == method)
                heuristic = any(r.get("epsilon_heuristic") for r in dp_rows if r["method"] == method)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle=style,
                        label=f"{method} {name}" + (" (heuristic eps)" if heuristic else ""))
            for r in rows:
                if r["method"] in ("secfpp", "local"):
                    ax.axhline(100 * r[key], color="k" if r["method"] == "secfpp" else "grey", linestyle=style,
                               label=f"{r['method']} {name} (no noise)")
        ax.set_xscale("log")
        eps = sorted({r["epsilon"] for r in dp_rows})
        ax.set_xticks(eps)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        _save(fig, ax, out / "accuracy_vs_epsilon.png", "epsilon", "test accuracy (%)")


def main(argv: list[str]) -> int:
    a = _parse(argv)
    out = Path(a.out or f"runs/compare-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    try:
        load_config(a.config, a.overrides)  # fail before starting anything
        jobs = _jobs(a)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = []
    # A comparison needs every client's accuracy at rank 0, so the evaluation switch is on, said
    # here and recorded in results.json (evaluation_gathered), never set silently.
    print("compare: evaluation.gather=true in every run (client ranks send rank 0 their accuracies, true "
          "domains and, for SecFPP, their own cluster labels: evaluation-only traffic)", flush=True)
    for i, job in enumerate(jobs, 1):
        overrides = [*a.overrides, "evaluation.gather=true", f"method={job['method']}", f"seed={job['seed']}"]
        if job["epsilon"] is not None:
            overrides.append(f"dp.epsilon={job['epsilon']}")
        cfg = load_config(a.config, overrides)
        run_dir = out / "runs" / (f"{job['method']}-s{job['seed']}" + (f"-eps{job['epsilon']:g}" if job["epsilon"] else ""))
        if (run_dir / "summary.json").is_file():  # finished by an earlier, interrupted compare
            print(f"[{i}/{len(jobs)}] {run_dir} already complete, reused", flush=True)
            done = None
        else:
            if (run_dir / "config.yaml").is_file():  # cut off mid-way: continue after its last complete round
                run_args = ["--resume", str(run_dir)]
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # died before writing its config: nothing to keep
                run_args = ["--config", a.config, *overrides, "--run-dir", str(run_dir)]
            cmd = _command(job["method"], world_size(cfg), run_args)
            print(f"[{i}/{len(jobs)}] {' '.join(cmd[cmd.index('-m') - 1:] if '-m' in cmd else cmd)}", flush=True)
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done is not None and done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            print(f"error: run {run_dir} failed (exit {done.returncode})", file=sys.stderr)
            return 1
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics = RunDir(run_dir).read_metrics()
        results.append({**job, "run_dir": str(run_dir), "summary": summary, "metrics": metrics})
    rows = _aggregate(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"evaluation_gathered": True, "rows": rows, "runs": [
        {k: v for k, v in r.items() if k != "metrics"} for r in results]}, indent=2) + "\n")
    table = _table(rows)
    (out / "table.md").write_text(table)
    _plots(out, results, rows)
    print(table)
    print(f"results: {out}/table.md, results.json, accuracy_per_round.png, accuracy_vs_epsilon.png")
    return 0
