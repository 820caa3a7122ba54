"""Experiment configuration: typed dataclasses, YAML files, ``key=value`` overrides.

A config is validated as a whole before any party starts, so a typo fails in every
rank with the same clear message instead of hanging a half-started party world.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.methods import METHODS

DATASETS = ("digits", "office_caltech10", "domainnet", "cifar10", "cifar100", "imagefolder")


#: Shortest allowed ``mpc.timeout_s``: below it a loaded 2-core machine fails healthy runs.
MIN_TIMEOUT_S = 10.0


class ConfigError(ValueError):
    """A config that cannot run; the message says which key and why."""


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None
    n_domains: int = 3
    domains: list[str] | None = None  # digits only: which styles (default: the first n_domains)
    clients_per_domain: int = 2
    alpha: float = 0.5
    min_samples: int = 20
    test_fraction: float = 0.3
    n_views: int = 1
    shots: int | None = None  # few-shot: at most this many training images per class per client


@dataclass
class ModelConfig:
    name: str = "tiny-digits"
    pretrained: str | None = None
    n_ctx: int = 4
    class_specific: bool = True
    ctx_init: str | None = "a photo of a"  # null: random init (needed when n_ctx differs from its length)


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 0.02
    batch_size: int = 32
    optimizer: str = "sgd"
    balanced: bool = False
    # CoOp-style random crop + flip drawn at every step, so the image encoder runs in every step
    # (the realistic cost); off: images are encoded once and cached (n_views cached augmentations)
    augment: bool = False
    device: str = "auto"  # auto: CUDA when present, else CPU (CrypTen always runs on the CPU)


@dataclass
class MPCConfig:
    dealer: str = "ttp"
    k_min: int = 2
    k_max: int = 4
    iters: int = 10
    restarts: int = 4  # Forgy draws per candidate k; the best silhouette among all wins
    proj_dim: int = 64
    min_cluster_size: int = 3
    adapt_every: int = 1
    timeout_s: float = 120.0
    address: str = "127.0.0.1"
    features: str = "drift"  # what is clustered: "drift" (own accumulated updates) or "prompt" (D_i)
    # min_cluster_size < 3 or 2 clients: a cluster member can read another member's prompt
    allow_insecure: bool = False


@dataclass
class EvaluationConfig:
    # Evaluation-only traffic, off by default: with gather on, every client rank sends rank 0 its
    # clients' test accuracy, training time, MPC statistics and true domain, and each SecFPP client
    # decrypts its own cluster label and sends it too (for the ARI). Off: nothing but the method's
    # own protocol crosses ranks; each rank writes its own clients' metrics file.
    gather: bool = False


@dataclass
class DPConfig:
    epsilon: float = 8.0  # dpfedavg: accounted target; dpfpl: input to its heuristic noise formula
    delta: float = 1e-5
    clip: float = 1.0
    rank: int = 8  # dpfpl: local-prompt factorisation rank, capped at model.n_ctx


@dataclass
class Config:
    method: str = "secfpp"
    seed: int = 0
    rounds: int = 5
    out_dir: str = "runs"
    run_name: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mpc: MPCConfig = field(default_factory=MPCConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def n_clients(self) -> int:
        return self.data.n_domains * self.data.clients_per_domain

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ building and checking


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Accept ``value`` for ``annotation``; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            ok, v = _type_ok(value, arm)
            if ok:
                return True, v
        return False, value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, value
        items = [_type_ok(v, item) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if annotation is type(None):
        return value is None, value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return True, float(value)
    if annotation is int and isinstance(value, bool):
        return False, value
    return isinstance(value, annotation), value


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
            continue
        ok, value = _type_ok(value, hint)
        if not ok:
            want = getattr(hint, "__name__", str(hint))
            raise ConfigError(f"{prefix}{name}: expected {want}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.method in METHODS, f"method: must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    need(cfg.rounds >= 1, f"rounds: must be >= 1, got {cfg.rounds}")
    d, m, t, p, dp = cfg.data, cfg.model, cfg.train, cfg.mpc, cfg.dp
    need(d.name in DATASETS, f"data.name: must be one of {', '.join(DATASETS)}, got {d.name!r}")
    need(d.name == "digits" or d.root is not None, f"data.root: required for data.name={d.name}")
    need(d.root is None or Path(d.root).expanduser().is_dir(), f"data.root: no such directory {d.root!r}")
    need(d.min_samples >= 1, f"data.min_samples: must be >= 1, got {d.min_samples}")
    need(d.n_domains >= 1, f"data.n_domains: must be >= 1, got {d.n_domains}")
    if d.domains is not None:
        from prompts.data.digits import DOMAIN_NAMES

        need(d.name == "digits", f"data.domains: only the digits dataset has selectable styles, not {d.name!r}")
        bad = sorted(set(d.domains) - set(DOMAIN_NAMES))
        need(not bad, f"data.domains: unknown style(s) {bad}; choose from {', '.join(DOMAIN_NAMES)}")
        need(len(set(d.domains)) == len(d.domains), f"data.domains: repeated style in {d.domains}")
        need(
            len(d.domains) == d.n_domains,
            f"data.domains lists {len(d.domains)} styles but data.n_domains={d.n_domains}; make them agree",
        )
    need(d.clients_per_domain >= 1, f"data.clients_per_domain: must be >= 1, got {d.clients_per_domain}")
    need(d.alpha > 0, f"data.alpha: Dirichlet concentration must be > 0, got {d.alpha}")
    need(0 < d.test_fraction < 1, f"data.test_fraction: must be in (0, 1), got {d.test_fraction}")
    need(d.shots is None or d.shots >= 1, f"data.shots: must be >= 1 (or null for all), got {d.shots}")
    need(d.n_views >= 1, f"data.n_views: must be >= 1, got {d.n_views}")
    need(m.n_ctx >= 1, f"model.n_ctx: must be >= 1, got {m.n_ctx}")
    need(t.epochs >= 0, f"train.epochs: must be >= 0, got {t.epochs}")
    need(t.lr > 0, f"train.lr: must be > 0, got {t.lr}")
    need(t.batch_size >= 1, f"train.batch_size: must be >= 1, got {t.batch_size}")
    need(t.optimizer in ("sgd", "adam"), f"train.optimizer: sgd or adam, got {t.optimizer!r}")
    need(t.device in ("auto", "cpu", "cuda"), f"train.device: auto, cpu or cuda, got {t.device!r}")
    need(p.dealer in ("ttp", "tfp"), f"mpc.dealer: ttp or tfp, got {p.dealer!r}")
    need(1 <= p.k_min <= p.k_max, f"mpc: need 1 <= k_min <= k_max, got {p.k_min}..{p.k_max}")
    if cfg.method in ("secfpp", "clustered"):
        need(
            p.k_max <= cfg.n_clients,
            f"mpc.k_max={p.k_max} exceeds the number of clients ({cfg.n_clients})",
        )
        need(cfg.n_clients >= 2, "secure clustering needs at least 2 clients")
        need(
            p.allow_insecure or (p.min_cluster_size >= 3 and cfg.n_clients >= 3),
            f"mpc.min_cluster_size={p.min_cluster_size} with {cfg.n_clients} clients lets a client read "
            "another's prompt from a cluster mean (needs min_cluster_size >= 3 and >= 3 clients); "
            "set mpc.allow_insecure=true to run it anyway",
        )
    need(p.features in ("drift", "prompt"), f"mpc.features: drift or prompt, got {p.features!r}")
    need(p.iters >= 1, f"mpc.iters: must be >= 1, got {p.iters}")
    need(p.restarts >= 1, f"mpc.restarts: must be >= 1, got {p.restarts}")
    need(p.proj_dim >= 1, f"mpc.proj_dim: must be >= 1, got {p.proj_dim}")
    need(p.min_cluster_size >= 1, f"mpc.min_cluster_size: must be >= 1, got {p.min_cluster_size}")
    need(p.adapt_every >= 1, f"mpc.adapt_every: must be >= 1, got {p.adapt_every}")
    need(p.timeout_s >= MIN_TIMEOUT_S, f"mpc.timeout_s: must be >= {MIN_TIMEOUT_S:g} s (one MPC step on a busy "
         f"machine can take seconds; set-up does not count against it), got {p.timeout_s}")
    need(bool(p.address.strip()), "mpc.address: empty; use 127.0.0.1 on one host or rank 0's reachable address")
    need(dp.epsilon > 0, f"dp.epsilon: must be > 0, got {dp.epsilon}")
    need(0 < dp.delta < 1, f"dp.delta: must be in (0, 1), got {dp.delta}")
    need(dp.clip > 0, f"dp.clip: must be > 0, got {dp.clip}")
    need(dp.rank >= 1, f"dp.rank: must be >= 1, got {dp.rank}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, so 3 is an int and null is None)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. mpc.k_max=3)")
    key, _, text = item.partition("=")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def merge(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = dict(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML file (or start from defaults), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    cfg = _build(Config, merge(raw, list(overrides)), "")
    _check(cfg)
    return cfg


def from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, "")
    _check(cfg)
    return cfg
