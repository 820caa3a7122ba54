"""``python -m launcher ranks --config C [k=v ...]``: print the mpirun process count a config needs.

A thin command line over :mod:`launcher.topology`, where the world's layout is written."""

from __future__ import annotations

import argparse
import sys

from launcher.config import ConfigError, load_config
from launcher.topology import MPIRUN_ONE_HOST, one_host_command, world_size

__all__ = ["MPIRUN_ONE_HOST", "main", "world_size"]


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
    print(one_host_command(cfg, args.config, args.overrides) if args.command else world_size(cfg))
    return 0
