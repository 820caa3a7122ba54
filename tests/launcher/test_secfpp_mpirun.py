"""SecFPP end to end under a real ``mpirun``: 3 clients + the TTP dealer, real CrypTen parties.

* SecFPP matches its plaintext twin (``clustered``: SecPC's maths at an honest server) on the
  same data, seeds and rounds: same chosen k and partition every round, and accuracy within
  0.5 points (the aggregates differ only by fixed-point rounding); later rounds reuse the
  offline dealer's plans (fewer offline rounds).
* A client SIGKILLed inside SecPC, or the dealer SIGKILLed during the reveal, ends the job:
  every surviving rank prints which phase it was in and which party is missing, and mpirun
  returns non-zero well within 60 s of the death. Nothing hangs.
* The run killed inside SecPC resumes under mpirun to the uninterrupted run's result; a
  corrupted checkpoint is refused on every rank before any MPC starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher._mpirun import ROOT, SMALL, mpirun


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same_partitions(a: list[dict], b: list[dict]) -> bool:
    """Same clusters every round: restarts that end in one partition with exactly equal
    silhouettes may be picked differently under fixed point, renaming the labels (README)."""
    return len(a) == len(b) and all(
        (ra["assignment"][i] == ra["assignment"][j]) == (rb["assignment"][i] == rb["assignment"][j])
        for ra, rb in zip(a, b) for i in ra["assignment"] for j in ra["assignment"])


def _assert_clean_end(job, dead: int, who: str, survivors: list[int]) -> None:
    assert job.returncode != 0, job.out[-3000:]
    lines = job.abort_lines()
    assert sorted(lines) == survivors, job.out[-3000:]
    for r in survivors:
        assert f"missing rank {dead} ({who})" in lines[r], lines[r]
    died = job.first(rf"(aborting in phase|process rank {dead} .* exited)")
    assert job.seconds - died < 60, f"mpirun returned {job.seconds - died:.0f} s after the death"


@pytest.mark.timeout(900)
def test_secfpp_matches_plaintext_twin_survives_a_kill_in_secpc_and_resumes(tmp_path):
    sec, plain, cut = tmp_path / "secfpp", tmp_path / "plain", tmp_path / "cut"
    job = mpirun([*SMALL, "rounds=3", "--run-dir", str(sec)])
    assert job.returncode == 0, job.out[-4000:]
    assert "results:" in job.out and "local training on: cpu (ranks 0-2); CrypTen on cpu" in job.out

    q = subprocess.run(
        [sys.executable, "-m", "launcher", "run", *SMALL, "rounds=3", "method=clustered", "--run-dir", str(plain)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert q.returncode == 0, q.stderr[-3000:]
    a, b = _rows(sec), _rows(plain)
    assert [r["k"] for r in a] == [r["k"] for r in b]
    assert _same_partitions(a, b)
    for ra, rb in zip(a, b):
        assert abs(ra["mean_acc"] - rb["mean_acc"]) <= 0.005
        assert ra["mpc"]["rounds"] > 0 and ra["mpc"]["bytes_per_party"] > 0
        assert ra["insecure_dealer"] is False
    # the launcher keeps the offline dealer's plans (mpc.reuse_plans): a block whose sizes were
    # seen in an earlier round makes no dry run and no plan broadcast
    offline = [r["mpc_phases"]["total"]["offline_rounds"] for r in a]
    assert min(offline[1:]) < offline[0], offline
    summary = json.loads((sec / "summary.json").read_text())
    assert summary["evaluation_gathered"] is True and "mpc_over_local" in summary
    assert summary["train_devices"] == ["cpu"] * 3

    # client 1 SIGKILLed inside SecPC's Lloyd iterations of round 2
    job = mpirun([*SMALL, "rounds=3", "--run-dir", str(cut)], env={"SECFPP_FAULT": "rank=1,phase=lloyd,round=2"})
    _assert_clean_end(job, 1, "client 1", survivors=[0, 2, 3])
    lines = job.abort_lines()
    assert all(lines[r].startswith(f"[rank {r}] aborting in phase secpc:") for r in (0, 2)), lines
    assert lines[3].startswith("[rank 3] aborting in phase dealer"), lines[3]
    assert [r["round"] for r in _rows(cut)] == [1]  # lost: only the round in flight

    job = mpirun(["--resume", str(cut)])
    assert job.returncode == 0, job.out[-4000:]
    c = _rows(cut)
    assert [r["round"] for r in c] == [1, 2, 3]
    assert [r["k"] for r in c] == [r["k"] for r in a]
    assert _same_partitions(c, a)
    # the shares' randomness is fresh in every run, so fixed-point rounding may move a test sample
    assert abs(c[-1]["mean_acc"] - a[-1]["mean_acc"]) <= 0.005

    # a corrupted shard: every rank refuses the resume before any MPC starts
    shard = sec / "checkpoints" / "rank-2" / "round-0002.pt"
    assert shard.parent.stat().st_mode & 0o777 == 0o700  # each party's shards in its own directory
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    job = mpirun(["--resume", str(sec)])
    assert job.returncode != 0
    for r in range(4):
        assert f"[rank {r}] error: set-up failed on 1 rank(s), stopping before any MPC starts" in job.out, job.out[-3000:]
    assert f"rank 2: checkpoint {shard} is truncated or corrupt (checksum mismatch)" in job.out


@pytest.mark.timeout(300)
def test_dealer_killed_during_the_reveal_ends_every_client(tmp_path):
    """Also runs without evaluation traffic: each rank logs only its own client, no labels."""
    run_dir = tmp_path / "dies"
    job = mpirun([*SMALL, "rounds=50", "evaluation.gather=false", "--run-dir", str(run_dir)],
                 env={"SECFPP_FAULT": "rank=3,phase=reveal,round=2"})
    _assert_clean_end(job, 3, "TTP dealer", survivors=[0, 1, 2])
    assert not (run_dir / "summary.json").exists()
    # the reveal needs no triples, so round 2 may still complete; round 3 cannot start its SecPC
    assert [r["round"] for r in _rows(run_dir)] in ([1], [1, 2])
    for rank, name in ((0, "metrics.jsonl"), (1, "metrics.rank-1.jsonl"), (2, "metrics.rank-2.jsonl")):
        rows = [json.loads(line) for line in (run_dir / name).read_text().splitlines()]
        assert rows and all(list(r["acc"]) == [str(rank)] for r in rows), rows
        assert all("assignment" not in r and "ari" not in r for r in rows)
