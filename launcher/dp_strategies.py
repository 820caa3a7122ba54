"""DP baselines as strategies (mechanisms and accounting live in :mod:`prompts.dp_mechanisms`).

* :class:`DPFedAvg` - client-level DP at the aggregator, calibrated by an accountant.
* :class:`DPFPL` - DP-FPL as its public code does it (per-step lockstep training); its
  epsilon is the paper's heuristic formula, not an accounted guarantee.

Noise that every rank must add alike (the aggregator's) is drawn by client rank 0 and sent to
the others; noise is secret (:class:`prompts.dp_mechanisms.SecureNoise`) unless the run opts
into ``dp.reproducible_noise``, which seeds it from the public config and is labelled not
private (:func:`noise_source`). The aggregator itself is simulated by the client ranks (each
rank computes the same aggregate), so it is trusted, as in the DP-FedAvg model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from launcher.config import Config
from launcher.metrics import RoundInfo
from launcher.strategies import RoundInput, RoundOutput, Strategy, TrainableClient, client_seed, reseed_augmentation
from launcher.world import World
from prompts import dp_mechanisms as dp


def noise_source(cfg: Config, seed: int | torch.Generator) -> dp.NoiseSource:
    """Secret noise, or with ``dp.reproducible_noise`` (labelled not private) a stream that
    ``seed`` fixes: whoever knows ``seed`` can draw it again and subtract it."""
    return dp.SeededNoise(seed) if cfg.dp.reproducible_noise else dp.SecureNoise()


def dpfedavg_noise_seed(seed: int, round_idx: int) -> int:
    """DP-FedAvg's reproducible noise seed of a round (``dp.reproducible_noise`` only): a
    public function of the config, which the audit's seed-knowing observer uses too."""
    return seed * 7919 + round_idx


class DPFedAvg(Strategy):
    """FedAvg of the domain prompt with client-level (epsilon, delta)-DP at a trusted aggregator.

    Each client's round update of the shared prompt is clipped to ``dp.clip``; Gaussian
    noise with std ``z * clip`` is added to the sum, ``z`` calibrated so that ``rounds``
    rounds spend exactly the target epsilon (PLD accountant). The class-level prompt stays
    local and is never shared, as in SecFPP.
    """

    def __init__(self, cfg: Config, world: World) -> None:
        super().__init__(cfg, world)
        self.noise_multiplier = dp.calibrate_noise_multiplier(cfg.dp.epsilon, cfg.dp.delta, cfg.rounds)
        self.global_prompt: torch.Tensor | None = None

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        prompts, _ = self._gather(inp)
        if self.global_prompt is None:
            self.global_prompt = inp.domain_init.clone()
        ids = sorted(prompts)
        clip = self.cfg.dp.clip
        total = sum(dp.clip_by_norm(prompts[i] - self.global_prompt, clip) for i in ids)
        noise = None
        if self.world.is_root:  # the aggregator's noise, drawn once and sent to every rank
            source = noise_source(self.cfg, dpfedavg_noise_seed(self.cfg.seed, inp.round_idx))
            noise = dp.gaussian_like(total, self.noise_multiplier * clip, source)
        total = total + self.world.bcast(noise)
        self.global_prompt = self.global_prompt + total / len(ids)
        eps = dp.epsilon_spent(self.noise_multiplier, inp.round_idx + 1, self.cfg.dp.delta)
        return RoundOutput(
            {cid: self.global_prompt.clone() for cid in inp.prompts},
            RoundInfo(epsilon=eps, noise_multiplier=self.noise_multiplier,
                      reproducible_noise=self.cfg.dp.reproducible_noise),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"global_prompt": self.global_prompt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_prompt = state["global_prompt"]


# streams of randomness DP-FPL draws from, kept apart so that none shifts another
_INIT, _LOCAL, _GLOBAL = 0, 1, 2


def _stream_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from small non-negative ints (a stream tag first)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class DPFPL(Strategy):
    """DP-FPL (factorization ``dpfpl`` of its public code) on this harness.

    Clients train in lockstep, one minibatch each per step (:meth:`train_round`):

    * **shared prompt** ``D`` (DP-FPL's global prompt): each client's batch gradient is
      clipped to ``dp.clip``; the server takes the plain mean over all clients and adds
      ``N(0, std / n_clients)``, ``std = sigma * clip / batch_size``; every client steps with
      that same noisy mean, so ``D`` stays identical everywhere and :meth:`aggregate` has
      nothing left to do.
    * **local prompt** ``L`` (our class prompt): factorised every step into ``u v + residual``
      (:func:`prompts.dp_mechanisms.factorise`, rank ``min(dp.rank, n_ctx)``); the factor gradients are
      clipped to ``dp.clip`` and get ``N(0, std)`` noise locally, and ``L`` steps with the
      gradient rebuilt from them (:func:`prompts.dp_mechanisms.privatise_lowrank`). With
      ``class_specific`` each class's ``(M, W)`` slice is factorised on its own.

    ``sigma = sqrt(rounds * ln(1/delta)) / epsilon`` (:func:`prompts.dp_mechanisms.dpfpl_sigma`) is the
    public code's formula and has **no accountant**: it ignores the number of steps per
    round, so the reported epsilon is a heuristic label (``epsilon_heuristic: true`` in the
    metrics), not a DP guarantee comparable with :class:`DPFedAvg`'s.

    Deviations from the public code, by design of this harness: ``D`` starts at the common
    ``D_init`` (the public code draws it from ``N(0, 0.02)``); ``L`` starts at ``N(0, 0.02)``
    as there (a zero ``L`` has no direction to factorise); a round is ``train.epochs`` epochs
    of the largest client (``ceil(max_n / batch_size)`` steps each), smaller clients cycling
    through fresh permutations, where the public code runs as many steps as its last
    client's loader has batches; each client gets a fresh optimiser every round, as
    :func:`prompts.training.train_local` does (the public code shares one optimiser between
    all clients).

    Randomness: batches are seeded as in every other method (``client_seed``), the
    factorisation's random start by (seed, round, client). The noise is secret
    (:func:`noise_source`): the local noise is drawn by each client, the shared noise by client
    rank 0 and sent to every rank, so every rank adds the same. With ``dp.reproducible_noise``
    both are seeded as the public code does (local by (seed, round, client), shared by (seed,
    round, step)); only then does a resumed run repeat an uninterrupted one exactly.
    """

    def __init__(self, cfg: Config, world: World) -> None:
        super().__init__(cfg, world)
        self.sigma = dp.dpfpl_sigma(cfg.dp.epsilon, cfg.dp.delta, cfg.rounds)
        self.std = self.sigma * cfg.dp.clip / cfg.train.batch_size  # per-sample sensitivity of a batch mean

    def prepare_client(self, cid: int, learner: torch.nn.Module) -> None:
        super().prepare_client(cid, learner)
        g = torch.Generator().manual_seed(_stream_seed(_INIT, self.cfg.seed, cid))
        with torch.no_grad():
            L = learner.class_ctx
            L.copy_((torch.randn(L.shape, generator=g) * 0.02).to(L))

    def train_round(self, clients: Sequence[TrainableClient], round_idx: int) -> float:
        from prompts.training import BatchStepper

        cfg = self.cfg
        t0 = time.perf_counter()
        if cfg.train.epochs == 0:
            return time.perf_counter() - t0
        sizes = {cid: n for part in self.world.allgather({c.cid: len(c.train_y) for c in clients})
                 for cid, n in part.items()}
        steps = cfg.train.epochs * -(-max(sizes.values()) // cfg.train.batch_size)
        for c in clients:
            reseed_augmentation(c.train_x, cfg.seed, round_idx, c.cid)
        steppers = [
            BatchStepper(c.learner, c.train_x, c.train_y, lr=cfg.train.lr, batch_size=cfg.train.batch_size,
                         optimizer=cfg.train.optimizer, balanced=cfg.train.balanced, softmax=cfg.train.softmax,
                         absent_logit_scale=cfg.train.absent_logit_scale,
                         seed=client_seed(cfg.seed, round_idx, c.cid))
            for c in clients
        ]
        local_gens = [torch.Generator().manual_seed(_stream_seed(_LOCAL, cfg.seed, round_idx, c.cid))
                      for c in clients]
        # reproducible: the public code's one stream per client for the factorisation and the noise
        local_noise = [noise_source(cfg, g) for g in local_gens]
        for step in range(steps):
            clipped: dict[int, torch.Tensor] = {}
            for c, stepper, gen, noise in zip(clients, steppers, local_gens, local_noise):
                stepper.backward()
                clipped[c.cid] = dp.clip_by_norm(c.learner.domain_ctx.grad.detach(), cfg.dp.clip).cpu()
                self._privatise_local(c.learner, gen, noise)
            shared = self._noisy_mean(clipped, round_idx, step)
            for c, stepper in zip(clients, steppers):
                c.learner.domain_ctx.grad = shared.to(c.learner.domain_ctx.device, copy=True)
                stepper.step()
        for stepper in steppers:
            stepper.close()
        return time.perf_counter() - t0

    def _privatise_local(self, learner: torch.nn.Module, gen: torch.Generator, noise: dp.NoiseSource) -> None:
        """Replace the local prompt's gradient by DP-FPL's noised low-rank one."""
        L = learner.class_ctx
        factors = dp.factorise(L.detach(), self.cfg.dp.rank, gen)
        L.grad = dp.privatise_lowrank(L.grad, factors, self.cfg.dp.clip, self.std, noise)

    def _noisy_mean(self, clipped: dict[int, torch.Tensor], round_idx: int, step: int) -> torch.Tensor:
        """The server step: mean of every client's clipped gradient (all ranks) plus shared noise."""
        every: dict[int, torch.Tensor] = {}
        for part in self.world.allgather(clipped):
            every.update(part)
        ids = sorted(every)
        mean = sum(every[i] for i in ids) / len(ids)
        noise = None
        if self.world.is_root:  # drawn once, sent to every rank
            source = noise_source(self.cfg, _stream_seed(_GLOBAL, self.cfg.seed, round_idx, step))
            noise = dp.gaussian_like(mean, self.std / len(ids), source)
        return mean + self.world.bcast(noise)

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        # D moved in lockstep with the same noisy gradient on every client: already shared
        return RoundOutput(
            dict(inp.prompts),
            RoundInfo(epsilon=self.cfg.dp.epsilon, epsilon_heuristic=self.method().heuristic_epsilon,
                      sigma=self.sigma, reproducible_noise=self.cfg.dp.reproducible_noise),
        )
