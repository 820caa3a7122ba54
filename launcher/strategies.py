"""Method variants as small strategy objects on one harness.

The round loop (:mod:`launcher.run`) has the strategy train its clients
(``strategy.train_round``: by default each client alone, for ``train.epochs`` epochs), hands
the domain prompts to ``strategy.aggregate`` and installs what comes back. A strategy decides
only what differs between methods: what is trained, how, and how domain prompts are combined.

* ``secfpp``    - SecPC secure adaptive clustering + secure cluster means (CrypTen).
* ``clustered`` - the same maths in plaintext at an honest server (the non-private twin).
* ``promptfl``  - FedAvg of one global prompt (no class-level prompt).
* ``truedomain`` - SecPC's cluster means over the clients' *true* domains: the ceiling of any
                  clustering (it reads labels no real federation has).
* ``local``     - CoOp trained locally, nothing shared.
* ``zeroshot``  - CLIP with hand-written prompts, nothing trained.
* ``dpfedavg``  - FedAvg of the domain prompt with clipped, Gaussian-noised updates and an
                  (epsilon, delta) accountant (:mod:`launcher.dp_strategies`).
* ``dpfpl``     - DP-FPL as its public code does it: clients train in lockstep on one shared
                  prompt fed a clipped, noised mean gradient every step, and a low-rank +
                  residual local prompt with locally noised factor gradients; its epsilon is
                  a heuristic with no accountant (:mod:`launcher.dp_strategies`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from launcher.config import Config
from launcher.methods import Method, of_strategy
from launcher.metrics import RoundInfo
from launcher.world import World


class TrainableClient(Protocol):
    """What a strategy needs of a client to train it (``launcher.run.Client`` is one)."""

    cid: int
    learner: Any  # prompts.learner.PromptLearner
    train_x: torch.Tensor
    train_y: torch.Tensor


def client_seed(seed: int, round_idx: int, cid: int) -> int:
    """Seed of client ``cid``'s local training in round ``round_idx``: a resumed run repeats
    exactly what an uninterrupted one does."""
    return (seed * 1_000_003 + round_idx * 10_007 + cid) % (2**31)


def reseed_augmentation(features: Any, seed: int, round_idx: int, cid: int) -> None:
    """Per-step augmented features (``train.augment``) draw from a stream restarted every round."""
    if hasattr(features, "reseed"):
        features.reseed(client_seed(seed, round_idx, cid) + 1)


@dataclass
class RoundInput:
    """What the loop hands a strategy each round."""

    round_idx: int
    prompts: dict[int, torch.Tensor]  # this process's clients: client id -> domain prompt D_i
    weights: dict[int, int]  # client id -> number of training samples
    domain_init: torch.Tensor  # public initial prompt D_init
    domains: dict[int, int] = field(default_factory=dict)  # client id -> true domain (only ``truedomain`` reads it)


@dataclass
class RoundOutput:
    prompts: dict[int, torch.Tensor]  # new domain prompt per local client
    info: RoundInfo = field(default_factory=RoundInfo)  # logged into metrics.jsonl, every field


def weighted_mean(uploads: dict[int, torch.Tensor], weights: dict[int, int]) -> torch.Tensor:
    """PromptFL's (FedAvg's) aggregate: the sample-weighted mean of every upload. The one copy:
    the strategy and the audit's upload check both call it."""
    ids = sorted(uploads)
    w = torch.tensor([float(weights[i]) for i in ids])
    return (torch.stack([uploads[i] for i in ids]) * (w / w.sum()).view(-1, *([1] * uploads[ids[0]].ndim))).sum(0)


def cluster_means(uploads: dict[int, torch.Tensor], labels: dict[int, int], min_cluster_size: int) -> dict[int, torch.Tensor]:
    """SecPC's aggregate in plaintext for a given partition: each client gets its cluster's plain
    mean upload, or the all-client mean when its cluster is under ``min_cluster_size``. The one
    copy of that formula is :func:`mpc.reference.aggregate` (the secure code's oracle); this
    only lays the uploads and labels out for it (``truedomain`` and the audit call it)."""
    from mpc.reference import aggregate

    ids = sorted(uploads)
    column = {lab: j for j, lab in enumerate(sorted({labels[i] for i in ids}))}
    member = torch.nn.functional.one_hot(torch.tensor([column[labels[i]] for i in ids]), len(column))
    rows = aggregate(torch.stack([uploads[i].flatten() for i in ids]), member, min_cluster_size)
    return {cid: rows[j].to(uploads[cid].dtype).reshape(uploads[cid].shape) for j, cid in enumerate(ids)}


def served_group(labels: dict[int, int], cid: int, min_cluster_size: int) -> list[int]:
    """The clients whose uploads make up what ``cid`` receives from :func:`cluster_means`."""
    members = sorted(i for i, lab in labels.items() if lab == labels[cid])
    return members if len(members) >= min_cluster_size else sorted(labels)


#: the plaintext aggregate of each ``Method.aggregate`` kind, from (uploads, weights, labels, min_cluster_size)
AGGREGATES: dict[str, Any] = {
    "own": lambda uploads, weights, labels, m: dict(uploads),
    "weighted_mean": lambda uploads, weights, labels, m: dict.fromkeys(uploads, weighted_mean(uploads, weights)),
    "cluster_mean": lambda uploads, weights, labels, m: cluster_means(uploads, labels, m),
}


class Strategy:
    """A method's round: what is trained and how domain prompts are combined. Its facts (name,
    MPC or not, trains, keeps a class prompt, ...) are its row of :mod:`launcher.methods`."""

    def __init__(self, cfg: Config, world: World) -> None:
        self.cfg = cfg
        self.world = world

    @classmethod
    def method(cls) -> Method:
        return of_strategy(cls)

    @property
    def name(self) -> str:
        return self.method().name

    @property
    def trains(self) -> bool:
        return self.method().trains

    @property
    def class_prompt(self) -> bool:
        return self.method().class_prompt

    def prepare_client(self, cid: int, learner: torch.nn.Module) -> None:
        """Called once per client before training: freeze what this method does not learn."""
        if not self.class_prompt:
            learner.class_ctx.requires_grad_(False)

    def train_round(self, clients: Sequence[TrainableClient], round_idx: int) -> float:
        """Train this process's clients for one round; returns the seconds it took.

        Default: each client alone, ``train.epochs`` epochs of :func:`prompts.training.train_local`
        seeded by :func:`client_seed`. A method whose clients interact during local training
        (DP-FPL's per-step gradient exchange) overrides this.
        """
        from prompts.training import train_local

        cfg = self.cfg
        t0 = time.perf_counter()
        if self.trains and cfg.train.epochs > 0:
            for c in clients:
                reseed_augmentation(c.train_x, cfg.seed, round_idx, c.cid)
                train_local(
                    c.learner,
                    c.train_x,
                    c.train_y,
                    epochs=cfg.train.epochs,
                    lr=cfg.train.lr,
                    batch_size=cfg.train.batch_size,
                    optimizer=cfg.train.optimizer,
                    balanced=cfg.train.balanced,
                    softmax=cfg.train.softmax,
                    absent_logit_scale=cfg.train.absent_logit_scale,
                    seed=client_seed(cfg.seed, round_idx, c.cid),
                )
        return time.perf_counter() - t0

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        return RoundOutput(dict(inp.prompts))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    # helpers for plaintext strategies: every client rank computes the same server step
    def _gather(self, inp: RoundInput) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
        prompts: dict[int, torch.Tensor] = {}
        weights: dict[int, int] = {}
        for part_p, part_w in self.world.allgather((inp.prompts, inp.weights)):
            prompts.update(part_p)
            weights.update(part_w)
        return prompts, weights


class ZeroShot(Strategy):
    """Hand-written prompts, nothing trained."""


class LocalOnly(Strategy):
    """CoOp per client, nothing shared."""


class PromptFL(Strategy):
    """FedAvg (sample-weighted) of one global prompt; no class-level prompt."""

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        mean = weighted_mean(*self._gather(inp))
        return RoundOutput({cid: mean.clone() for cid in inp.prompts})


class FedAvgD(Strategy):
    """The ablation between local-only and SecFPP: every client's domain prompt averaged into one
    (SecPC's aggregate with a single cluster: the plain mean), class prompts private (FedOTP-like).

    Why: SecFPP differs from local-only in two ways, sharing ``D`` and clustering it; this shares
    it without clustering, so a benchmark can tell the two apart.
    """

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        prompts, _ = self._gather(inp)
        one = dict.fromkeys(prompts, 0)
        rows = cluster_means(prompts, one, min_cluster_size=1)
        info = RoundInfo(k=1)
        if self.cfg.evaluation.gather:
            info.assignment = {cid: 0 for cid in inp.prompts}
        return RoundOutput({cid: rows[cid].float() for cid in inp.prompts}, info)


class TrueDomains(Strategy):
    """SecPC's aggregation (``mpc.reference.aggregate``: cluster mean, the all-client mean for a
    cluster under ``mpc.min_cluster_size``) with the clients' *true* domains as the partition.

    Why: SecFPP can at best recover the domains; this is what sharing buys when the clustering is
    perfect and free, so a benchmark can tell a clustering shortfall from a sharing shortfall.
    """

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        prompts: dict[int, torch.Tensor] = {}
        domains: dict[int, int] = {}
        for part_p, part_d in self.world.allgather((inp.prompts, inp.domains)):
            prompts.update(part_p)
            domains.update(part_d)
        rows = cluster_means(prompts, {i: domains[i] for i in prompts}, self.cfg.mpc.min_cluster_size)
        info = RoundInfo(k=len({domains[i] for i in prompts}))
        if self.cfg.evaluation.gather:
            info.assignment = {cid: domains[cid] for cid in inp.prompts}
        return RoundOutput({cid: rows[cid].float() for cid in inp.prompts}, info)
