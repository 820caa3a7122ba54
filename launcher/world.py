"""Where this process stands: a rank of an ``mpirun`` job, or a single process.

The training loop is written over "the clients this process holds". Under ``mpirun`` with
one rank per client each process holds one client; without ``mpirun`` one process holds
them all (plaintext baselines only). Plaintext collectives go through mpi4py, which is
imported only when an MPI launcher is detected, so single-process runs never start MPI; they
carry JSON in byte buffers (:mod:`mpc.wire`), never pickles, so no rank can make another
unpickle arbitrary objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mpc import wire

_MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in _MPI_SIZE_VARS)


@dataclass
class World:
    """Rank and size of the launch, and the plaintext collectives the loop needs."""

    rank: int = 0
    size: int = 1
    _comm: Any = None

    @classmethod
    def detect(cls) -> "World":
        if not launched_by_mpi():
            return cls()
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        return cls(rank=comm.Get_rank(), size=comm.Get_size(), _comm=comm)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def split_clients(self, n_client_ranks: int) -> "World":
        """The sub-world of client ranks ``0..n_client_ranks-1``: a TTP dealer or a compute party
        must stay out of the clients' plaintext collectives.

        Collective: every rank calls it; the other ranks get the sub-world of the non-client
        ranks (the compute parties and the dealer: the CrypTen world of ``mpc.topology=servers``).
        """
        if self._comm is None:
            return self
        is_client = self.rank < n_client_ranks
        sub = self._comm.Split(color=0 if is_client else 1, key=self.rank)
        return World(rank=sub.Get_rank(), size=sub.Get_size(), _comm=sub)

    def allgather(self, obj: Any) -> list[Any]:
        """Gather one object from every rank, in rank order (``[obj]`` in a single process)."""
        if self._comm is None:
            return [obj]
        return wire.allgather(self._comm, obj)

    def gather(self, obj: Any) -> list[Any] | None:
        if self._comm is None:
            return [obj]
        return wire.gather(self._comm, obj, root=0)

    def bcast(self, obj: Any) -> Any:
        if self._comm is None:
            return obj
        return wire.bcast(self._comm, obj, root=0)

    def barrier(self) -> None:
        if self._comm is not None:
            self._comm.Barrier()

    def wait_for_all(self, poll_s: float = 0.05) -> None:
        """A barrier that sleeps while it waits: ranks that wait minutes (for another rank's
        set-up) must not spin the CPU that rank needs. No timeout: mpirun ends the job if a
        rank dies."""
        if self._comm is None:
            return
        import time

        request = self._comm.Ibarrier()
        while not request.Test():
            time.sleep(poll_s)
