"""Party job for tests/mpc/test_servers.py, run under a real ``mpirun``:

    mpirun [--enable-recovery] -np R+S+1 python tests/mpc/_servers_jobs.py MODE OUT R

Clients 0..N-1 on client ranks 0..R-1, then S=3 compute parties and the dealer. One server-aided
SecPC round on public blobs; every rank writes what it learnt to OUT as JSON.

* ``plain``: nothing special; compute party 0 also writes every word it received from clients
  (``received.npy``) and every client rank its encoded secrets (``secrets-<rank>.npy``).
* ``leak``: like ``plain`` but the clients' sharing is replaced by a leaky one (compute party
  0 gets the plaintext encoding): the test must catch it.
* ``drop``: the last client rank SIGKILLs itself before it shares, or does anything else with
  the others (run with ``--enable-recovery`` so mpirun lets the others go on).
* ``count``, ``range``, ``straddle``, ``negative-id`` (integrity): the last client rank deviates
  in what it sends (:data:`ATTACKS`), skipping its own range check; the others are honest. The
  attacks speak whatever share format the code under test uses (``encode_inputs``), so the
  same job shows them working on code without the fixes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launcher.bench.secpc import blobs  # noqa: E402
from mpc import servers  # noqa: E402
from mpc.layout import SecPCConfig  # noqa: E402

N, M, D, S = 9, 8, 16, 3
ATTACKS = ("count", "range", "straddle", "negative-id")
CONFIG = SecPCConfig(2, 3, 5, 0, restarts=2, reveal_own_assignment=True)
DEADLINE_S = 4.0


def main(mode: str, out: Path, n_client_ranks: int) -> None:
    from mpi4py import MPI

    from mpc.compat import import_crypten
    from mpc.runtime import PartySpec, init_from_mpi, shutdown

    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    layout = servers.ServerLayout(S, n_client_ranks, N)
    X, P = blobs(N, M, D, 3, 1, 0.5)
    if mode == "drop" and rank == n_client_ranks - 1:
        # before any collective it is part of: a rank that dies right after leaving a collective
        # can take its last, still unflushed message with it and leave the others inside it
        os.kill(os.getpid(), signal.SIGKILL)
    if not layout.is_client_rank(rank):  # the CrypTen world: a collective over its members only
        sub = world.Create_group(world.Get_group().Incl(list(range(n_client_ranks, world.Get_size()))))
        party = init_from_mpi(PartySpec(S), comm=sub)
        if party.is_dealer:
            return
        received: list[np.ndarray] = []
        recv = servers._recv

        def recording(comm, src, tag, count, **kw):  # the buffers this compute party holds after each receive
            buf = recv(comm, src, tag, count, **kw)
            if buf is not None:
                received.append(buf.copy())
            return buf

        servers._recv = recording
        import_crypten().communicator.get().barrier()
        inbox = servers.Inbox(world, layout, (M, D))
        res = servers.serve_round(world, layout, 0, CONFIG, None, DEADLINE_S, 120, inbox=inbox)
        if mode == "straddle":  # the late share, answered at most once
            servers.drain_late(inbox, 0, [n_client_ranks - 1], 2 * DEADLINE_S)
        shutdown(party)
        s = rank - n_client_ranks
        (out / f"server-{s}.json").write_text(json.dumps({
            "k": res.k, "included": res.included, "dropped": res.dropped,
            "invalid": getattr(res, "invalid", []), "refused": {str(r): w for r, w in getattr(res, "refused", {}).items()}}))
        if s == 0:
            np.save(out / "received.npy", np.concatenate([r[4 + int(r[1]):] for r in received]))  # past the public header and ids
        return
    ids = layout.clients_of(rank)
    if mode in ATTACKS and rank == n_client_ranks - 1:
        res = attack(mode, world, layout, ids, X[ids], P[ids])
        (out / f"client-{rank}.json").write_text(json.dumps({"k": res.k, "included": res.included}))
        return
    np.save(out / f"secrets-{rank}.npy", servers.encode_inputs(X[ids], P[ids], layout.bits).numpy())
    if mode == "leak":
        def leaky(values, n, rng=None):  # share 0 *is* the value, the others are zero
            return [values.clone()] + [torch.zeros_like(values) for _ in range(n - 1)]

        servers.split_shares = leaky
    res = servers.client_round(world, layout, 0, ids, X[ids], P[ids], 120)
    (out / f"client-{rank}.json").write_text(json.dumps({
        "k": res.k, "included": res.included, "labels": res.labels,
        "rows": {c: r.tolist() for c, r in res.rows.items()},
    }))


def attack(mode: str, world, layout, ids: list[int], x: torch.Tensor, p: torch.Tensor):
    """A client rank that deviates in what it sends (never in how it computes); returns what it
    is answered. No own range check: nothing a client supplies is trusted by the others."""
    import time

    enc = servers.encode_inputs(x, p, layout.bits)  # [xq | pq] (or, on older code, [xq | 1 | pq])
    width = enc.shape[1] - D
    if mode == "count":  # a member count of -5 per row, where a count column would be
        if width == M:  # the format has none: the attacker adds it
            enc = torch.cat([enc[:, :M], torch.ones(len(ids), 1, dtype=torch.long), enc[:, M:]], 1)
            width += 1
        enc[:, M] = -5
    if mode == "range":  # one prompt entry of ring word 2^31 (32768.0), over the bound for N = 9
        enc[0, width] = 2**31
    claimed = [ids[0] - N] + ids[1:] if mode == "negative-id" else ids  # owners[ids[0] - N] is its own
    head = np.array([0, len(ids), width, D] + claimed, dtype=np.int64)
    msgs = [np.concatenate([head, sh.numpy().ravel()]) for sh in servers.split_shares(enc, S)]
    reqs = [world.Isend(msgs[0], dest=layout.server_rank(0), tag=servers.TAG_SHARES)]
    if mode == "straddle":  # on time at compute party 0, past the deadline at the others
        time.sleep(DEADLINE_S + 2)
    reqs += [world.Isend(msgs[s], dest=layout.server_rank(s), tag=servers.TAG_SHARES) for s in range(1, S)]
    res = servers.receive_outputs(world, layout, 0, D, 120)
    servers._wait_all(reqs, 30)
    return res


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
    if sys.argv[1] == "drop":
        # Open MPI 5.0.11 with --enable-recovery: after a peer died, MPI_Finalize sometimes never
        # returns (seen in 3 of 7 runs on 2 busy cores, with every result already written), so the
        # survivors leave without it
        sys.stdout.flush()
        os._exit(0)
