"""A client *rank* that dies in a servers-topology ``launcher run`` (``mpc.tolerate_rank_loss``).

9 clients on 3 client ranks, 3 compute parties, the TTP dealer (7 processes), under
``mpirun --enable-recovery``:

* Client rank 2 (clients 2, 5, 8) SIGKILLed in round 2 after it shared, before its output: the
  other six clients finish all 3 rounds; ``metrics.jsonl`` names 2, 5, 8 with ``rank lost`` from
  round 2 on; the summary counts 6 clients; the job exits 3 ("finished with dropouts"), not 1 or
  137; the survivors' final prompts, k and partitions equal the plaintext twin's that leaves the
  same clients out from round 3 (their rows were in round 2's clustering). ``--resume`` after
  round 2 brings rank 2 back from its own last checkpoint (round 1): all 9 clients finish round 3.
* The same config started without ``--enable-recovery`` stops every rank before any MPC with
  the line to use (exit code 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.rundir import RunDir
from tests.launcher._mpirun import ROOT, final_prompts, mpirun

CFG = [
    "--config", str(ROOT / "launcher/configs/default.yaml"),
    "data.clients_per_domain=3", "data.min_samples=10", "rounds=3", "mpc.iters=5", "mpc.k_max=3",
    "evaluation.gather=true", "mpc.timeout_s=60", "mpc.deadline_s=20",
]
SERVERS = ["method=secfpp", "mpc.topology=servers", "mpc.client_ranks=3", "mpc.tolerate_rank_loss=true"]
LOST = [2, 5, 8]  # client rank 2's clients (round-robin over 3 ranks)
TOL = 1e-3  # 16 fractional bits, one truncation by 2^20 per round, three rounds


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_a_client_rank_killed_after_sharing_leaves_the_others_to_finish_and_match_their_twin(tmp_path):
    sec, plain = tmp_path / "secfpp", tmp_path / "plain"
    job = mpirun([*CFG, *SERVERS, "--run-dir", str(sec)], np=7, recovery=True, timeout=400,
                 env={"SECFPP_FAULT": "rank=2,phase=output,round=2"})
    assert job.returncode == 3, job.out[-4000:]  # finished with dropouts
    a = _rows(sec)
    assert [r["round"] for r in a] == [1, 2, 3]
    assert [r.get("dropouts") for r in a] == [None, LOST, LOST]
    assert a[1]["dropout_reasons"] == {str(c): "rank lost" for c in LOST} and a[1]["lost_ranks"] == [2]
    assert sorted(a[-1]["acc"]) == [str(c) for c in range(9) if c not in LOST]
    summary = json.loads((sec / "summary.json").read_text())
    assert summary["n_evaluated"] == 6 and summary["lost_ranks"] == [2] and "over 6 clients" in job.out
    assert RunDir(sec).lost_ranks(2) == [2]

    twin = subprocess.run([sys.executable, "-m", "launcher", "run", *CFG, "method=clustered", "--run-dir", str(plain)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SECFPP_DROP": "round=3,clients=" + " ".join(map(str, LOST))})
    assert twin.returncode == 0, twin.stderr[-3000:]
    b = _rows(plain)
    assert [r["k"] for r in a] == [r["k"] for r in b]
    for ra, rb in zip(a, b):  # same partition of the surviving clients every round
        la = ra["assignment"]
        lb = {c: v for c, v in rb["assignment"].items() if c in la}
        assert all((la[i] == la[j]) == (lb[i] == lb[j]) for i in la for j in la), (la, lb)
    pa, pb = final_prompts(sec, [0, 1], 3), final_prompts(plain, [0], 1)
    survivors = [c for c in range(9) if c not in LOST]
    assert sorted(pa) == survivors
    for c in survivors:
        assert float((pa[c] - pb[c]).abs().max()) < TOL, c

    # --resume brings the lost rank back: cut the run after round 2 (drop round 3's marker); rank 2
    # resumes its clients from its own last checkpoint (round 1), every client finishes round 3
    (RunDir(sec).round_dir(2) / "COMPLETE").unlink()
    job = mpirun(["--resume", str(sec)], np=7, recovery=True, timeout=400)
    assert job.returncode == 0, job.out[-4000:]
    c = _rows(sec)
    assert [r["round"] for r in c] == [1, 2, 3] and sorted(c[-1]["acc"]) == [str(i) for i in range(9)]
    assert c[-1].get("dropouts") is None and RunDir(sec).lost_ranks(2) == []


@pytest.mark.timeout(300)
def test_tolerating_rank_loss_without_enable_recovery_is_refused_before_any_mpc(tmp_path):
    job = mpirun([*CFG, *SERVERS, "--run-dir", str(tmp_path / "run")], np=7, timeout=200)
    assert job.returncode == 2, job.out[-3000:]
    assert "mpc.tolerate_rank_loss=true needs mpirun --enable-recovery" in job.out
    assert "launcher ranks --command" in job.out
