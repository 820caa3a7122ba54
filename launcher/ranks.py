"""``python -m launcher ranks --config C [k=v ...]``: print the mpirun process count a config needs."""

from __future__ import annotations

import argparse
import sys

from launcher.config import ConfigError, load_config


def world_size(method: str, n_clients: int, dealer: str) -> int:
    from launcher.methods import get

    return n_clients + (1 if get(method).uses_mpc and dealer == "ttp" else 0)


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
