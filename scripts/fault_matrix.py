"""The fault matrix behind the README's fault table (scripts/fault_matrix.sh runs it).

For a client rank and, separately, the TTP dealer, at each phase (backbone set-up, local
training, inside SecPC's Lloyd iterations, the reveal, while a checkpoint is written): SIGKILL
that rank with the ``SECFPP_FAULT`` hook in round 2 of a 3-round run of the smallest SecFPP
world (3 clients + dealer), record what every surviving rank printed, how long mpirun took to
return after the first report, and which rounds were lost; then ``--resume`` (a fresh run when
nothing was written) and compare its final metrics with an uninterrupted run of the same seed
(same k, mean accuracy within 0.5 points: the shares' randomness is fresh in every run, so
fixed-point rounding may move a test sample).
Prints a Markdown table. Takes about 15 minutes on 2 cores. Arguments, if any, pick phases
(e.g. ``setup reveal``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.launcher._mpirun import SMALL, mpirun

CLIENT, DEALER = 1, 3
PHASES = [("setup", "backbone set-up"), ("train", "local training"), ("lloyd", "inside SecPC (Lloyd)"),
          ("reveal", "aggregation reveal"), ("checkpoint", "checkpoint write")]


def _rounds(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line)["round"] for line in path.read_text().splitlines()] if path.exists() else []


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="secfpp-faults-"))
    ref = mpirun([*SMALL, "rounds=3", "--run-dir", str(tmp / "ref")])
    assert ref.returncode == 0, ref.out[-3000:]
    want = _final(tmp / "ref")
    print(f"uninterrupted: {ref.seconds:.0f} s, final acc {want['mean_acc']:.4f}, k {want['k']}", file=sys.stderr)
    print("| fault | where injected | what every surviving rank printed | mpirun returned after the first report "
          "| exit code | rounds kept (of 3) | `--resume` final metrics = uninterrupted |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for target, who in ((CLIENT, "client 1"), (DEALER, "TTP dealer")):
        for phase, label in PHASES:
            if sys.argv[1:] and phase not in sys.argv[1:]:
                continue
            run_dir = tmp / f"{phase}-{target}"
            spec = f"rank={target},phase={phase}" + ("" if phase == "setup" else ",round=2")
            job = mpirun([*SMALL, "rounds=3", "--run-dir", str(run_dir)], env={"SECFPP_FAULT": spec})
            lines = job.abort_lines()
            first = min((t for t, line in job.lines if "aborting in phase" in line), default=job.seconds)
            kept = _rounds(run_dir)
            again = mpirun(["--resume", str(run_dir)] if (run_dir / "config.yaml").exists()
                           else [*SMALL, "rounds=3", "--run-dir", str(run_dir)])
            got = _final(run_dir) if again.returncode == 0 else None
            same = ("NO" if got is None or got["k"] != want["k"] or abs(got["mean_acc"] - want["mean_acc"]) > 0.005
                    else "yes (identical)" if got["acc"] == want["acc"] else "yes (within 0.5 pt)")
            printed = "<br>".join(f"`{lines[r].split(': ', 1)[0]}`" for r in sorted(lines))
            print(f"| SIGKILL {who} (rank {target}) | {label} (`{spec}`) | {printed} | {job.seconds - first:.1f} s "
                  f"| {job.returncode} | {len(kept)} | {same} |", flush=True)


if __name__ == "__main__":
    main()
