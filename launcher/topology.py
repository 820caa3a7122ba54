"""Who is who in a ``launcher run`` job: the world's size, each rank's role, the servers layout.

Why one module: the peer topology (every client a CrypTen party, plus the TTP dealer), the
servers topology (client ranks, compute parties, the dealer; :class:`mpc.servers.ServerLayout`)
and plaintext methods (one rank per client, or one process) each fix how many processes a
config needs and what each rank does. The launcher's world-size check, its failure messages
("missing rank 2 (compute party 0)"), ``python -m launcher ranks`` and ``compare`` all read
that from here, so the layout is written once.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING

from launcher.config import Config, ConfigError
from launcher.world import World, launched_by_mpi
from mpc.layout import round_robin, rows_of

if TYPE_CHECKING:
    from mpc.runtime import PartySpec
    from mpc.servers import ServerLayout

#: One host: Open MPI's TCP transport on loopback only (on one host it uses shared memory anyway;
#: this keeps the client ranks' share messages off every network interface should it pick TCP).
#: PRRTE's out-of-band launch channel cannot be restricted the same way in Open MPI 5.0.11 (with
#: ``oob_tcp_if_include lo`` it finds "no network interfaces"); it carries launch control, not shares.
MPIRUN_ONE_HOST = ("mpirun", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo")

#: Open MPI 5's switch that keeps the other ranks running when one dies (needed for
#: ``mpc.tolerate_rank_loss``: without it ``mpirun`` ends the whole job on the first death).
RECOVERY_FLAG = "--enable-recovery"


def uses_servers(cfg: Config) -> bool:
    """Whether this run is SecFPP in the server-aided topology."""
    from launcher.methods import get

    return get(cfg.method).uses_mpc and cfg.mpc.topology == "servers"


def server_layout(cfg: Config) -> "ServerLayout":
    """The servers topology's ranks for this config."""
    from mpc.servers import ServerLayout  # late: ``launcher ranks`` should not load CrypTen's modules

    return ServerLayout(cfg.mpc.servers, cfg.mpc.client_ranks, cfg.n_clients, cfg.mpc.dealer)


def world_size(cfg: Config) -> int:
    """Plaintext methods: one rank per client; SecFPP: the party world's own count (dealer included)
    in the peer topology, client ranks + compute parties + dealer in the servers topology."""
    from launcher.methods import get

    if not get(cfg.method).uses_mpc:
        return cfg.n_clients
    if cfg.mpc.topology == "servers":
        return server_layout(cfg).world_size
    return party_spec(cfg, cfg.n_clients).world_size


def party_spec(cfg: Config, n_parties: int) -> "PartySpec":
    """The party world of a run, from ``cfg.mpc``, written once for both topologies
    (``n_parties``: the clients in ``peer``, the compute parties in ``servers``; imported late,
    as above)."""
    from mpc.runtime import PartySpec

    return PartySpec(n_parties, dealer=cfg.mpc.dealer, address=cfg.mpc.address,  # type: ignore[arg-type]
                     timeout_s=cfg.mpc.timeout_s, allow_insecure=cfg.mpc.allow_insecure,
                     reuse_plans=cfg.mpc.reuse_plans, dealer_lookahead=cfg.mpc.dealer_lookahead)


def needs_recovery(cfg: Config) -> bool:
    """Whether the job must be started with ``mpirun --enable-recovery``: a servers run that asks
    to survive a dead client rank (``mpc.tolerate_rank_loss``)."""
    return uses_servers(cfg) and cfg.mpc.tolerate_rank_loss


def mpirun_line(cfg: Config, run_args: list[str]) -> list[str]:
    """The one-host ``mpirun`` command line that runs ``python -m launcher run run_args``."""
    head = [*MPIRUN_ONE_HOST, *([RECOVERY_FLAG] if needs_recovery(cfg) else [])]
    return [*head, "-np", str(world_size(cfg)), "python", "-m", "launcher", "run", *run_args]


def client_ranks_for(cfg: Config, world: World, uses_mpc: bool) -> int:
    """How many ranks hold clients; raises ConfigError with the right mpirun line if wrong."""
    args = " ".join(sys.argv[2:])
    if uses_mpc and cfg.mpc.topology == "servers":
        layout = server_layout(cfg)
        flag = f"{RECOVERY_FLAG} " if needs_recovery(cfg) else ""
        hint = (f"mpirun {flag}-np {layout.world_size} python -m launcher run {args}   # "
                f"{layout.n_client_ranks} client rank(s) + {layout.n_servers} compute parties + "
                f"{'1 TTP dealer' if cfg.mpc.dealer == 'ttp' else 'no dealer'}")
        if not launched_by_mpi() or world.size != layout.world_size:
            got = f"mpirun started {world.size} processes" if launched_by_mpi() else "not started by mpirun"
            raise ConfigError(f"mpc.topology=servers: {got}; it needs {layout.world_size}:\n  {hint}")
        return layout.n_client_ranks
    if uses_mpc:
        spec = party_spec(cfg, cfg.n_clients)
        if not launched_by_mpi():
            raise ConfigError(
                f"method={cfg.method} runs one party per client under mpirun:\n  "
                + spec.mpirun_hint("python -m launcher run " + args)
            )
        if world.size != spec.world_size:
            raise ConfigError(
                f"mpirun started {world.size} processes; {cfg.n_clients} clients with "
                f"dealer={cfg.mpc.dealer} need {spec.world_size}:\n  "
                + spec.mpirun_hint("python -m launcher run " + args)
            )
        return cfg.n_clients
    if world.size not in (1, cfg.n_clients):
        raise ConfigError(
            f"method={cfg.method}: run in one process or with one rank per client "
            f"(mpirun -np {cfg.n_clients}); got {world.size} processes"
        )
    return world.size


def roles(n_ranks: int, n_client_ranks: int, n_clients: int, n_servers: int = 0) -> list[str]:
    """Who each rank is, for failure messages: "client 3", "clients 0,3", "compute party 1", "TTP dealer"."""
    out = []
    for r in range(n_ranks):
        held = rows_of(r, round_robin(n_clients, n_client_ranks)) if r < n_client_ranks else []
        if held:
            out.append(("client " if len(held) == 1 else "clients ") + ",".join(map(str, held)))
        elif r < n_client_ranks + n_servers:
            out.append(f"compute party {r - n_client_ranks}")
        else:
            out.append("TTP dealer")
    return out


def recovery_enabled() -> bool | None:
    """Whether the ``mpirun`` that started this process was given ``--enable-recovery``.

    Open MPI 5 tells a rank nothing about it (no environment variable, and mpi4py has no MPI_T
    access to ``mpi_ft_enable``), so this reads the command line of the ``mpirun``/``prterun``
    among this process's ancestors. ``None`` when there is none on this host (a rank started by
    a remote ``prted``): the launcher asks rank 0, which runs where ``mpirun`` does."""
    pid = os.getppid()
    for _ in range(32):
        if pid <= 1:
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        name = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""
        if name in ("mpirun", "mpiexec", "prterun", "orterun"):
            words = [w.decode(errors="replace") for w in argv[1:]]
            return RECOVERY_FLAG in words or any(w.startswith("--with-ft") for w in words)
        pid = ppid
    return None


def one_host_command(cfg: Config, config_path: str | None, overrides: list[str]) -> str:
    """``python -m launcher ranks --command``'s line (quoted for a shell)."""
    return shlex.join(mpirun_line(cfg, [*(["--config", config_path] if config_path else []), *overrides]))
