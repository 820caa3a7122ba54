"""SecFPP in the servers topology end to end under a real ``mpirun``: 9 clients on 2 client
ranks, 3 compute parties, the TTP dealer (6 processes).

* Client 4 (one of 9) dies in round 2 (``SECFPP_DROP``): every round still finishes, the
  dropout is in ``metrics.jsonl``, and every surviving client's final domain prompt equals the
  plaintext twin's (``clustered``, one process) that leaves out the same client from that
  round on, up to fixed-point error; so do k and the cluster labels each round.
* Compute party 0 SIGKILLed inside SecPC of round 2 ends the job with every survivor naming
  it; ``--resume`` continues from round 1 to the uninterrupted run's result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launcher.rundir import RunDir
from tests.launcher._mpirun import ROOT, mpirun

CFG = [
    "--config", str(ROOT / "launcher/configs/default.yaml"),
    "data.clients_per_domain=3", "data.min_samples=10", "rounds=3", "mpc.iters=5", "mpc.k_max=3",
    "evaluation.gather=true", "mpc.timeout_s=30", "mpc.deadline_s=20",
]
SERVERS = ["method=secfpp", "mpc.topology=servers", "mpc.client_ranks=2"]
DROP = {"SECFPP_DROP": "round=2,clients=4"}
TOL = 1e-3  # 16 fractional bits, one truncation by 2^20 per round, three rounds


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _final_prompts(run_dir: Path, ranks: int) -> dict[int, torch.Tensor]:
    rd = RunDir(run_dir)
    last = rd.last_complete_round()
    out = {}
    for r in range(ranks):
        shard = rd.load_shard(last, r, rd.config_sha({}), ranks)
        out.update({int(c): s["domain_ctx"] for c, s in shard["clients"].items()})
    return out


@pytest.mark.timeout(900)
def test_servers_topology_survives_a_dropout_matches_its_twin_and_resumes_after_a_compute_party_dies(tmp_path):
    sec, plain, cut = tmp_path / "secfpp", tmp_path / "plain", tmp_path / "cut"
    job = mpirun([*CFG, *SERVERS, "--run-dir", str(sec)], np=6, env=DROP)
    assert job.returncode == 0, job.out[-4000:]
    q = subprocess.run([sys.executable, "-m", "launcher", "run", *CFG, "method=clustered", "--run-dir", str(plain)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **DROP})
    assert q.returncode == 0, q.stderr[-3000:]
    a, b = _rows(sec), _rows(plain)
    assert [r.get("dropouts") for r in a] == [None, [4], [4]] == [r.get("dropouts") for r in b]
    assert [r["k"] for r in a] == [r["k"] for r in b]
    assert sorted(a[-1]["acc"]) == [str(c) for c in range(9) if c != 4]  # a dead client is not evaluated
    summary = json.loads((sec / "summary.json").read_text())
    assert summary["n_evaluated"] == 8 and summary["final_dropouts"] == [4] and "over 8 clients" in job.out
    for ra, rb in zip(a, b):  # same partition every round (labels may be renamed on exact ties)
        la, lb = ra["assignment"], rb["assignment"]
        assert all((la[i] == la[j]) == (lb[i] == lb[j]) for i in la for j in la), (la, lb)
        assert abs(ra["mean_acc"] - rb["mean_acc"]) <= 0.005
        assert ra["mpc"]["rounds"] == 2 and ra["mpc"]["bytes_per_party"] > 0
    for s in range(3):  # each compute party's own costs, per round
        costs = [json.loads(line) for line in (sec / f"mpc.compute-{s}.jsonl").read_text().splitlines()]
        assert [c["round"] for c in costs] == [1, 2, 3] and [c["rows"] for c in costs] == [9, 8, 8]
        assert costs[1]["dropouts"] == [4] and costs[0]["phases"]["total"]["rounds"] > 100
    pa, pb = _final_prompts(sec, 2), _final_prompts(plain, 1)
    assert sorted(pa) == sorted(pb) == list(range(9))
    for c in range(9):
        assert float((pa[c] - pb[c]).abs().max()) < TOL, c

    # compute party 0 (world rank 2) SIGKILLed inside SecPC's Lloyd iterations of round 2
    job = mpirun([*CFG, *SERVERS, "--run-dir", str(cut)], np=6, env={**DROP, "SECFPP_FAULT": "rank=2,phase=lloyd,round=2"})
    assert job.returncode != 0
    lines = job.abort_lines()
    assert 0 in lines and "missing rank 2 (compute party 0)" in lines[0], job.out[-3000:]
    assert [r["round"] for r in _rows(cut)] == [1]
    job = mpirun(["--resume", str(cut)], np=6, env=DROP)
    assert job.returncode == 0, job.out[-4000:]
    c = _rows(cut)
    assert [r["round"] for r in c] == [1, 2, 3] and [r["k"] for r in c] == [r["k"] for r in a]
    pc = _final_prompts(cut, 2)
    for cid in range(9):
        assert float((pc[cid] - pa[cid]).abs().max()) < TOL, cid
