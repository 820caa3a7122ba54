"""Command dispatch. Each command lives in its own module and exposes ``main(argv) -> int``.

Commands are imported lazily so that, e.g., ``bench train`` never imports CrypTen and
``bench cluster`` never imports open_clip.
"""

from __future__ import annotations

import importlib

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("launcher.run", "one experiment (SecFPP under mpirun, or a baseline)"),
    "compare": ("launcher.compare", "several methods x seeds (x epsilons): table and plots"),
    "ranks": ("launcher.ranks", "print the mpirun -np a config needs"),
    "bench": ("launcher.bench", "benchmarks that print one JSON object (cluster, train)"),
    "audit": ("launcher.audit.command", "privacy audit of a run or compare directory (MIA, stealing, transcript)"),
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items())
    return f"usage: python -m launcher <command> [args...]\n\ncommands:\n{rows}\n"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", end="")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
