"""Where a rank stands, and a clean, named end when the job breaks.

Why: in an ``mpirun`` job a rank that loses a peer is usually blocked in C code (a gloo
receive, an MPI wait), where Python's signal handlers never run. Open MPI 5 answers the death
of a rank by sending every survivor SIGCONT, then SIGTERM, then SIGKILL after a grace period
(observed: survivors see SIGTERM ~0.3 s after the death; ``mpirun`` returns ~1.5 s later).
Blocking SIGTERM and ``sigwait``-ing for it does not work: Open MPI's own threads unblock
it. What does work: Python's C-level handler writes the signal number to the wakeup fd
(``signal.set_wakeup_fd``) in whichever thread receives it, and a watcher thread reading that
fd prints ``[rank r] aborting in phase <phase>: <reason>; missing: <who>`` and exits
non-zero while the main thread is still stuck. A failure the rank itself raises gets the
same line (:func:`describe`).

"Who is missing" comes from the (pid, host) of every rank, exchanged once at start-up: a
peer on this host whose process is gone is named; peers on other hosts cannot be checked.

Injected faults for tests and the fault matrix (``SECFPP_FAULT``, ``SECFPP_POISON``,
``SECFPP_DROP``) live apart, in :mod:`launcher.fault_hooks`; this module only calls them at
each phase it enters.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from launcher import fault_hooks

if TYPE_CHECKING:
    from collections.abc import Callable

#: The launcher's phases in order; SecPC's own steps (share, lloyd, criterion, aggregate,
#: reveal, ...) are entered as they start, while the launcher's phase is ``secpc``.
PHASES = ("start", "setup", "join", "train", "secpc", "evaluate", "checkpoint", "dealer", "done")
_SIGNALS = {signal.SIGTERM, signal.SIGHUP}
LINGER_S = 1.0


@dataclass
class _State:
    rank: int = 0
    phase: str = "start"
    round: int | None = None  # 1-based round in flight
    roles: list[str] = field(default_factory=list)  # per rank: "client 3", "TTP dealer"
    pids: list[tuple[int, str]] = field(default_factory=list)  # per rank: (pid, host)


_state = _State()


def watch(rank: int) -> None:
    """Turn SIGTERM/SIGHUP into a named, non-zero exit, even while the main thread is in C.

    Call from the main thread (``set_wakeup_fd`` requires it)."""
    _state.rank = rank
    fault_hooks.arm()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)
    for sig in _SIGNALS:
        signal.signal(sig, _ignore)  # the watcher acts; the main thread just carries on until it exits
    threading.Thread(target=_watcher, args=(read_fd,), name="secfpp-fault-watcher", daemon=True).start()


def _ignore(signum: int, frame: object) -> None:
    pass


def _watcher(read_fd: int) -> None:
    while True:
        data = os.read(read_fd, 64)
        sigs = [b for b in data if b in _SIGNALS]
        if sigs:
            break
    abort(f"{signal.Signals(sigs[0]).name} (mpirun stops the job when a rank dies)", 128 + sigs[0])


_aborting = threading.Lock()


def abort(reason: str, code: int = 1) -> None:
    """Print this rank's line and exit ``code`` at once (no MPI_Abort: Open MPI may drop the
    other ranks' last output when a job is aborted; a non-zero exit makes mpirun SIGTERM them,
    and each prints its own line). Only the first caller reports; a second one waits for the exit."""
    if not _aborting.acquire(blocking=False):
        while True:
            time.sleep(60)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream in use by the stuck main thread
            pass
    os.write(2, (describe(reason) + "\n").encode())
    time.sleep(LINGER_S)  # stay visible a moment, so that other survivors do not count this rank as missing
    os._exit(code)


def set_peers(pids: list[tuple[int, str]], roles: list[str]) -> None:
    """Every rank's (pid, host) and role, in rank order (from one start-up exchange)."""
    _state.pids, _state.roles = list(pids), list(roles)


def me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def enter(phase: str, round_idx: int | None = None) -> None:
    """This rank now works on ``phase`` (of 0-based round ``round_idx``); fires an injected fault."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
    _state.phase = phase
    if round_idx is not None:
        _state.round = round_idx + 1
    fault_hooks.maybe_fire(phase, _state.rank, _state.round, _state.roles, _state.pids)


def enter_step(step: str) -> None:
    """A step inside the current phase (SecPC's share / lloyd / reveal ...): listener for mpc.stats."""
    base = _state.phase.split(":", 1)[0]
    _state.phase = f"{base}:{step}"
    fault_hooks.maybe_fire(step, _state.rank, _state.round, _state.roles, _state.pids)


def where() -> str:
    return _state.phase + (f" (round {_state.round})" if _state.round is not None else "")


def missing() -> list[str]:
    """Peers on this host whose process has gone (or is a zombie), as "rank r (role)"."""
    host = socket.gethostname()
    gone = []
    for r, (pid, peer_host) in enumerate(_state.pids):
        if r != _state.rank and peer_host == host and not _alive(pid):
            gone.append(f"rank {r} ({_state.roles[r]})" if r < len(_state.roles) else f"rank {r}")
    return gone


class PeerLost(RuntimeError):
    """A peer this rank cannot go on without (a compute party, the dealer) is gone."""


def gone(rank: int) -> bool:
    """Whether peer ``rank`` is known to be dead (on this host; a peer elsewhere is never known gone)."""
    if rank == _state.rank or rank >= len(_state.pids):
        return False
    pid, host = _state.pids[rank]
    return host == socket.gethostname() and not _alive(pid)


def require_alive(ranks: list[int]) -> "Callable[[], None]":
    """A check that raises :class:`PeerLost` naming the first of ``ranks`` found dead.

    Why: under ``mpirun --enable-recovery`` (``mpc.tolerate_rank_loss``) no SIGTERM comes when a
    rank dies, and a rank waiting on a dead compute party would wait its whole ``mpc.wait_s``."""

    def check() -> None:
        for r in ranks:
            if gone(r):
                role = f" ({_state.roles[r]})" if r < len(_state.roles) else ""
                raise PeerLost(f"rank {r}{role} is gone")

    return check


def finish(code: int) -> None:
    """Leave now with ``code``, without ``MPI_Finalize``: Open MPI 5.0.11 can hang in it forever
    once a peer has died (seen in 3 of 7 runs with a killed rank on 2 busy cores). Only for a run
    whose results are on disk and whose job was started with ``--enable-recovery`` (there mpirun
    takes a rank that exits without finalizing as a plain exit). A non-zero exit first lingers
    :data:`LINGER_S`: Open MPI 5 drops output that a rank printed just before it exited non-zero."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing left to say
            pass
    if code:
        time.sleep(LINGER_S)
    os._exit(code)


def describe(reason: str) -> str:
    """The one line every failing rank prints: who, where, why, and which peers are gone."""
    gone = missing()
    who = f"missing {', '.join(gone)}" if gone else "no peer on this host is missing"
    return f"[rank {_state.rank}] aborting in phase {where()}, {who}: {reason}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
