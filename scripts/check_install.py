"""Second half of scripts/check_install.sh: the four imports and a 3-party CrypTen sum."""

from __future__ import annotations

import importlib.metadata as md


def _share_and_sum(party, value: float) -> float:
    """Each client secret-shares its value; the sum is opened to everyone."""
    from mpc.compat import import_crypten

    import torch

    crypten = import_crypten()
    shares = [crypten.cryptensor(torch.tensor([value if src == party.rank else 0.0]), src=src)
              for src in range(party.n_clients)]
    return float(sum(shares[1:], shares[0]).get_plain_text())


def main() -> None:
    import torch

    print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}, CUDA available: {torch.cuda.is_available()})")
    nvidia = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia-"))
    print(f"nvidia-* packages: {len(nvidia)}")
    from mpc.compat import import_crypten

    print(f"crypten {import_crypten().__version__}")
    import prompts  # noqa: F401 - applies the torchvision fix open_clip needs on a CPU build
    import open_clip

    print(f"open_clip {open_clip.__version__}")
    import mpi4py

    print(f"mpi4py {mpi4py.__version__}")
    from mpc.runtime import PartySpec, run_parties

    sums = run_parties(_share_and_sum, PartySpec(3, dealer="ttp"), 1.5)
    print(f"3-party CrypTen sum (each client adds 1.5, TTP dealer): {sums}")
    if any(abs(s - 4.5) > 1e-3 for s in sums):
        raise SystemExit("check_install: wrong sum")
    print("check_install: OK")


if __name__ == "__main__":
    main()
