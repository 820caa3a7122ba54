"""``python -m launcher ranks --config C [k=v ...]``: print the mpirun process count a config needs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from launcher.config import Config, ConfigError, load_config


def world_size(cfg: Config) -> int:
    """Plaintext methods: one rank per client; SecFPP: the party world's own count (dealer included)
    in the peer topology, client ranks + compute parties + dealer in the servers topology."""
    from launcher.methods import get

    if not get(cfg.method).uses_mpc:
        return cfg.n_clients
    if cfg.mpc.topology == "servers":
        return server_layout(cfg).world_size
    from mpc.runtime import PartySpec

    return PartySpec(cfg.n_clients, dealer=cfg.mpc.dealer,  # type: ignore[arg-type]
                     allow_insecure=cfg.mpc.allow_insecure).world_size


def server_layout(cfg: Config) -> Any:
    """The servers topology's ranks (:class:`mpc.servers.ServerLayout`) for this config."""
    from mpc.servers import ServerLayout

    return ServerLayout(cfg.mpc.servers, cfg.mpc.client_ranks, cfg.n_clients, cfg.mpc.dealer)


#: One host: Open MPI's TCP transport on loopback only (on one host it uses shared memory anyway;
#: this keeps the client ranks' share messages off every network interface should it pick TCP).
#: PRRTE's out-of-band launch channel cannot be restricted the same way in Open MPI 5.0.11 (with
#: ``oob_tcp_if_include lo`` it finds "no network interfaces"); it carries launch control, not shares.
MPIRUN_ONE_HOST = ("mpirun", "--oversubscribe", "--mca", "btl_tcp_if_include", "lo")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher ranks",
                                description="How many MPI processes a config needs (or the whole one-host mpirun line).")
    p.add_argument("--config")
    p.add_argument("--command", action="store_true", help="print the one-host mpirun command line instead")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command:
        import shlex

        line = [*MPIRUN_ONE_HOST, "-np", str(world_size(cfg)), "python", "-m", "launcher", "run",
                *(["--config", args.config] if args.config else []), *args.overrides]
        print(shlex.join(line))
    else:
        print(world_size(cfg))
    return 0
