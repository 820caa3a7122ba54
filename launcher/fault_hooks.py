"""Faults injected on purpose, for the tests and ``scripts/fault_matrix.py``; never set in a real run.

They are kept apart from :mod:`launcher.faults` (which reports real failures) so that what a
production run does on a failure can be read without the test machinery. Each hook is off
unless its environment variable is set:

* ``SECFPP_FAULT="rank=R,phase=P[,round=N]"`` SIGKILLs rank R when the job first reaches
  phase P (in round N, 1-based, if given). Phases are :data:`launcher.faults.PHASES`;
  ``aggregate``, ``reveal`` and the other SecPC steps are reported by :mod:`mpc.stats` as they
  start. A client rank kills itself; the TTP dealer, which runs no launcher code while it
  serves, is killed by client rank 0 when that rank reaches the phase.
* ``SECFPP_POISON="rank=R,round=N,value=nan"`` writes ``value`` (nan, inf, 1e9, ...) into one
  entry of rank R's domain prompts just before round N's aggregation; the MPC layer must
  refuse it on every rank before any value is shared.
* ``SECFPP_DROP="round=N,clients=3 7"`` kills clients 3 and 7 in round N (1-based): from that
  round on their rank neither trains nor shares them, as when a device hosting a client dies
  mid-round in a many-clients-per-rank simulation; the round goes on without them.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FAULT_ENV = "SECFPP_FAULT"
POISON_ENV = "SECFPP_POISON"
DROP_ENV = "SECFPP_DROP"


@dataclass(frozen=True)
class Fault:
    """An injected SIGKILL: rank ``rank`` dies on entering ``phase`` (in ``round``, 1-based)."""

    rank: int
    phase: str
    round: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Fault":
        fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
        unknown = set(fields) - {"rank", "phase", "round"}
        if "rank" not in fields or "phase" not in fields or unknown:
            raise ValueError(f"{FAULT_ENV}={text!r}: expected rank=R,phase=P[,round=N]")
        return cls(int(fields["rank"]), fields["phase"], int(fields["round"]) if "round" in fields else None)


_armed: Fault | None = None
_fired = False


def arm() -> None:
    """Read ``SECFPP_FAULT`` (once per rank, at start-up)."""
    global _armed, _fired
    text = os.environ.get(FAULT_ENV)
    _armed, _fired = (Fault.parse(text) if text else None), False


def maybe_fire(phase: str, rank: int, round_1: int | None, roles: list[str], pids: list[tuple[int, str]]) -> None:
    """SIGKILL the armed target if this rank, entering ``phase`` of round ``round_1``, is the trigger."""
    global _fired
    f = _armed
    if f is None or _fired or f.phase != phase:
        return
    if f.round is not None and round_1 != f.round:
        return
    if f.rank == rank:
        _fired = True
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    is_dealer_target = f.rank < len(roles) and roles[f.rank] == "TTP dealer"
    if is_dealer_target and rank == 0 and f.rank < len(pids):
        _fired = True
        try:
            os.kill(pids[f.rank][0], signal.SIGKILL)
        except ProcessLookupError:
            pass  # it died on its own already


def poison(prompts: dict[int, "torch.Tensor"], round_idx: int, rank: int) -> dict[int, "torch.Tensor"]:
    """``prompts`` with ``SECFPP_POISON``'s value written into entry [0, 0] of each, on the chosen rank and round."""
    text = os.environ.get(POISON_ENV)
    if not text:
        return prompts
    fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    if int(fields.get("rank", -1)) != rank or int(fields.get("round", 1)) != round_idx + 1:
        return prompts
    out = {}
    for cid, p in prompts.items():
        p = p.clone()
        p.view(-1)[0] = float(fields.get("value", "nan"))
        out[cid] = p
    return out


def dropped(cid: int, round_idx: int) -> bool:
    """Whether ``SECFPP_DROP`` has killed client ``cid`` by 0-based round ``round_idx``."""
    text = os.environ.get(DROP_ENV)
    if not text:
        return False
    fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    if set(fields) != {"round", "clients"}:
        raise ValueError(f"{DROP_ENV}={text!r}: expected round=N,clients=C1 C2 ...")
    return round_idx + 1 >= int(fields["round"]) and cid in {int(c) for c in fields["clients"].split()}
