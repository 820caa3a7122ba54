"""The table of methods: every fact about a method written once.

Config validation, ``compare``, ``ranks`` and the run loop read this registry; the strategy
classes are imported lazily (by dotted path, as CoOp's trainer registry or open_clip's model
registry do), so reading the table never imports CrypTen or a DP accountant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    name: str
    strategy: str  # "module:Class" of its Strategy
    uses_mpc: bool = False  # one CrypTen party per client under mpirun (+ the TTP dealer)
    dp: bool = False  # differentially private: compare runs it once per --epsilons value
    heuristic_epsilon: bool = False  # its epsilon has no accountant behind it

    def strategy_class(self) -> type:
        module, _, cls = self.strategy.partition(":")
        return getattr(importlib.import_module(module), cls)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("secfpp", "launcher.secure:SecFPP", uses_mpc=True),
        Method("clustered", "launcher.secure:PlaintextClustered"),
        Method("truedomain", "launcher.strategies:TrueDomains"),
        Method("promptfl", "launcher.strategies:PromptFL"),
        Method("local", "launcher.strategies:LocalOnly"),
        Method("zeroshot", "launcher.strategies:ZeroShot"),
        Method("dpfedavg", "launcher.dp_strategies:DPFedAvg", dp=True),
        Method("dpfpl", "launcher.dp_strategies:DPFPL", dp=True, heuristic_epsilon=True),
    )
}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def make_strategy(cfg: Any, world: Any, party: Any = None) -> Any:
    """The configured method's strategy object (an MPC method also gets its party)."""
    method = get(cfg.method)
    cls = method.strategy_class()
    return cls(cfg, world, party) if method.uses_mpc else cls(cfg, world)
