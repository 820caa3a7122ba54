"""``python -m launcher ranks --config C [k=v ...]``: print the mpirun process count a config needs."""

from __future__ import annotations

import argparse
import sys

from launcher.config import ConfigError, load_config


def world_size(method: str, n_clients: int, dealer: str) -> int:
    """Plaintext methods: one rank per client; MPC methods: the party world's own count (dealer included)."""
    from launcher.methods import get
    from mpc.runtime import PartySpec

    return PartySpec(n_clients, dealer=dealer).world_size if get(method).uses_mpc else n_clients  # type: ignore[arg-type]


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
    print(world_size(cfg.method, cfg.n_clients, cfg.mpc.dealer))
    return 0
