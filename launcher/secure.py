"""SecFPP's aggregation step and its plaintext twin, as strategies.

Both reduce each client to ``x_i = normalise(R vec(f_i - D_init))`` with a public seeded
projection ``R`` (``f_i`` is the client's accumulated own updates or its prompt, see
:class:`_ClusterFeatures`), cluster the ``x_i`` with adaptive k-means, and give every client
the mean full prompt of its cluster (or the global mean when the cluster is smaller than
``min_cluster_size``). :class:`SecFPP` does it under CrypTen encryption across the parties
(:mod:`mpc.secpc`); :class:`PlaintextClustered` does the same maths in the clear at an
honest server (:mod:`mpc.reference`), which is what SecFPP must match up to fixed point.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from launcher.config import Config
from launcher.metrics import MPCCost, RoundInfo
from launcher.strategies import RoundInput, RoundOutput, Strategy
from launcher.world import World
from mpc.dealer import DEALERS
from mpc.layout import round_robin

log = logging.getLogger(__name__)

def join_party_world(cfg: Config, world: World) -> Any:
    """Join the CrypTen party world (collective over every MPI rank, dealer included)."""
    from launcher.topology import party_spec
    from mpc.runtime import init_from_mpi

    return init_from_mpi(party_spec(cfg, cfg.n_clients))


def _reduce_all(
    cfg: Config, prompts: dict[int, torch.Tensor], domain_init: torch.Tensor, features: dict[int, torch.Tensor]
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Client ids, reduced rows ``x_i`` (of ``features``) and flattened prompts, in client-id order."""
    from mpc.projection import projection_matrix, reduce_prompt

    R = projection_matrix(domain_init.numel(), cfg.mpc.proj_dim, seed=cfg.seed)  # public, same everywhere
    ids = sorted(prompts)
    if not ids:  # every client of this rank has dropped out: it still computes, with no rows
        return ids, torch.zeros(0, cfg.mpc.proj_dim), torch.zeros(0, domain_init.numel())
    x = torch.stack([reduce_prompt(features[i], domain_init, R) for i in ids])
    p = torch.stack([prompts[i].reshape(-1) for i in ids])
    return ids, x, p


def _bits(cfg: Config) -> int:
    """Fractional bits of the clustered rows, fixed by the registered clients: a round with
    dropouts keeps them, and with them the warm-start centres (SecFPP and its twin alike)."""
    from mpc.layout import quant_bits

    return quant_bits(cfg.n_clients)


class _ClusterFeatures:
    """What SecPC clusters for each client (``mpc.features``).

    * ``drift`` (default): the sum of the client's *own* local updates over all rounds so far,
      ``sum_r (D_i after training - D_i as installed)``. The prompt itself stops carrying the
      client's domain once aggregation has pulled it to a cluster mean: clients merged in one
      round then look identical and stay merged (measured: ARI stuck at 0-0.5 on the default).
      The accumulated updates keep only what the client's own data said, averaging SGD noise
      out over rounds. A client's drift is a function of its own prompts only, shared as
      secretly as the prompt; nothing more is revealed.
    * ``prompt``: ``D_i`` itself, as the SecFPP paper clusters it.

    Either way the rows are reduced as ``normalise(R vec(f_i))`` and the *prompts* are what
    gets averaged. State (the installed prompt and the drift per local client) is checkpointed.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.installed: dict[int, torch.Tensor] = {}
        self.drift: dict[int, torch.Tensor] = {}

    def __call__(self, prompts: dict[int, torch.Tensor], domain_init: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.mode == "prompt":
            return prompts
        out = {}
        for cid, d in prompts.items():
            update = d - self.installed.get(cid, domain_init)
            self.drift[cid] = self.drift.get(cid, torch.zeros_like(d)) + update
            out[cid] = domain_init + self.drift[cid]  # reduce_prompt subtracts D_init again
        return out

    def installed_now(self, prompts: dict[int, torch.Tensor]) -> None:
        """The prompts clients hold now (a client left out of a round keeps its trained one)."""
        self.installed.update({cid: p.clone() for cid, p in prompts.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"installed": dict(self.installed), "drift": dict(self.drift)}  # tensors are never mutated

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.installed, self.drift = dict(state["installed"]), dict(state["drift"])


class _AdaptiveSchedule:
    """Which candidate k's a round evaluates: all of k_min..k_max every ``adapt_every`` rounds,
    the last chosen k in between. Centres persist across rounds (warm start)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.k: int | None = None

    def k_range(self, round_idx: int) -> tuple[int, int]:
        if self.k is None or round_idx % self.cfg.mpc.adapt_every == 0:
            return self.cfg.mpc.k_min, self.cfg.mpc.k_max
        return self.k, self.k

    def round_config(self, round_idx: int) -> Any:
        """The round's public SecPC parameters, identical for SecFPP and its plaintext twin."""
        from mpc.layout import SecPCConfig

        k_min, k_max = self.k_range(round_idx)
        m = self.cfg.mpc
        return SecPCConfig(
            k_min=k_min,
            k_max=k_max,
            iters=m.iters,
            seed=self.cfg.seed,
            min_cluster_size=m.min_cluster_size,
            reveal_own_assignment=self.cfg.evaluation.gather,
            restarts=m.restarts,
            allow_insecure=m.allow_insecure,
        )


class PlaintextClustered(Strategy):
    """SecPC's maths in the clear at an honest server: SecFPP's accuracy twin, no privacy."""

    def __init__(self, cfg: Config, world: World) -> None:
        super().__init__(cfg, world)
        self.schedule = _AdaptiveSchedule(cfg)
        self.features = _ClusterFeatures(cfg.mpc.features)
        self.centres: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        from mpc.reference import secpc_reference

        prompts, _ = self._gather(inp)
        ids, x, p = _reduce_all(self.cfg, prompts, inp.domain_init, self.features(prompts, inp.domain_init))
        k_range = self.schedule.k_range(inp.round_idx)
        res = secpc_reference(x.double(), p.double(), self.schedule.round_config(inp.round_idx),
                              warm_state=self.centres.get(k_range), bits=_bits(self.cfg))
        self.centres[k_range] = (res.S, res.n)
        self.schedule.k = res.k
        shape = inp.domain_init.shape
        rows = {cid: res.rows[j].float().reshape(shape) for j, cid in enumerate(ids)}
        self.last = (res, k_range, ids, rows, p.double().mean(0).float().reshape(shape))
        self.features.installed_now(rows)
        info = RoundInfo(k=res.k)
        if self.cfg.evaluation.gather:
            info.assignment = {cid: int(res.labels[j]) for j, cid in enumerate(ids) if cid in inp.prompts}
        return RoundOutput({cid: rows[cid] for cid in inp.prompts}, info)

    def nearest_cluster_prompt(self, drift: torch.Tensor, domain_init: torch.Tensor) -> torch.Tensor:
        """What a client held out of training gets (``acc_newclient``): the last round's prompt of
        the cluster whose final centre (of the chosen candidate) is nearest its reduced ``drift``,
        reduced as every client's row is; the all-client mean if that cluster has no member.
        Plaintext twin only: SecFPP would need a secure nearest-centre query, which it does not have."""
        from mpc.layout import candidate_groups, group_layout
        from mpc.projection import projection_matrix, reduce_prompt

        res, k_range, ids, rows, everyone = self.last
        R = projection_matrix(domain_init.numel(), self.cfg.mpc.proj_dim, seed=self.cfg.seed)
        x = reduce_prompt(domain_init + drift, domain_init, R).double()
        off, k = group_layout(candidate_groups(*k_range, self.cfg.mpc.restarts))[res.group]
        centres = res.S[off:off + k].double() / (res.n[off:off + k].double().unsqueeze(1) * 2.0 ** _bits(self.cfg))
        j = int(((centres - x) ** 2).sum(1).argmin())
        members = [cid for i, cid in enumerate(ids) if int(res.labels[i]) == j]
        return rows[members[0]].clone() if members else everyone.clone()

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.schedule.k, "centres": self.centres, "features": self.features.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.k = state["k"]
        self.centres = state["centres"]
        self.features.load_state_dict(state["features"])


class SecFPP(Strategy):
    """SecPC under CrypTen: each party shares its reduced and full domain prompts, and gets
    back only its own cluster's mean prompt (see the README's threat model)."""

    def __init__(self, cfg: Config, world: World, party: Any) -> None:
        super().__init__(cfg, world)
        self.party = party
        self.schedule = _AdaptiveSchedule(cfg)
        self.features = _ClusterFeatures(cfg.mpc.features)  # this party's clients only
        self.warm: dict[tuple[int, int], Any] = {}  # encrypted centres per candidate set

    def aggregate(self, inp: RoundInput) -> RoundOutput:
        from mpc.secpc import secpc_round

        ids, x, p = _reduce_all(self.cfg, inp.prompts, inp.domain_init, self.features(inp.prompts, inp.domain_init))
        if self.cfg.mpc.topology == "servers":
            return self._via_servers(inp, ids, x, p)
        live = sorted(c for part in self.world.allgather(ids) for c in part)  # public: who takes part
        placement = round_robin(self.cfg.n_clients, self.world.size)
        owners = [placement[c] for c in live]
        k_range = self.schedule.k_range(inp.round_idx)
        config = self.schedule.round_config(inp.round_idx)
        res = secpc_round(self.party, x, p, owners, config, warm=self.warm.get(k_range), bits=_bits(self.cfg))
        self.warm[k_range] = res.state
        self.schedule.k = res.k
        shape = inp.domain_init.shape
        total = res.stats["total"]
        info = RoundInfo(
            k=res.k,
            mpc=MPCCost(seconds=total["seconds"], rounds=total["rounds"], bytes_per_party=total["bytes"]),
            mpc_phases=res.stats,
            insecure_dealer=res.insecure_dealer,
        )
        if res.own_assignment is not None:
            info.assignment = {cid: int(res.own_assignment[j]) for j, cid in enumerate(ids)}
        rows = {cid: res.own_rows[j].float().reshape(shape) for j, cid in enumerate(ids)}
        self.features.installed_now(rows)
        return RoundOutput(rows, info)

    def _via_servers(self, inp: RoundInput, ids: list[int], x: torch.Tensor, p: torch.Tensor) -> RoundOutput:
        """Servers topology: send shares to the compute parties, rebuild the own clients' rows."""
        from mpi4py import MPI

        from launcher import faults
        from launcher.topology import server_layout
        from mpc.servers import client_round

        layout = server_layout(self.cfg)
        # a compute party or the dealer that dies ends the round here, named, not after wait_s;
        # the steps are the fault matrix's "before sharing" and "after sharing, before the output"
        res = client_round(MPI.COMM_WORLD, layout, inp.round_idx, ids, x, p, self.cfg.mpc.wait_s,
                           check=faults.require_alive(list(range(layout.n_client_ranks, layout.world_size))),
                           on_step=faults.enter_step)
        shape = inp.domain_init.shape
        rows = {cid: res.rows[cid].reshape(shape) for cid in res.included}
        self.features.installed_now({**inp.prompts, **rows})
        info = RoundInfo(
            k=res.k,
            # a client's own view: the share and output messages, their bytes, its wall time
            mpc=MPCCost(seconds=res.seconds, rounds=2, bytes_per_party=res.bytes_sent + res.bytes_received),
            insecure_dealer=DEALERS[self.cfg.mpc.dealer].insecure,
            dropped=[cid for cid in ids if cid not in rows],
        )
        if res.labels:
            info.assignment = dict(res.labels)
        return RoundOutput(rows, info)

    def state_dict(self) -> dict[str, Any]:
        """This party's shares of the encrypted centres (see ``SecureState.state_dict``)."""
        warm = {kr: s.state_dict() for kr, s in self.warm.items()}
        return {"k": self.schedule.k, "warm": warm, "features": self.features.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from mpc.clustering import SecureState

        self.schedule.k = state["k"]
        if "features" in state:  # compute-party shards written before they shared this format had none
            self.features.load_state_dict(state["features"])
        self.warm = {tuple(kr): SecureState.from_state(w) for kr, w in state["warm"].items()}

    def close(self) -> None:
        from mpc.runtime import shutdown

        if self.party is not None:  # servers topology: clients are not CrypTen parties
            shutdown(self.party)
