"""``python -m launcher compare``: the table is the mean of the runs' own final accuracies, and a
comparison cut off mid-way is finished by rerunning it into the same directory (finished runs
reused, a run cut off after a complete round resumed) with the same numbers."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "-m", "launcher", "compare", "--config", str(ROOT / "launcher/configs/default.yaml"),
       "--methods", "local,dpfedavg", "--seeds", "0,1", "--epsilons", "8", "rounds=2", "train.epochs=1",
       "data.clients_per_domain=2",
       "dp.reproducible_noise=true"]  # a resumed run repeats an uninterrupted one only with seeded noise


def _compare(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280)


@pytest.mark.timeout(300)
def test_table_from_runs_and_rerun_after_a_cut(tmp_path):
    out = tmp_path / "cmp"
    first = _compare(out)
    assert first.returncode == 0, first.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["epsilon"]): r for r in res["rows"]}
    assert set(rows) == {("local", None), ("dpfedavg", 8.0)}
    for (method, eps), row in rows.items():
        runs = [r for r in res["runs"] if r["method"] == method]
        assert row["seeds"] == len(runs) == 2
        accs = [a for r in runs for a in json.loads((Path(r["run_dir"]) / "summary.json").read_text())
                ["final_acc_per_client"].values()]
        assert row["acc_mean"] == pytest.approx(statistics.fmean(accs))
    table = (out / "table.md").read_text()
    assert "| local | — |" in table and "| dpfedavg | 8 |" in table
    for plot in ("accuracy_per_round.png", "accuracy_vs_epsilon.png"):
        assert (out / plot).stat().st_size > 1000

    # cut one run after its first round (as a crash would leave it) and delete the table
    cut = out / "runs" / "dpfedavg-s1-eps8"
    (cut / "summary.json").unlink()
    shutil.rmtree(cut / "checkpoints" / "round-0001")
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")
    (out / "table.md").unlink()
    again = _compare(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already complete, reused") == 3
    assert "--resume" in again.stdout
    assert (out / "table.md").read_text() == table  # the resumed run ends where it ended before
    res = json.loads((out / "results.json").read_text())
    assert res["evaluation_gathered"] is True and "evaluation.gather=true" in again.stdout
    assert all(r["reproducible_noise"] == (r["method"] == "dpfedavg") and not r["insecure_dealer"] for r in res["rows"])
