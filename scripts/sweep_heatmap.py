"""The severity sweep's heat map (issue 21): where sharing the domain prompt helps and where not.

Reads one ``compare`` directory per (shots, alpha) cell, ``ROOT/shots{S}-a{A}/results.json``,
and draws, for each metric, the difference ``clustered - local`` (the plaintext twin of SecFPP
against local-only; ``--against`` changes the baseline) of the final-round means, in points.
Cells not run are left blank and said so. Prints the table in Markdown.

    python scripts/sweep_heatmap.py ROOT [--out docs/sweep_heatmap.png]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

SHOTS = (2, 4, 8)
ALPHAS = (0.1, 0.3, 1.0)
METRICS = ("acc_domain", "acc_unseen", "acc", "acc_newclient")


def cell(root: Path, shots: int, alpha: float, method: str, against: str, key: str) -> float:
    path = root / f"shots{shots}-a{alpha:g}" / "results.json"
    if not path.is_file():
        return math.nan
    rows = {r["method"]: r for r in json.loads(path.read_text())["rows"] if r["epsilon"] is None}
    if method not in rows or against not in rows or f"{key}_mean" not in rows[method]:
        return math.nan
    return 100 * (rows[method][f"{key}_mean"] - rows[against][f"{key}_mean"])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--method", default="clustered")
    p.add_argument("--against", default="local")
    p.add_argument("--out", default="docs/sweep_heatmap.png")
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    root = Path(a.root)
    grids = {k: np.array([[cell(root, s, al, a.method, a.against, k) for al in ALPHAS] for s in SHOTS])
             for k in METRICS}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for ax, (key, g) in zip(axes, grids.items()):
        lim = max(1.0, float(np.nanmax(np.abs(g)))) if not np.all(np.isnan(g)) else 1.0
        im = ax.imshow(g, cmap="RdBu", vmin=-lim, vmax=lim)
        for i in range(len(SHOTS)):
            for j in range(len(ALPHAS)):
                ax.text(j, i, "not run" if math.isnan(g[i, j]) else f"{g[i, j]:+.1f}", ha="center", va="center",
                        fontsize=8)
        ax.set_xticks(range(len(ALPHAS)), [f"α={x:g}" for x in ALPHAS])
        ax.set_yticks(range(len(SHOTS)), [f"{s} shots" for s in SHOTS])
        ax.set_title(f"{key}: {a.method} − {a.against} (points)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"| shots | α | " + " | ".join(f"{k} ({a.method} − {a.against})" for k in METRICS) + " |")
    print("| --- | --- | " + "--- | " * len(METRICS))
    for i, s in enumerate(SHOTS):
        for j, al in enumerate(ALPHAS):
            print(f"| {s} | {al:g} | " + " | ".join("not run" if math.isnan(grids[k][i, j]) else f"{grids[k][i, j]:+.1f}"
                                                    for k in METRICS) + " |")
    print(f"heat map: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
