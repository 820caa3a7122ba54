"""The per-round metrics row: one typed record written to ``metrics.jsonl`` and read by the
summary, the progress line, the plots and ``compare``.

Why a dataclass: the row is a contract between the round loop, the strategies (which report
``k``, ``epsilon``, MPC costs and cluster labels in their ``info``), the report and ``compare``;
a new metric is added here, once, and every reader sees it by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


#: metrics row key -> ClientData split, for the evaluation splits beyond ``test`` (the fonts
#: benchmark has them): ``acc_domain`` on a class-balanced test split of the client's domain;
#: ``acc_val`` (the client's label mix) and ``acc_domain_val`` (class-balanced, its domain) on
#: validation splits, for anything chosen on data
EXTRA_SPLITS = {"acc_domain": "domain_test", "acc_val": "val", "acc_domain_val": "domain_val"}

#: a class-balanced split -> its accuracy on the classes in the client's training split and on
#: the others (FedVLS's "vacant" classes): the two partition the split's samples
SEEN_UNSEEN = {"acc_domain": ("acc_seen", "acc_unseen"), "acc_domain_val": ("acc_seen_val", "acc_unseen_val")}

#: every per-client metric beyond ``acc``, as the row, the summary and ``compare`` carry them;
#: ``acc_newclient`` is per held-out client (``data.holdout_clients_per_domain``), final round only
CLIENT_METRICS = (*EXTRA_SPLITS, *(k for pair in SEEN_UNSEEN.values() for k in pair), "acc_newclient")

#: own-label-mix splits: the ones ``evaluation.label_prior`` adjusts
OWN_MIX = ("acc", "acc_val")


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """Of seen and unseen accuracy (the generalisation literature's H)."""
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


@dataclass
class Timing:
    local_train_s: float  # slowest client rank's local training this round
    aggregate_s: float  # the strategy's aggregate step (SecPC for SecFPP), slowest rank
    mpc_over_local: float | None = None  # MPC seconds / local-training seconds (MPC methods)


@dataclass
class MPCCost:
    """Max over parties: the round is as slow as its slowest party."""

    seconds: float
    rounds: int  # sequential communication rounds
    bytes_per_party: int


@dataclass
class RoundInfo:
    """What a strategy reports about its round (``RoundOutput.info``), typed as Flower's
    ``FitRes`` is: every field is written to ``metrics.jsonl`` by :meth:`RoundRow.from_parts`
    (``tests/launcher/test_metrics.py`` checks that none is left out), so nothing a strategy
    computes is dropped on the way."""

    k: int | None = None  # clustering methods: the chosen number of clusters
    # evaluation.gather: this rank's clients' own cluster labels (client id -> label)
    assignment: dict[int, int] | None = None
    mpc: MPCCost | None = None  # MPC methods: this party's cost of the round
    mpc_phases: dict[str, dict[str, Any]] | None = None  # ... and per SecPC phase (mpc.stats)
    insecure_dealer: bool | None = None
    dropped: list[int] = dataclasses.field(default_factory=list)  # clients left out of the aggregate
    epsilon: float | None = None  # DP methods: spent (dpfedavg) or claimed (dpfpl)
    epsilon_heuristic: bool | None = None  # True: no accountant behind ``epsilon``
    noise_multiplier: float | None = None  # dpfedavg: z, noise std / clip on the sum
    sigma: float | None = None  # dpfpl: its heuristic noise scale
    reproducible_noise: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        """A plain dict for :mod:`mpc.wire` (which sends no dataclasses)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> "RoundInfo":
        raw = dict(raw)
        if raw.get("mpc") is not None:
            raw["mpc"] = MPCCost(**raw["mpc"])
        return cls(**raw)


@dataclass
class RoundRow:
    round: int  # 1-based
    method: str
    seed: int
    acc: dict[str, float]  # client id -> test accuracy
    mean_acc: float
    time: Timing
    zeroshot_acc: float | None = None  # round 1 only: the hand-written prompts' accuracy
    k: int | None = None  # clustering methods: the chosen number of clusters
    insecure_dealer: bool | None = None
    epsilon: float | None = None  # DP methods
    epsilon_heuristic: bool | None = None  # True: no accountant behind ``epsilon``
    reproducible_noise: bool | None = None  # True: DP noise seeded by the public config, NOT private
    mpc: MPCCost | None = None
    assignment: dict[str, int] | None = None  # evaluation.gather: client id -> own cluster label
    ari: float | None = None  # of ``assignment`` against the true domains
    # datasets with the extra evaluation splits (fonts; launcher.run.EXTRA_SPLITS): accuracy per client
    # on its class-balanced domain test split and on its validation split, their means, and round 1's
    # zero-shot means
    # clients left out of this round's aggregation (dead, or their shares missed the deadline):
    # their prompts stay as they were; dead clients are not evaluated either
    dropouts: list[int] | None = None
    # servers topology, written by compute party 0: why each dropped client is out ("no shares by
    # the deadline", "rank lost", ...), and the client ranks lost so far (their clients stay out)
    dropout_reasons: dict[str, str] | None = None
    lost_ranks: list[int] | None = None
    acc_domain: dict[str, float] | None = None
    mean_acc_domain: float | None = None
    zeroshot_acc_domain: float | None = None
    acc_val: dict[str, float] | None = None
    mean_acc_val: float | None = None
    zeroshot_acc_val: float | None = None
    acc_domain_val: dict[str, float] | None = None
    mean_acc_domain_val: float | None = None
    zeroshot_acc_domain_val: float | None = None
    acc_seen: dict[str, float] | None = None  # acc_domain on the classes of the client's training split
    mean_acc_seen: float | None = None
    zeroshot_acc_seen: float | None = None
    acc_unseen: dict[str, float] | None = None  # ... and on the classes absent from it
    mean_acc_unseen: float | None = None
    zeroshot_acc_unseen: float | None = None
    acc_seen_val: dict[str, float] | None = None  # the same on the domain validation split
    mean_acc_seen_val: float | None = None
    zeroshot_acc_seen_val: float | None = None
    acc_unseen_val: dict[str, float] | None = None
    mean_acc_unseen_val: float | None = None
    zeroshot_acc_unseen_val: float | None = None
    # last round, data.holdout_clients_per_domain: held-out client id -> its domain's shared prompt
    # alone on its class-balanced domain test split (zero-shot for methods that share nothing)
    acc_newclient: dict[str, float] | None = None
    mean_acc_newclient: float | None = None
    zeroshot_acc_newclient: float | None = None
    noise_multiplier: float | None = None  # dpfedavg
    sigma: float | None = None  # dpfpl
    mpc_phases: dict[str, dict[str, Any]] | None = None  # client rank 0's MPC cost per SecPC phase

    #: ``RoundInfo`` fields copied as they are from rank 0's part; the others (``mpc``,
    #: ``dropped``, ``assignment``) are combined over every part below.
    FROM_INFO = ("k", "insecure_dealer", "epsilon", "epsilon_heuristic", "reproducible_noise",
                 "noise_multiplier", "sigma", "mpc_phases")

    def to_json(self) -> dict[str, Any]:
        """A plain dict without the fields that do not apply (no ``null`` noise in the log)."""
        return _drop_none(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "RoundRow":
        raw = dict(raw)
        raw["time"] = Timing(**raw["time"])
        if raw.get("mpc") is not None:
            raw["mpc"] = MPCCost(**raw["mpc"])
        return cls(**raw)

    @classmethod
    def from_parts(cls, method: str, seed: int, round_idx: int, parts: list[dict[str, Any]],
                   clients_domain: dict[int, int]) -> "RoundRow":
        """The row from the parts in hand: every client rank's (rank 0, ``evaluation.gather``)
        or this rank's own. A part holds ``acc``, ``train_s``, ``agg_s``, ``info`` and, in
        round 1, ``zeroshot``; where the clients have them, the ``CLIENT_METRICS`` keys (and in
        round 1 their ``zeroshot_`` levels); ``info`` is a :class:`RoundInfo` as :meth:`RoundInfo.to_wire`
        sends it."""
        acc = {cid: a for part in parts for cid, a in part["acc"].items()}
        train_s = max(p["train_s"] for p in parts)
        zeroshot = [v for part in parts for v in part.get("zeroshot", {}).values()]
        infos = [RoundInfo.from_wire(p["info"]) for p in parts]
        info = infos[0]
        row = cls(round=round_idx + 1, method=method, seed=seed,
                  acc={str(k): v for k, v in sorted(acc.items())},
                  mean_acc=sum(acc.values()) / len(acc) if acc else float("nan"),
                  time=Timing(local_train_s=train_s, aggregate_s=max(p["agg_s"] for p in parts)),
                  zeroshot_acc=sum(zeroshot) / len(zeroshot) if zeroshot else None,
                  **{key: getattr(info, key) for key in cls.FROM_INFO})
        for key in CLIENT_METRICS:  # parts carry them where the clients have those splits
            extra = {cid: a for part in parts for cid, a in part.get(key, {}).items()}
            if extra:
                setattr(row, key, {str(k): v for k, v in sorted(extra.items())})
                setattr(row, f"mean_{key}", sum(extra.values()) / len(extra))
            zs = [v for part in parts for v in part.get(f"zeroshot_{key}", {}).values()]
            if zs:
                setattr(row, f"zeroshot_{key}", sum(zs) / len(zs))
        if info.mpc is not None:
            costs = [i.mpc for i in infos if i.mpc is not None]
            row.mpc = MPCCost(seconds=max(c.seconds for c in costs), rounds=max(c.rounds for c in costs),
                              bytes_per_party=max(c.bytes_per_party for c in costs))
            row.time.mpc_over_local = row.mpc.seconds / train_s if train_s > 0 else None
        dropouts = sorted({int(c) for i in infos for c in i.dropped})
        if dropouts:
            row.dropouts = dropouts
        assign = {cid: lab for i in infos for cid, lab in (i.assignment or {}).items()}
        if assign:
            from sklearn.metrics import adjusted_rand_score

            ids = sorted(assign)
            row.assignment = {str(i): assign[i] for i in ids}
            row.ari = adjusted_rand_score([clients_domain[i] for i in ids], [assign[i] for i in ids])
        return row


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
