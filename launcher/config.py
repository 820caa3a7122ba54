"""Experiment configuration: OmegaConf structured configs, YAML files, ``key=value`` overrides.

The dataclasses below are the schema and the only source of defaults; OmegaConf merges the
YAML file and the dotlist overrides onto them and enforces the types. A range check sits
beside its field (``metadata``), and the few checks that relate fields sit in
:func:`_check_relations`. A config is validated as a whole before any party starts, so a typo
fails in every rank with the same clear message instead of hanging a half-started party world.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from launcher.methods import METHODS
from mpc.dealer import DEALERS
from mpc.layout import SAFE_MIN_CLUSTER, min_rows

#: Shortest allowed ``mpc.timeout_s``: below it a loaded 2-core machine fails healthy runs.
MIN_TIMEOUT_S = 10.0


class ConfigError(ValueError):
    """A config that cannot run; the message says which key and why."""


def _rule(test: Callable[[Any], bool], says: str | Callable[[], str], default: Any = dataclasses.MISSING,
          **kw: Any) -> Any:
    """A field whose value must pass ``test``; the error reads ``<key>: <says>, got <value>``
    (``says`` may be a function, for a list that lives in a module imported only when needed)."""
    return field(default=default, metadata={"test": test, "says": says}, **kw)


def at_least(lo: float, default: Any, says: str = "") -> Any:
    return _rule(lambda v: v is None or v >= lo, says or f"must be >= {lo:g}", default)


def above(lo: float, default: Any, says: str = "") -> Any:
    return _rule(lambda v: v > lo, says or f"must be > {lo:g}", default)


def one_of(choices: tuple, default: Any, says: str = "") -> Any:
    return _rule(lambda v: v in choices, says or "must be one of " + ", ".join(map(str, choices)), default)


def _datasets() -> tuple[str, ...]:
    from prompts.data.federation import DATASETS  # the loaders' own list (imports torch, hence lazily)

    return DATASETS


@dataclass
class DataConfig:
    name: str = _rule(lambda v: v in _datasets(), lambda: "must be one of " + ", ".join(_datasets()), "digits")
    root: str | None = None  # a local directory; nothing is downloaded
    n_domains: int = at_least(1, 3)
    domains: list[str] | None = None  # digits or fonts: which styles (default: the first n_domains)
    clients_per_domain: int = at_least(1, 2)
    alpha: float = above(0, 0.5, "Dirichlet concentration must be > 0")
    min_samples: int = at_least(1, 20)
    test_fraction: float = _rule(lambda v: 0 < v < 1, "must be in (0, 1)", 0.3)
    n_views: int = at_least(1, 1)
    shots: int | None = at_least(1, None, "must be >= 1 (or null for all)")  # few-shot: per class per client
    # (fonts: required, the per-class budget of a domain's clients on average *before* the label skew)
    # fonts only: per-class sizes of each client's validation and test splits (on average, with the
    # client's label mix) and of its class-balanced domain test split (acc_domain)
    val_per_class: int = at_least(0, 2)
    test_per_class: int = at_least(1, 8)
    domain_test_per_class: int = at_least(1, 4)
    domain_val_per_class: int = at_least(0, 4)  # class-balanced validation split of the domain (acc_domain_val)
    # fonts only: clients per domain held out of training (never train, never share), on which
    # each domain's shared prompt alone is evaluated after the last round (acc_newclient)
    holdout_clients_per_domain: int = at_least(0, 0)


@dataclass
class ModelConfig:
    name: str = "tiny-digits"
    pretrained: str | None = None
    n_ctx: int = at_least(1, 4)
    class_specific: bool = True
    ctx_init: str | None = "a photo of a"  # null: random init (needed when n_ctx differs from its length)


@dataclass
class TrainConfig:
    epochs: int = at_least(0, 1)
    lr: float = above(0, 0.02)
    batch_size: int = at_least(1, 32)
    optimizer: str = one_of(("sgd", "adam"), "sgd", "sgd or adam")
    balanced: bool = False
    # which classes the cross-entropy's softmax runs over: "all" (every class; a class the client
    # has no image of is trained as a negative only) or "seen" (the classes of the client's
    # training split: FedRS's restricted softmax, an absent class's prompt gets no gradient).
    # "all" won on validation (docs/hierarchy.md)
    softmax: str = one_of(("all", "seen"), "all", "all or seen")
    # softmax=seen: null removes absent classes from the softmax; a value a in [0, 1] keeps them
    # with their logits scaled by a (FedRS's scaled form)
    absent_logit_scale: float | None = _rule(lambda v: v is None or 0 <= v <= 1, "must be in [0, 1] or null", None)
    # A random affine view drawn at every step, so the image encoder runs in every step (the
    # realistic cost); off: images are encoded once and cached (n_views cached augmentations)
    augment: bool = False
    # auto: CUDA when present, else CPU (CrypTen always runs on the CPU)
    device: str = one_of(("auto", "cpu", "cuda"), "auto", "auto, cpu or cuda")


@dataclass
class MPCConfig:
    dealer: str = one_of(tuple(DEALERS), "ttp", " or ".join(DEALERS))
    k_min: int = 2
    k_max: int = 4
    iters: int = at_least(1, 10)
    restarts: int = at_least(1, 4)  # Forgy draws per candidate k; the best silhouette among all wins
    proj_dim: int = at_least(1, 64)
    min_cluster_size: int = at_least(1, 3)
    adapt_every: int = at_least(1, 1)
    timeout_s: float = at_least(MIN_TIMEOUT_S, 120.0, f"must be >= {MIN_TIMEOUT_S:g} s (one MPC step on a busy "
                                "machine can take seconds; set-up does not count against it)")
    # auto: loopback when every rank is on one host, else rank 0's routable address (mpc.runtime)
    address: str = _rule(lambda v: bool(v.strip()), "empty; use auto, 127.0.0.1 on one host or rank 0's "
                         "reachable address", "auto")
    # what is clustered: "drift" (own accumulated updates) or "prompt" (D_i)
    features: str = one_of(("drift", "prompt"), "drift", "drift or prompt")
    # min_cluster_size < 3 or 2 clients: a cluster member can read another member's prompt
    allow_insecure: bool = False
    # who computes: "peer" (every client is a CrypTen party) or "servers" (mpc.servers compute
    # parties run SecPC; clients only send shares and receive their own output, mpc.servers)
    topology: str = one_of(("peer", "servers"), "peer", "peer or servers")
    servers: int = at_least(2, 3)  # compute parties (servers topology)
    client_ranks: int = at_least(1, 1)  # MPI ranks that host the clients (servers topology)
    # servers topology: a client whose shares arrive later than deadline_s after a round's first
    # shares is left out of that round; wait_s bounds the wait for the first shares (local training
    # must fit in it) and for a compute party's answer
    deadline_s: float = above(0, 60.0)
    wait_s: float = above(0, 3600.0)
    # servers topology: keep the run going when a client *rank* dies (its clients are left out
    # for the rest of the run; docs/operations.md). Needs ``mpirun --enable-recovery``.
    tolerate_rank_loss: bool = False
    # keep the offline dealer's plans (the public list of a block's dealer requests) from round
    # to round: a round whose sizes were seen before makes no dry run (docs/offline_dealer.md)
    reuse_plans: bool = True
    # the dealer makes its next batch while the parties compute with this one (mpc.lookahead,
    # docs/offline_dealer.md); off only to measure what it buys
    dealer_lookahead: bool = True


@dataclass
class EvaluationConfig:
    # Evaluation-only traffic, off by default: with gather on, every client rank sends rank 0 its
    # clients' test accuracy, training time, MPC statistics and true domain, and each SecFPP client
    # decrypts its own cluster label and sends it too (for the ARI). Off: nothing but the method's
    # own protocol crosses ranks; each rank writes its own clients' metrics file.
    gather: bool = False
    # classes absent from a client's training split at prediction: "trained" (their class prompts
    # as training left them) or "domain" (L[c] = 0: the domain prompt alone). The default, with
    # label_prior and train.softmax, was chosen on validation splits (docs/hierarchy.md)
    unseen_classes: str = one_of(("trained", "domain"), "domain", "trained or domain")
    # own-mix predictions (acc, acc_val) add log of the client's training label prior (add-one
    # smoothed) to the logits: post-hoc logit adjustment (Menon et al. 2021), no tuned temperature
    label_prior: bool = True


@dataclass
class DPConfig:
    epsilon: float = above(0, 8.0)  # dpfedavg: accounted target; dpfpl: input to its heuristic noise formula
    delta: float = _rule(lambda v: 0 < v < 1, "must be in (0, 1)", 1e-5)
    clip: float = above(0, 1.0)
    rank: int = at_least(1, 8)  # dpfpl: local-prompt factorisation rank, capped at model.n_ctx
    # Noise from a generator seeded by the public config: reproducible, and NOT private against
    # anyone who knows the seed (labelled in results and the audit). Off: the OS's CSPRNG.
    reproducible_noise: bool = False


@dataclass
class Config:
    method: str = one_of(tuple(METHODS), "secfpp")
    seed: int = 0
    rounds: int = at_least(1, 5)
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


# ------------------------------------------------------------------ checking


def _check_fields(node: Any, prefix: str = "") -> None:
    """Every field's own rule, depth first, named by its dotted key."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{prefix}{f.name}.")
        elif "test" in f.metadata and not f.metadata["test"](value):
            says = f.metadata["says"]
            raise ConfigError(f"{prefix}{f.name}: {says() if callable(says) else says}, got {value!r}")


def _check_relations(cfg: Config) -> None:
    """The checks that involve more than one field (or the method)."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    d, p = cfg.data, cfg.mpc
    need(d.name in ("digits", "fonts") or d.root is not None, f"data.root: required for data.name={d.name}")
    need(d.root is None or Path(d.root).expanduser().is_dir(), f"data.root: no such directory {d.root!r}")
    if d.name == "fonts":
        from prompts.data.fonts import DOMAIN_NAMES as FONT_DOMAINS

        need(d.shots is not None, "data.shots: required for data.name=fonts (per-class budget before label skew)")
        need(d.n_domains <= len(FONT_DOMAINS), f"data.n_domains: the fonts have {len(FONT_DOMAINS)} domains")
    need(d.holdout_clients_per_domain == 0 or d.name == "fonts",
         f"data.holdout_clients_per_domain: only the fonts benchmark has held-out clients, not {d.name!r}")
    need(cfg.train.absent_logit_scale is None or cfg.train.softmax == "seen",
         "train.absent_logit_scale: FedRS's scaled form needs train.softmax=seen")
    if d.domains is not None:
        if d.name == "fonts":
            from prompts.data.fonts import DOMAIN_NAMES
        else:
            from prompts.data.digits import DOMAIN_NAMES

        need(d.name in ("digits", "fonts"), f"data.domains: only digits and fonts have selectable styles, not {d.name!r}")
        bad = sorted(set(d.domains) - set(DOMAIN_NAMES))
        need(not bad, f"data.domains: unknown style(s) {bad}; choose from {', '.join(DOMAIN_NAMES)}")
        need(len(set(d.domains)) == len(d.domains), f"data.domains: repeated style in {d.domains}")
        need(len(d.domains) == d.n_domains,
             f"data.domains lists {len(d.domains)} styles but data.n_domains={d.n_domains}; make them agree")
    method = METHODS[cfg.method]
    need(1 <= p.k_min <= p.k_max, f"mpc: need 1 <= k_min <= k_max, got {p.k_min}..{p.k_max}")
    need(not DEALERS[p.dealer].insecure or p.allow_insecure or not method.uses_mpc,
         "mpc.dealer=tfp lets party 0 (compute party 0 in the servers topology) make the Beaver triples and "
         "learn every client's secrets; set mpc.allow_insecure=true to run it anyway (results are labelled "
         "insecure_dealer)")
    if p.topology != "peer":
        owners = [m.name for m in METHODS.values() if p.topology in m.topologies]
        need(p.topology in method.topologies,
             f"mpc.topology={p.topology} is {'/'.join(owners)}'s; method={cfg.method} has no compute parties")
        need(p.client_ranks <= cfg.n_clients,
             f"mpc.client_ranks={p.client_ranks} exceeds the number of clients ({cfg.n_clients})")
    need(not p.tolerate_rank_loss or (p.topology == "servers" and cfg.method == "secfpp"),
         "mpc.tolerate_rank_loss: only the servers topology (mpc.topology=servers) survives a dead client rank; "
         "in the peer topology every client is a party of every step")
    need(not p.tolerate_rank_loss or p.timeout_s > 2 * p.deadline_s,
         f"mpc.tolerate_rank_loss: mpc.timeout_s={p.timeout_s:g} must exceed twice mpc.deadline_s={p.deadline_s:g} "
         "(the other compute parties and the dealer wait while compute party 0 waits out a silent client rank)")
    if method.clusters:
        need(p.k_max <= cfg.n_clients, f"mpc.k_max={p.k_max} exceeds the number of clients ({cfg.n_clients})")
        need(cfg.n_clients >= 2, "secure clustering needs at least 2 clients")
        need(
            p.allow_insecure or (p.min_cluster_size >= SAFE_MIN_CLUSTER and cfg.n_clients >= min_rows(p.k_max)),
            f"mpc.min_cluster_size={p.min_cluster_size} with {cfg.n_clients} clients lets a client read "
            f"another's prompt from a cluster mean (needs min_cluster_size >= {SAFE_MIN_CLUSTER} and "
            f">= {SAFE_MIN_CLUSTER} clients); "
            "set mpc.allow_insecure=true to run it anyway",
        )


# ------------------------------------------------------------------ building


def _sections_are_mappings(raw: dict[str, Any], cls: type, prefix: str) -> None:
    """Name the key when a section is given a scalar (OmegaConf's own message names none)."""
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub) and f.name in raw:
            if not isinstance(raw[f.name], (dict, DictConfig)):
                raise ConfigError(f"{prefix}{f.name}: expected a mapping, got {raw[f.name]!r}")
            _sections_are_mappings(raw[f.name], sub, f"{prefix}{f.name}.")


def _explain(err: OmegaConfBaseException) -> ConfigError:
    """OmegaConf's error, reworded to name the key and what it accepts."""
    key = getattr(err, "full_key", None) or "config"
    if isinstance(err, ConfigKeyError):
        parent = key.rpartition(".")[0]
        node: Any = Config
        for part in filter(None, parent.split(".")):
            node = {f.name: f.default_factory for f in dataclasses.fields(node)}.get(part, node)
        valid = ", ".join(sorted(f.name for f in dataclasses.fields(node)))
        return ConfigError(f"unknown key(s) {key}; valid keys here: {valid}")
    want = getattr(getattr(err, "ref_type", None), "__name__", None)
    field_type = _field_type(key)
    value = getattr(err, "value", None)
    return ConfigError(f"{key}: expected {field_type or want or 'another type'}, got {value!r}")


def _field_type(key: str) -> str | None:
    node: Any = Config
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return None
        f = fields[part]
        node = f.default_factory if f.default_factory is not dataclasses.MISSING else f.type
    return node if isinstance(node, str) else None


def parse_override(item: str) -> str:
    """Check that ``item`` is ``a.b=value``; the value is parsed as YAML by OmegaConf (3: int, null: None)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. mpc.k_max=3)")
    key = item.partition("=")[0]
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    return item


def build(raw: dict[str, Any], overrides: list[str] = ()) -> Config:
    """Schema <- ``raw`` <- overrides, typed by OmegaConf, then checked."""
    _sections_are_mappings(raw, Config, "")
    try:
        dots = OmegaConf.from_dotlist([parse_override(o) for o in overrides])
    except OmegaConfBaseException as err:
        raise ConfigError(f"overrides {list(overrides)}: {err.msg}") from None
    _sections_are_mappings(OmegaConf.to_container(dots), Config, "")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw, dots)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _explain(err) from None
    _check_fields(cfg)
    _check_relations(cfg)
    return cfg


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
    return build(raw, list(overrides))


def from_dict(raw: dict[str, Any]) -> Config:
    return build(raw)
