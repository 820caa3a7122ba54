"""A run killed mid-way and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--config", str(ROOT / "launcher/configs/default.yaml"), "rounds=6", "train.epochs=2"]


def _run(extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", "run", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "method, extra",
    [
        ("clustered", []),
        # secret DP noise is drawn afresh by design: only the labelled reproducible opt-in repeats
        ("dpfedavg", ["dp.reproducible_noise=true"]),
        # lockstep over 6 unequal clients (the smaller ones cycle), 1 epoch to keep it quick
        ("dpfpl", ["data.clients_per_domain=2", "train.epochs=1", "dp.reproducible_noise=true"]),
    ],
    ids=["clustered", "dpfedavg", "dpfpl"],
)
def test_killed_run_resumes_to_the_same_result(tmp_path, method, extra):
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = _run([*ARGS, *extra, f"method={method}", "--run-dir", str(full)])
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out

    p = _run([*ARGS, *extra, f"method={method}", "--run-dir", str(cut)])
    marker = cut / "checkpoints" / "round-0001" / "COMPLETE"
    deadline = time.monotonic() + 200
    while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)  # a crash: no cleanup, no goodbye
    p.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    done = [json.loads(line)["round"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert done[:2] == [1, 2] and len(done) < 6

    p = _run(["--resume", str(cut)])
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    a, b = _summary(full), _summary(cut)
    assert b["rounds"] == 6
    assert a["final_acc_per_client"] == b["final_acc_per_client"]
    assert a["final_acc"] == b["final_acc"]
    rows_full = (full / "metrics.jsonl").read_text().splitlines()
    rows_cut = (cut / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(rows_full) == strip(rows_cut)


def test_resume_refuses_overrides_and_non_run_dirs(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "launcher", "run", "--resume", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 2 and "is" in p.stderr and "a run directory" in p.stderr
