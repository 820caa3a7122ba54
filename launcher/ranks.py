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

    return PartySpec(cfg.n_clients, dealer=cfg.mpc.dealer).world_size  # type: ignore[arg-type]


def server_layout(cfg: Config) -> Any:
    """The servers topology's ranks (:class:`mpc.servers.ServerLayout`) for this config."""
    from mpc.servers import ServerLayout

    return ServerLayout(cfg.mpc.servers, cfg.mpc.client_ranks, cfg.n_clients, cfg.mpc.dealer)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher ranks")
    p.add_argument("--config")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(world_size(cfg))
    return 0
