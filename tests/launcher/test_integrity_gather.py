"""Integrity, item 4: with ``evaluation.gather`` only client rank 0 learns the true domains.

Three real MPI ranks, each holding one client of a different domain, call the function the run
loop uses (:func:`launcher.run.evaluation_domains`); each writes what it then holds. Rank 0
must hold all three; ranks 1 and 2 only their own (an all-gather would hand them everyone's).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.launcher._mpirun import ENV, MPIRUN, ROOT

JOB = """
import json, sys
from types import SimpleNamespace
from launcher.run import evaluation_domains
from launcher.world import World
world = World.detect()
held = evaluation_domains(world, [SimpleNamespace(cid=world.rank, domain=10 + world.rank)], gather=True)
open(f"{sys.argv[1]}/rank-{world.rank}.json", "w").write(json.dumps(held))
"""


def test_integrity_true_domains_reach_rank_0_only(tmp_path):
    done = subprocess.run([MPIRUN, "--oversubscribe", "-np", "3", sys.executable, "-c", JOB, str(tmp_path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    held = {r: json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(3)}
    assert held[0] == {"0": 10, "1": 11, "2": 12}
    assert held[1] == {"1": 11} and held[2] == {"2": 12}, held
