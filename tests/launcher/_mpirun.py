"""Run ``python -m launcher run`` under a real ``mpirun`` and keep when each output line arrived."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MPIRUN = str(Path(sys.executable).parent / "mpirun")
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "PYTHONPATH": str(ROOT)}
# 3 clients (one per domain) + the TTP dealer: the smallest SecFPP world
SMALL = [
    "--config", str(ROOT / "launcher/configs/default.yaml"),
    "data.clients_per_domain=1", "mpc.min_cluster_size=1", "mpc.allow_insecure=true", "mpc.k_max=3", "mpc.iters=5",
    "train.epochs=1", "evaluation.gather=true", "mpc.timeout_s=30",
]


@dataclass
class Job:
    returncode: int
    lines: list[tuple[float, str]]  # (seconds since start, line)
    seconds: float

    @property
    def out(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def abort_lines(self) -> dict[int, str]:
        """Each rank's ``[rank r] aborting in phase ...`` line (the first one per rank)."""
        found: dict[int, str] = {}
        for _, line in self.lines:
            m = re.search(r"\[rank (\d+)\] aborting in phase .*", line)
            if m:
                found.setdefault(int(m.group(1)), m.group(0))
        return found

    def first(self, pattern: str) -> float:
        return next(t for t, line in self.lines if re.search(pattern, line))


def mpirun(args: list[str], np: int = 4, env: dict[str, str] | None = None, timeout: float = 400,
           mpmd: list[list[str]] | None = None, recovery: bool = False) -> Job:
    """``mpirun -np np python -m launcher run args`` (or an MPMD ``a : b`` line from ``mpmd``);
    ``recovery``: with ``--enable-recovery`` (a dead rank does not end the job)."""
    cmd = [MPIRUN, "--oversubscribe", *(["--enable-recovery"] if recovery else [])]
    for i, part in enumerate(mpmd or [["-np", str(np), sys.executable, "-m", "launcher", "run", *args]]):
        cmd += ([":"] if i else []) + part
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    assert p.stdout is not None
    for raw in p.stdout:
        for line in raw.replace("\0", "").split("\r"):
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
        if time.monotonic() - t0 > timeout:
            p.kill()
            break
    p.wait(timeout=60)
    return Job(p.returncode, lines, time.monotonic() - t0)


def final_prompts(run_dir: Path, ranks: list[int], n_ranks: int) -> dict:
    """Client id -> its domain prompt after the last complete round, from client ranks ``ranks``'
    shards (of a job with ``n_ranks`` client ranks)."""
    from launcher.rundir import RunDir

    rd = RunDir(run_dir)
    last = rd.last_complete_round()
    out = {}
    for r in ranks:
        shard = rd.load_shard(last, r, rd.config_sha({}), n_ranks)
        out.update({int(c): s["domain_ctx"] for c, s in shard["clients"].items()})
    return out
