"""Summaries, one-line progress reports and plots of a run.

Results are the final round's accuracy (and the mean of the last rounds) averaged over
clients - never the best round on test data.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from launcher.config import Config
from launcher.metrics import CLIENT_METRICS, RoundRow, harmonic_mean
from launcher.rundir import RunDir

LAST_ROUNDS = 3


def round_line(row: RoundRow) -> str:
    parts = [f"round {row.round:>3}", f"acc {100 * row.mean_acc:5.1f}%"]
    if row.mean_acc_domain is not None:
        parts.append(f"acc_domain {100 * row.mean_acc_domain:5.1f}%")
    if row.k is not None:
        parts.append(f"k={row.k}")
    if row.ari is not None:
        parts.append(f"ARI {row.ari:.2f}")
    parts.append(f"train {row.time.local_train_s:.1f}s")
    if row.mpc is not None:
        parts.append(f"mpc {row.mpc.seconds:.1f}s/{row.mpc.rounds} rounds/{row.mpc.bytes_per_party / 1e6:.1f} MB")
    if row.dropouts:
        parts.append(f"{len(row.dropouts)} dropped")
    if row.epsilon is not None:
        parts.append(f"eps {row.epsilon:.2f}" + (" (heuristic)" if row.epsilon_heuristic else ""))
    return " | ".join(parts)


def summarise(cfg: Config, rows: list[RoundRow], domains: dict[int, int]) -> dict[str, Any]:
    final = rows[-1]
    last = rows[-LAST_ROUNDS:]
    per_domain: dict[int, list[float]] = {}
    for cid, acc in final.acc.items():
        per_domain.setdefault(domains[int(cid)], []).append(acc)
    summary: dict[str, Any] = {
        "method": cfg.method,
        "seed": cfg.seed,
        "rounds": len(rows),
        "n_clients": cfg.n_clients,
        "n_evaluated": len(final.acc),  # the final round's clients in this log (dropped ones are not evaluated)
        "final_dropouts": final.dropouts or [],
        "final_acc": final.mean_acc,
        "zeroshot_acc": rows[0].zeroshot_acc,
        "final_acc_std_clients": statistics.pstdev(final.acc.values()),
        f"mean_acc_last{LAST_ROUNDS}": statistics.fmean(r.mean_acc for r in last),
        "final_acc_per_client": final.acc,
        "final_acc_per_domain": {str(d): statistics.fmean(v) for d, v in sorted(per_domain.items())},
        "local_train_s_per_round": statistics.fmean(r.time.local_train_s for r in rows),
        "aggregate_s_per_round": statistics.fmean(r.time.aggregate_s for r in rows),
        "insecure_dealer": bool(final.insecure_dealer),
        "reproducible_noise": bool(final.reproducible_noise),  # DP noise seeded by the public config
        "evaluation_gathered": cfg.evaluation.gather,
    }
    for key in CLIENT_METRICS:  # the extra evaluation splits (fonts), as ``acc`` above
        per_client = getattr(final, key)
        if per_client is not None:
            by_domain: dict[int, list[float]] = {}  # held-out clients' domains are in ``domains`` too
            for cid, acc in per_client.items():
                by_domain.setdefault(domains[int(cid)], []).append(acc)
            summary[f"final_{key}"] = getattr(final, f"mean_{key}")
            summary[f"zeroshot_{key}"] = getattr(rows[0], f"zeroshot_{key}")
            summary[f"final_{key}_per_client"] = per_client
            summary[f"final_{key}_per_domain"] = {str(d): statistics.fmean(v) for d, v in sorted(by_domain.items())}
            summary[f"{key}_per_round"] = [getattr(r, f"mean_{key}") for r in rows]
    for suffix in ("", "_val"):
        hm = harmonic_mean(summary.get(f"final_acc_seen{suffix}"), summary.get(f"final_acc_unseen{suffix}"))
        if hm is not None:
            summary[f"final_acc_hm{suffix}"] = hm
    if final.mpc is not None:
        costs = [r.mpc for r in rows if r.mpc is not None]
        summary["mpc_s_per_round"] = statistics.fmean(c.seconds for c in costs)
        summary["mpc_rounds_per_round"] = statistics.fmean(c.rounds for c in costs)
        summary["mpc_mb_per_party_per_round"] = statistics.fmean(c.bytes_per_party for c in costs) / 1e6
        if summary["local_train_s_per_round"] > 0:
            summary["mpc_over_local"] = summary["mpc_s_per_round"] / summary["local_train_s_per_round"]
    if final.k is not None:
        summary["k_per_round"] = [r.k for r in rows]
    if final.ari is not None:
        summary["ari_per_round"] = [r.ari for r in rows]
    if final.epsilon is not None:
        summary["epsilon"] = final.epsilon
        summary["epsilon_heuristic"] = bool(final.epsilon_heuristic)  # no accountant behind it
    return summary


def final_line(summary: dict[str, Any], path: Path) -> str:
    extra = f", MPC/local time {summary['mpc_over_local']:.2f}" if "mpc_over_local" in summary else ""
    return (
        f"{summary['method']}: final accuracy {100 * summary['final_acc']:.1f}% over "
        f"{summary['n_evaluated']} clients after {summary['rounds']} rounds{extra}\n"
        f"results: {path}/summary.json, metrics.jsonl, accuracy.png"
    )


def plot_run(rd: RunDir, rows: list[RoundRow]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r.round for r in rows]
    ax.plot(xs, [100 * r.mean_acc for r in rows], marker="o", label="mean over clients")
    if rows[-1].mean_acc_domain is not None:
        ax.plot(xs, [100 * r.mean_acc_domain for r in rows], marker="s", label="acc_domain (balanced)")
    if rows[0].zeroshot_acc is not None:  # what training bought
        ax.axhline(100 * rows[0].zeroshot_acc, color="grey", linestyle="--", label="zero-shot")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(rows[-1].method)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = rd.path / "accuracy.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
