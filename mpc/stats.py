"""Communication statistics per protocol phase.

On loopback, MPC wall time follows the number of communication rounds, not FLOPs,
so every phase records rounds and bytes next to its seconds. CrypTen counts them
only with ``cfg.communicator.verbose`` on (set by :func:`mpc.runtime.configure_crypten`).
Counts are this party's own: bytes it sent, rounds it took part in.

With the dealer's offline phase (:mod:`mpc.preprocessing`) a phase also carries the part of
its cost spent making its correlated randomness ahead of use: ``offline_seconds`` (party 0's
dry run and batch request to the dealer, the plan broadcast), ``offline_rounds`` and
``offline_bytes``. ``seconds``, ``rounds`` and ``bytes`` stay the phase's totals (offline
included, as every caller has always read them); ``online_seconds`` is the rest.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from mpc.compat import import_crypten

#: Called with a phase's name as it starts, in any CommLog: lets a caller outside ``mpc`` (the
#: launcher's failure reports and fault injection) know which protocol step is in flight.
phase_listeners: list[Callable[[str], None]] = []


@dataclass
class PhaseStats:
    name: str
    seconds: float = 0.0
    rounds: int = 0
    bytes: int = 0
    offline_seconds: float = 0.0
    offline_rounds: int = 0
    offline_bytes: int = 0

    @property
    def online_seconds(self) -> float:
        return self.seconds - self.offline_seconds

    def add(self, other: "PhaseStats") -> None:
        self.seconds += other.seconds
        self.rounds += other.rounds
        self.bytes += other.bytes
        self.offline_seconds += other.offline_seconds
        self.offline_rounds += other.offline_rounds
        self.offline_bytes += other.offline_bytes


def _counters() -> tuple[int, int]:
    comm = import_crypten().communicator.get()
    stats = comm.get_communication_stats()
    return int(stats["rounds"]), int(stats["bytes"])


@dataclass
class CommLog:
    """Accumulates :class:`PhaseStats` by phase name; ``as_dict`` is what the launcher logs."""

    phases: dict[str, PhaseStats] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseStats]:
        for listener in phase_listeners:
            listener(name)
        rounds0, bytes0 = _counters()
        t0 = time.perf_counter()
        current = PhaseStats(name)
        try:
            yield current
        finally:
            rounds1, bytes1 = _counters()
            current.seconds = time.perf_counter() - t0
            current.rounds = rounds1 - rounds0
            current.bytes = bytes1 - bytes0
            self.phases.setdefault(name, PhaseStats(name)).add(current)

    def total(self) -> PhaseStats:
        out = PhaseStats("total")
        for p in self.phases.values():
            out.add(p)
        return out

    def as_dict(self) -> dict[str, dict[str, float]]:
        rows = {name: asdict(p) for name, p in self.phases.items()}
        rows["total"] = asdict(self.total())
        for row in rows.values():
            row.pop("name")
            row["online_seconds"] = row["seconds"] - row["offline_seconds"]
        return rows
