"""``python -m launcher bench <name> [args]``: benchmarks print one JSON object on stdout.

Each benchmark is a module ``launcher.bench.<name>`` with ``main(argv) -> int``.
Multi-party benchmarks run under ``mpirun`` and print from rank 0 only.
"""

from __future__ import annotations

import importlib

BENCHMARKS = {
    "cluster": "SecPC secure k-means vs a naive CrypTen Lloyd loop (run under mpirun)",
    "secpc": "one full adaptive SecPC round, servers or peer topology, vs the plaintext reference (mpirun)",
    "train": "local prompt training with vs without the image-feature cache",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        rows = "\n".join(f"  {k:<8} {v}" for k, v in BENCHMARKS.items())
        print(f"usage: python -m launcher bench <name> [args...]\n\nbenchmarks:\n{rows}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"launcher.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)
