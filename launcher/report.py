"""Summaries, one-line progress reports and plots of a run.

Results are the final round's accuracy (and the mean of the last rounds) averaged over
clients - never the best round on test data.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from launcher.config import Config
from launcher.rundir import RunDir

LAST_ROUNDS = 3


def round_line(row: dict[str, Any]) -> str:
    parts = [f"round {row['round']:>3}", f"acc {100 * row['mean_acc']:5.1f}%"]
    if "mean_acc_domain" in row:
        parts.append(f"acc_domain {100 * row['mean_acc_domain']:5.1f}%")
    if "k" in row:
        parts.append(f"k={row['k']}")
    if "ari" in row:
        parts.append(f"ARI {row['ari']:.2f}")
    t = row["time"]
    parts.append(f"train {t['local_train_s']:.1f}s")
    if "mpc" in row:
        parts.append(f"mpc {row['mpc']['seconds']:.1f}s/{row['mpc']['rounds']} rounds/"
                     f"{row['mpc']['bytes_per_party'] / 1e6:.1f} MB")
    if "epsilon" in row:
        parts.append(f"eps {row['epsilon']:.2f}" + (" (heuristic)" if row.get("epsilon_heuristic") else ""))
    return " | ".join(parts)


def summarise(cfg: Config, rows: list[dict[str, Any]], domains: dict[int, int]) -> dict[str, Any]:
    final = rows[-1]
    last = rows[-LAST_ROUNDS:]
    per_domain: dict[int, list[float]] = {}
    for cid, acc in final["acc"].items():
        per_domain.setdefault(domains[int(cid)], []).append(acc)
    summary: dict[str, Any] = {
        "method": cfg.method,
        "seed": cfg.seed,
        "rounds": len(rows),
        "n_clients": cfg.n_clients,
        "final_acc": final["mean_acc"],
        "zeroshot_acc": rows[0].get("zeroshot_acc"),
        "final_acc_std_clients": statistics.pstdev(final["acc"].values()),
        f"mean_acc_last{LAST_ROUNDS}": statistics.fmean(r["mean_acc"] for r in last),
        "final_acc_per_client": final["acc"],
        "final_acc_per_domain": {str(d): statistics.fmean(v) for d, v in sorted(per_domain.items())},
        "local_train_s_per_round": statistics.fmean(r["time"]["local_train_s"] for r in rows),
        "aggregate_s_per_round": statistics.fmean(r["time"]["aggregate_s"] for r in rows),
        "insecure_dealer": bool(final.get("insecure_dealer", False)),
        "evaluation_gathered": cfg.evaluation.gather,
    }
    for key in ("acc_domain", "acc_val"):  # the extra evaluation splits (fonts), as ``acc`` above
        if key in final:
            by_domain: dict[int, list[float]] = {}
            for cid, acc in final[key].items():
                by_domain.setdefault(domains[int(cid)], []).append(acc)
            summary[f"final_{key}"] = final[f"mean_{key}"]
            summary[f"zeroshot_{key}"] = rows[0].get(f"zeroshot_{key}")
            summary[f"final_{key}_per_client"] = final[key]
            summary[f"final_{key}_per_domain"] = {str(d): statistics.fmean(v) for d, v in sorted(by_domain.items())}
            summary[f"{key}_per_round"] = [r[f"mean_{key}"] for r in rows]
    if "mpc" in final:
        summary["mpc_s_per_round"] = statistics.fmean(r["mpc"]["seconds"] for r in rows)
        summary["mpc_rounds_per_round"] = statistics.fmean(r["mpc"]["rounds"] for r in rows)
        summary["mpc_mb_per_party_per_round"] = statistics.fmean(r["mpc"]["bytes_per_party"] for r in rows) / 1e6
        if summary["local_train_s_per_round"] > 0:
            summary["mpc_over_local"] = summary["mpc_s_per_round"] / summary["local_train_s_per_round"]
    if "k" in final:
        summary["k_per_round"] = [r["k"] for r in rows]
    if "ari" in final:
        summary["ari_per_round"] = [r["ari"] for r in rows]
    if "epsilon" in final:
        summary["epsilon"] = final["epsilon"]
        summary["epsilon_heuristic"] = bool(final.get("epsilon_heuristic", False))  # no accountant behind it
    return summary


def final_line(summary: dict[str, Any], path: Path) -> str:
    extra = f", MPC/local time {summary['mpc_over_local']:.2f}" if "mpc_over_local" in summary else ""
    return (
        f"{summary['method']}: final accuracy {100 * summary['final_acc']:.1f}% over "
        f"{summary['n_clients']} clients after {summary['rounds']} rounds{extra}\n"
        f"results: {path}/summary.json, metrics.jsonl, accuracy.png"
    )


def plot_run(rd: RunDir, rows: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["round"] for r in rows]
    ax.plot(xs, [100 * r["mean_acc"] for r in rows], marker="o", label="mean over clients")
    if "mean_acc_domain" in rows[-1]:
        ax.plot(xs, [100 * r["mean_acc_domain"] for r in rows], marker="s", label="acc_domain (balanced)")
    if "zeroshot_acc" in rows[0]:  # what training bought
        ax.axhline(100 * rows[0]["zeroshot_acc"], color="grey", linestyle="--", label="zero-shot")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(rows[-1]["method"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = rd.path / "accuracy.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
