"""Failure reports name the phase and the missing party; bad input stops every rank before MPC."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from launcher import fault_hooks, faults
from tests.launcher._mpirun import SMALL, mpirun


def test_fault_spec_parses_and_rejects_garbage():
    assert fault_hooks.Fault.parse("rank=3,phase=secpc,round=1") == fault_hooks.Fault(3, "secpc", 1)
    assert fault_hooks.Fault.parse("phase=setup,rank=0") == fault_hooks.Fault(0, "setup", None)
    with pytest.raises(ValueError, match="expected rank=R,phase=P"):
        fault_hooks.Fault.parse("rank=3,when=later")


def test_describe_names_the_phase_and_the_peer_that_is_gone(monkeypatch):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    monkeypatch.setattr(faults, "_state", faults._State())
    faults.set_peers([faults.me(), (gone.pid, faults.me()[1]), faults.me()], ["client 0", "client 1", "TTP dealer"])
    faults.enter("train", 1)
    faults.enter("secpc", 1)
    faults.enter_step("reveal")
    assert faults.describe("boom") == "[rank 0] aborting in phase secpc:reveal (round 2), missing rank 1 (client 1): boom"
    with pytest.raises(ValueError, match="unknown phase"):
        faults.enter("lunch")


def test_poison_touches_only_the_chosen_rank_and_round(monkeypatch):
    monkeypatch.setenv(fault_hooks.POISON_ENV, "rank=1,round=2,value=inf")
    p = {4: torch.zeros(2, 3)}
    assert fault_hooks.poison(p, 0, 1) is p and fault_hooks.poison(p, 1, 0) is p
    out = fault_hooks.poison(p, 1, 1)
    assert torch.isinf(out[4][0, 0]) and out[4].isfinite().sum() == 5 and p[4].isfinite().all()


@pytest.mark.timeout(300)
def test_a_nan_prompt_stops_every_rank_before_anything_is_shared(tmp_path):
    """Every client rank names the party and the reason (mpirun then stops the dealer)."""
    job = mpirun([*SMALL, "rounds=2", "--run-dir", str(tmp_path / "nan")], env={"SECFPP_POISON": "rank=1,round=1,value=nan"})
    assert job.returncode != 0
    for r in range(3):
        mine = [line for _, line in job.lines if line.startswith(f"[rank {r}]")]
        assert any("party 1: a domain prompt has a NaN or infinite entry" in line for line in mine), job.out[-3000:]
    assert "lloyd" not in job.out


def _image_tree(root, classes):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


@pytest.mark.timeout(300)
def test_class_lists_that_differ_between_parties_stop_every_rank(tmp_path):
    """Ranks 0-1 and 2-3 run in different folders, so the same data.root holds other classes."""
    for where, classes in (("a", ["ant", "bee", "cat"]), ("b", ["ant", "bee", "dog"])):
        _image_tree(tmp_path / where / "data", classes)
    args = [*SMALL, "data.name=imagefolder", "data.root=data", "data.n_domains=1", "data.clients_per_domain=3",
            "data.domains=null", "data.min_samples=4", "--run-dir", str(tmp_path / "run")]
    cmd = [sys.executable, "-m", "launcher", "run", *args]
    job = mpirun([], mpmd=[["-np", "2", "--wdir", str(tmp_path / "a"), *cmd], ["-np", "2", "--wdir", str(tmp_path / "b"), *cmd]])
    assert job.returncode == 2, job.out[-3000:]
    for r in range(4):
        assert f"[rank {r}] error: the parties' class lists differ (rank 0: ['ant', 'bee', 'cat']; " \
               f"rank 2: ['ant', 'bee', 'dog'])" in job.out, job.out[-3000:]
