"""Who makes the correlated randomness (Beaver triples, wraps, B2A bits): one registry.

CrypTen keeps a provider registry and one ``ttp_required()`` predicate; this is the same for
the project's two choices, so that "does it need its own process?" and "is it insecure?" are
each written once, not tested as strings wherever they matter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dealer:
    name: str  # the config value (``mpc.dealer``)
    provider: str  # CrypTen's ``cfg.mpc.provider``
    needs_process: bool  # runs as its own MPI rank, the last one of the CrypTen world
    insecure: bool  # party 0 makes the triples and can learn every party's secrets
    summary: str


DEALERS: dict[str, Dealer] = {
    "ttp": Dealer("ttp", "TTP", needs_process=True, insecure=False,
                  summary="a trusted dealer process makes the triples and never sees a data share"),
    "tfp": Dealer("tfp", "TFP", needs_process=False, insecure=True,
                  summary="party 0 makes the triples: INSECURE against party 0, benchmarking only"),
}


def get(name: str) -> Dealer:
    """The dealer called ``name``, or a ValueError that lists the choices."""
    try:
        return DEALERS[name]
    except KeyError:
        raise ValueError(f"dealer must be one of {tuple(DEALERS)}, got {name!r}") from None
