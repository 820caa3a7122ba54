"""Results are the final round's, never the best one; a resumed run takes no overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launcher import compare, report
from launcher.config import load_config
from launcher.metrics import RoundRow, Timing
from launcher.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]


def _row(r: int, accs: list[float]) -> RoundRow:
    return RoundRow(round=r, method="local", seed=0, acc={str(i): a for i, a in enumerate(accs)},
                    mean_acc=sum(accs) / len(accs), time=Timing(local_train_s=1.0, aggregate_s=0.1))


def test_summary_and_table_use_the_final_round_not_the_best():
    cfg = load_config(None, ["method=local"])
    rows = [_row(1, [0.5, 0.6]), _row(2, [0.9, 0.9]), _row(3, [0.7, 0.8])]  # best is round 2
    s = report.summarise(cfg, rows, {0: 0, 1: 1})
    assert s["final_acc"] == 0.75 and s["final_acc_per_client"] == {"0": 0.7, "1": 0.8}
    table = compare._aggregate([{"method": "local", "epsilon": None, "seed": 0, "summary": s}])
    assert table[0]["acc_mean"] == 0.75


def test_resume_refuses_overrides(tmp_path):
    RunDir(tmp_path).write_config(load_config(None, ["method=local"]).to_dict())
    out = subprocess.run([sys.executable, "-m", "launcher", "run", "--resume", str(tmp_path), "rounds=9"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "overrides are not allowed" in out.stderr


def test_round_one_carries_the_zero_shot_level_for_the_plot(tmp_path):
    cfg = load_config(None, ["method=local"])
    parts = [{"acc": {0: 0.8}, "train_s": 1.0, "agg_s": 0.0, "info": {}, "zeroshot": {0: 0.6}},
             {"acc": {1: 0.9}, "train_s": 1.0, "agg_s": 0.0, "info": {}, "zeroshot": {1: 0.7}}]
    row = RoundRow.from_parts("local", 0, 0, parts, {0: 0, 1: 0})
    assert abs(row.zeroshot_acc - 0.65) < 1e-12
    rows = [row, RoundRow.from_parts("local", 0, 1, [{**p, "zeroshot": {}} for p in parts], {0: 0, 1: 0})]
    assert "zeroshot_acc" not in rows[1].to_json()
    assert RoundRow.from_json(rows[0].to_json()) == rows[0]  # the log round-trips
    assert report.summarise(cfg, rows, {0: 0, 1: 0})["zeroshot_acc"] == row.zeroshot_acc
    assert report.plot_run(RunDir(tmp_path), rows).stat().st_size > 1000
