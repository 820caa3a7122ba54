"""The table of methods: every fact about a method written once.

Config validation, ``compare``, ``ranks``, the run loop, the strategies and the privacy audit
read this registry; the strategy classes are imported lazily (by dotted path, as CoOp's
trainer registry or open_clip's model registry do), so reading the table never imports
CrypTen or a DP accountant. A strategy class finds its own row with :func:`of_strategy`, so
no strategy repeats its name or its facts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

#: how the aggregate a client receives is computed from the uploads, in plaintext (the formula
#: the audit checks a run against; one implementation each in :mod:`launcher.strategies`)
AGGREGATES = ("own", "weighted_mean", "cluster_mean")

#: who observes a client's upload during training (the audit's training view)
OBSERVERS = {
    "server": "server (every upload)",
    "co_member": "cluster co-member (own prompt + cluster mean)",
    "dp_aggregator": "aggregator (clipped noised sum)",
    "dp_gradients": "aggregator (noised gradients)",
    "nobody": "any other party (nothing shared)",
}


#: how a held-out client gets its domain's shared prompt (``acc_newclient``)
NEWCLIENT = {
    "zeroshot": "nothing is shared: CLIP's hand-written prompts",
    "shared": "the one shared domain prompt (every client holds the same)",
    "domain": "the shared prompt of its true domain's clients",
    "nearest_cluster": "the prompt of the cluster whose final centre is nearest its own one-round drift",
    "none": "not evaluated",
}


@dataclass(frozen=True)
class Method:
    name: str
    strategy: str  # "module:Class" of its Strategy
    uses_mpc: bool = False  # one CrypTen party per client under mpirun (+ the TTP dealer)
    dp: bool = False  # differentially private: compare runs it once per --epsilons value
    heuristic_epsilon: bool = False  # its epsilon has no accountant behind it
    clusters: bool = False  # runs SecPC's adaptive clustering (k_min..k_max, min_cluster_size)
    trains: bool = True  # False: nothing is trained (hand-written prompts)
    class_prompt: bool = True  # does the client keep a class-level prompt L?
    # each client trains alone and uploads its domain prompt once a round (False: nothing is
    # uploaded, or the shared prompt moves in lockstep as DP-FPL's does)
    uploads: bool = True
    aggregate: str | None = None  # one of AGGREGATES, or None: not a plaintext function of the uploads
    observer: str = "nobody"  # key of OBSERVERS
    topologies: tuple[str, ...] = ("peer",)  # mpc.topology values it runs in
    # what a client held out of training is given after the last round (acc_newclient; one of
    # NEWCLIENT); "none": not evaluated (SecFPP: in its plaintext twin only)
    newclient: str = "zeroshot"

    def strategy_class(self) -> type:
        module, _, cls = self.strategy.partition(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def observer_sees(self) -> str:
        return OBSERVERS[self.observer]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("secfpp", "launcher.secure:SecFPP", uses_mpc=True, clusters=True, aggregate="cluster_mean",
               observer="co_member", topologies=("peer", "servers"), newclient="none"),
        Method("clustered", "launcher.secure:PlaintextClustered", clusters=True, aggregate="cluster_mean",
               observer="server", newclient="nearest_cluster"),
        Method("truedomain", "launcher.strategies:TrueDomains", aggregate="cluster_mean", observer="server",
               newclient="domain"),
        Method("fedavgd", "launcher.strategies:FedAvgD", aggregate="cluster_mean", observer="server",
               newclient="shared"),
        Method("promptfl", "launcher.strategies:PromptFL", class_prompt=False, aggregate="weighted_mean",
               observer="server", newclient="shared"),
        Method("local", "launcher.strategies:LocalOnly", aggregate="own"),
        Method("zeroshot", "launcher.strategies:ZeroShot", trains=False, uploads=False),
        Method("dpfedavg", "launcher.dp_strategies:DPFedAvg", dp=True, observer="dp_aggregator",
               newclient="shared"),
        Method("dpfpl", "launcher.dp_strategies:DPFPL", dp=True, heuristic_epsilon=True, uploads=False,
               observer="dp_gradients", newclient="shared"),
    )
}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def of_strategy(cls: type) -> Method:
    """The row whose strategy is ``cls`` (or, for a subclass defined elsewhere, its nearest base's)."""
    for klass in cls.__mro__:
        path = f"{klass.__module__}:{klass.__qualname__}"
        for m in METHODS.values():
            if m.strategy == path:
                return m
    raise KeyError(f"{cls.__qualname__} is no method's strategy in launcher.methods.METHODS")


def make_strategy(cfg: Any, world: Any, party: Any = None) -> Any:
    """The configured method's strategy object (an MPC method also gets its party)."""
    method = get(cfg.method)
    cls = method.strategy_class()
    return cls(cfg, world, party) if method.uses_mpc else cls(cfg, world)
