"""``python -m launcher run``: one federated experiment, one run directory.

Launch with ``mpirun -np <clients (+1 TTP dealer)>`` for SecFPP; plaintext methods also
run in a single process that holds every client. Each round:

    strategy.train_round (local training, plaintext, GPU if present) -> strategy.aggregate
    (SecPC for SecFPP) -> install the new domain prompts -> evaluate -> log -> checkpoint

A round is checkpointed by every rank and marked complete by rank 0; ``--resume`` picks up
after the last complete round. Local training is seeded by (seed, round, client), so a
resumed run repeats exactly what an uninterrupted one does.

Start-up order: every rank does its slow local set-up first (backbone, possibly the tiny
CLIP's one-time pretraining, data, feature cache, the resume checkpoint), then all ranks,
the TTP dealer included, meet at an MPI barrier and exchange a verdict (each rank's error,
if any, and its class list), and only then join the CrypTen party world. So set-up time
never counts against ``mpc.timeout_s``, and bad input stops every rank with the same
message before any MPC starts. Once the party world is up, any failure ends the job with a
line naming the phase and the missing party (:mod:`launcher.faults`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from launcher import fault_hooks, faults
from launcher.config import Config, ConfigError, from_dict, load_config
from launcher.metrics import EXTRA_SPLITS, OWN_MIX, SEEN_UNSEEN, RoundRow
from launcher.rundir import CheckpointError, RunDir
from launcher.methods import get as get_method, make_strategy
from launcher.strategies import RoundInput
from launcher.topology import client_ranks_for, roles
from launcher.world import World, launched_by_mpi
from mpc.layout import round_robin, rows_of

log = logging.getLogger("launcher")


@dataclass
class Client:
    cid: int
    domain: int
    domain_name: str
    learner: Any
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    # datasets that have them (fonts): the splits of ``EXTRA_SPLITS``
    extra: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m launcher run",
        description="Run one federated prompt-learning experiment (SecFPP or a baseline).",
    )
    p.add_argument("--config", help="YAML config (default: built-in defaults)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR after its last complete round")
    p.add_argument("--run-dir", help="write here instead of <out_dir>/<generated name>")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=3 mpc.k_max=3")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------- setup


def build_clients(cfg: Config, client_ids: list[int]) -> tuple[list[Client], Any, list[str]]:
    from prompts import data as pdata
    from prompts.backbone import load_backbone, resolve_device
    from prompts.features import OnTheFlyFeatures, compute_features
    from prompts.learner import PromptLearner

    fed = pdata.build_federation(cfg.data, seed=cfg.seed, only=client_ids)  # this rank's clients' data only
    for cid in client_ids:  # before the backbone: a first run would pretrain the tiny CLIP for nothing
        cd = fed.client(cid)
        for what, labels in (("training", cd.train_labels), ("test", cd.test_labels)):
            if len(labels) == 0:
                raise ConfigError(
                    f"client {cid} ({cd.domain_name}) has no {what} images; lower data.min_samples, "
                    f"data.clients_per_domain or data.test_fraction, or add data"
                )
    # the tiny CLIP is one shared pretrained model; cfg.seed varies data and training only
    backbone = load_backbone(cfg.model.name, cfg.model.pretrained, device=resolve_device(cfg.train.device), seed=0)
    clients = []
    for cid in client_ids:
        cd = fed.client(cid)
        learner = PromptLearner(
            backbone,
            fed.classnames,
            n_ctx=cfg.model.n_ctx,
            class_specific=cfg.model.class_specific,
            init=cfg.model.ctx_init,
        )
        clients.append(
            Client(
                cid=cid,
                domain=cd.domain,
                domain_name=cd.domain_name,
                learner=learner,
                train_x=(
                    OnTheFlyFeatures(backbone, cd.train_images, augment=True)
                    if cfg.train.augment
                    else compute_features(backbone, cd.train_images, n_views=cfg.data.n_views, seed=cfg.seed + cid)
                ),
                train_y=cd.train_labels,
                test_x=compute_features(backbone, cd.test_images)[:, 0],
                test_y=cd.test_labels,
                extra={key: (compute_features(backbone, getattr(cd, f"{split}_images"))[:, 0],
                             getattr(cd, f"{split}_labels"))
                       for key, split in EXTRA_SPLITS.items()
                       if getattr(cd, f"{split}_labels", None) is not None and len(getattr(cd, f"{split}_labels"))},
            )
        )
    return clients, backbone, fed.classnames


@dataclass
class _Local:
    """What a client rank builds before it joins the party world."""

    clients: list[Client]
    backbone: Any
    classnames: list[str]
    resume_state: dict[str, Any] | None
    resume_round: int | None


def verdict(statuses: list[dict[str, Any]]) -> None:
    """Raise the same ConfigError on every rank if any rank's set-up failed or class lists differ."""
    failed = [(r, s["error"]) for r, s in enumerate(statuses) if s.get("error")]
    if failed:
        lines = "\n".join(f"  rank {r}: {e}" for r, e in failed)
        raise ConfigError(f"set-up failed on {len(failed)} rank(s), stopping before any MPC starts:\n{lines}")
    lists = {r: s["classnames"] for r, s in enumerate(statuses) if s.get("classnames") is not None}
    if len({tuple(v) for v in lists.values()}) > 1:
        ref_rank = min(lists)
        differ = [r for r, v in lists.items() if v != lists[ref_rank]]
        raise ConfigError(
            f"the parties' class lists differ (rank {ref_rank}: {lists[ref_rank]}; "
            + "; ".join(f"rank {r}: {lists[r]}" for r in differ)
            + "): every client must see the same classes in the same order"
        )


def _import_stack(uses_mpc: bool) -> None:
    """Import the heavy libraries before any phase a peer can die in: loading their shared
    libraries holds the GIL for seconds, and a rank holding it cannot report a peer's death
    before mpirun's SIGKILL follows its SIGTERM."""
    import prompts.backbone  # noqa: F401 - open_clip, torchvision
    import prompts.features  # noqa: F401
    import prompts.learner  # noqa: F401

    if uses_mpc:
        from mpc.compat import import_crypten

        import_crypten()


def _set_thread_budget() -> None:
    """Ranks on one host share its cores: one intra-op thread each when there are more ranks than cores."""
    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def _set_up(cfg: Config, rd: RunDir, rank: int, n_client_ranks: int, resume: bool) -> _Local:
    """Everything slow and local, before the party world exists (client ranks only).

    On ``--resume`` a client rank lost during the run (servers topology) takes its clients
    back from its own last checkpoint; the run goes on from the last complete round."""
    client_ids = rows_of(rank, round_robin(cfg.n_clients, n_client_ranks))
    clients, backbone, classnames = build_clients(cfg, client_ids)
    last = rd.last_complete_round() if resume else None
    own = rd.resume_round_of(rank, last) if last is not None else None
    if own is not None and own != last:
        log.warning("client rank %d was lost in round %d; its clients resume from their checkpoint of round %d",
                    rank, own + 2, own + 1)
    state = rd.load_shard(own, rank, rd.config_sha(cfg.to_dict()), n_client_ranks) if own is not None else None
    return _Local(clients, backbone, classnames, state, last)


# ------------------------------------------------------------------------------- loop


def client_metrics(c: Client, backbone: Any, classnames: list[str], zero_shot: bool, cfg: Config) -> dict[str, float]:
    """One client's accuracies: ``acc`` on its test split and, where it has them, the
    ``EXTRA_SPLITS`` and their ``SEEN_UNSEEN`` parts (classes in / absent from its training
    split), of its prompts or of the hand-written ones (``zero_shot``).

    ``evaluation.unseen_classes=domain`` predicts a class absent from the training split with the
    domain prompt alone (``L[c] = 0``); ``evaluation.label_prior`` adds the log training label
    prior to the own-mix splits' logits (``OWN_MIX``), for every method alike."""
    from sklearn.metrics import accuracy_score

    from prompts.training import log_prior, logits, zero_shot_logits

    n = len(classnames)
    seen = torch.bincount(torch.as_tensor(c.train_y, dtype=torch.long), minlength=n) > 0
    domain_only = ~seen if cfg.evaluation.unseen_classes == "domain" else None
    prior = log_prior(c.train_y, n) if cfg.evaluation.label_prior else None
    out: dict[str, float] = {}
    for key, (x, y) in {"acc": (c.test_x, c.test_y), **c.extra}.items():
        y = torch.as_tensor(y, dtype=torch.long)
        if len(y) == 0:
            continue
        p = prior if key in OWN_MIX else None
        pred = (zero_shot_logits(backbone, classnames, x, p) if zero_shot else logits(c.learner, x, domain_only, p)).argmax(-1)
        out[key] = float(accuracy_score(y.numpy(), pred.numpy()))
        for part, mask in zip(SEEN_UNSEEN.get(key, ()), (seen[y], ~seen[y])):
            if bool(mask.any()):
                out[part] = float(accuracy_score(y[mask].numpy(), pred[mask].numpy()))
    return out


def _evaluate_all(clients: list[Client], backbone: Any, classnames: list[str], zero_shot: bool,
                  cfg: Config) -> dict[str, dict[int, float]]:
    """``{"acc": {cid: ...}, "acc_domain": ..., "acc_seen": ..., ...}``: every metric this rank's clients have."""
    out: dict[str, dict[int, float]] = {}
    for c in clients:
        for key, v in client_metrics(c, backbone, classnames, zero_shot, cfg).items():
            out.setdefault(key, {})[c.cid] = v
    return out


def _default_run_dir(cfg: Config) -> Path:
    name = cfg.run_name or (
        f"{cfg.method}-{cfg.data.name}-s{cfg.seed}-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    return Path(cfg.out_dir) / name


def run(cfg: Config, world: World, run_dir: Path | None = None, resume: bool = False) -> int:
    """Run (or resume) one experiment on this rank; returns this rank's exit code (0, or
    :data:`launcher.compute.EXIT_DROPOUTS` at the compute party that kept the books of a run
    that lost a client rank)."""
    from launcher import compute, report, secure
    from launcher.topology import needs_recovery, recovery_enabled, server_layout

    uses_mpc = get_method(cfg.method).uses_mpc
    n_client_ranks = client_ranks_for(cfg, world, uses_mpc)
    _import_stack(uses_mpc)
    servers = uses_mpc and cfg.mpc.topology == "servers"
    faults.set_peers(world.allgather(list(faults.me())),
                     roles(max(world.size, 1), n_client_ranks, cfg.n_clients, cfg.mpc.servers if servers else 0))
    clients_world = world.split_clients(n_client_ranks)
    is_client = world.rank < n_client_ranks
    _set_thread_budget()

    faults.enter("setup")
    rd = RunDir(clients_world.bcast(str(run_dir or _default_run_dir(cfg)) if clients_world.is_root else None)) \
        if is_client else None
    local, status = None, {"error": None, "classnames": None, "device": None}
    if is_client:
        try:
            if world.rank == 0 and needs_recovery(cfg) and recovery_enabled() is False:
                raise ConfigError(
                    "mpc.tolerate_rank_loss=true needs mpirun --enable-recovery (without it mpirun ends the whole "
                    "job when one rank dies); `python -m launcher ranks --command` prints the line")
            local = _set_up(cfg, rd, clients_world.rank, n_client_ranks, resume)
            status.update(classnames=local.classnames, device=str(local.backbone.device),
                          run_dir=str(rd.path), resume_round=local.resume_round)
        except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
            status["error"] = str(err)
        except Exception as err:  # noqa: BLE001 - reported to every rank below, with its traceback here
            log.exception("set-up failed")
            status["error"] = f"{type(err).__name__}: {err}"
    faults.enter("join")
    world.wait_for_all()  # sleeps, however long another rank's set-up takes
    statuses = world.allgather(status)
    verdict(statuses)
    devices = [s["device"] for s in statuses if s["device"] is not None]

    if uses_mpc:
        from mpc import stats

        stats.phase_listeners.append(faults.enter_step)  # SecPC's steps name the phase in failure reports
        faults.enter("join" if is_client else "dealer")
    if servers and not is_client:  # a compute party or the dealer: no clients, no training
        head = statuses[0]
        return compute.serve(cfg, world, clients_world, RunDir(head["run_dir"]), head["resume_round"],
                             n_client_ranks, devices)
    party = secure.join_party_world(cfg, world) if uses_mpc and not servers else None
    if party is not None and party.is_dealer:
        return 0  # the TTP dealer served until the clients shut down
    assert local is not None and rd is not None
    clients, backbone, classnames = local.clients, local.backbone, local.classnames
    strategy = make_strategy(cfg, clients_world, party)
    for c in clients:
        strategy.prepare_client(c.cid, c.learner)
    # Evaluation-only traffic (true domains, accuracies, timings, own cluster labels) crosses
    # ranks only with evaluation.gather; otherwise each rank logs its own clients. In the servers
    # topology it goes to compute party 0, which keeps the books (launcher.compute): client ranks
    # there meet at no barrier and exchange nothing once the rounds start, so one that dies
    # takes only its own clients with it.
    gather = cfg.evaluation.gather
    domains = evaluation_domains(clients_world, clients, gather and not servers)
    log_rank = 0 if gather else clients_world.rank  # whose metrics file this rank keeps, if any
    keeps_log = not gather or (clients_world.is_root and not servers)
    reports: list[Any] = []  # servers topology: the round reports still in flight

    rows: list[RoundRow] = []
    start = 0
    if local.resume_state is not None:
        for c in clients:
            c.learner.load_state_dict(local.resume_state["clients"][c.cid])
        strategy.load_state_dict(local.resume_state["strategy"])
        rows = [r for r in rd.read_metrics(log_rank) if r.round <= local.resume_round + 1] if keeps_log else []
        start = local.resume_round + 1
    elif clients_world.is_root and not resume:
        rd.write_config(cfg.to_dict())

    progress = None
    if clients_world.is_root:
        from tqdm import tqdm

        print(f"local training on: {_device_line(devices)}; CrypTen on cpu", file=sys.stderr, flush=True)
        progress = tqdm(total=cfg.rounds, initial=start, desc=f"{cfg.method}", unit="round", file=sys.stderr)
        print(f"run directory: {rd.path}", flush=True)

    cfg_sha = rd.config_sha(cfg.to_dict())
    for r in range(start, cfg.rounds):
        live = [c for c in clients if not fault_hooks.dropped(c.cid, r)]  # SECFPP_DROP: clients that died
        faults.enter("train", r)
        train_s = strategy.train_round(live, r)
        faults.enter("secpc", r)
        t0 = time.perf_counter()
        out = strategy.aggregate(
            RoundInput(
                round_idx=r,
                prompts=fault_hooks.poison({c.cid: c.learner.get_domain_prompt().cpu() for c in live}, r, world.rank),  # CPU only
                weights={c.cid: int(len(c.train_y)) for c in live},
                domain_init=clients[0].learner.domain_init.cpu(),
                domains={c.cid: c.domain for c in live},
            )
        )
        agg_s = time.perf_counter() - t0
        faults.enter("evaluate", r)
        for c in live:
            if c.cid in out.prompts:  # a client left out of the round keeps its prompt
                c.learner.set_domain_prompt(out.prompts[c.cid])
        dropped = sorted({c.cid for c in clients} - {c.cid for c in live} | set(out.info.dropped))
        part = {**_evaluate_all(live, backbone, classnames, not strategy.trains, cfg),
                "train_s": train_s, "agg_s": agg_s, "info": dataclasses.replace(out.info, dropped=dropped).to_wire()}
        if r == 0:  # the reference level: hand-written prompts, nothing trained
            zs = _evaluate_all(live, backbone, classnames, True, cfg)
            part.update({"zeroshot" if k == "acc" else f"zeroshot_{k}": v for k, v in zs.items()})
        if r == cfg.rounds - 1 and cfg.data.holdout_clients_per_domain:
            if clients_world.size == 1:  # every client's final prompt in hand
                from launcher.newclient import evaluate_newclients

                part["acc_newclient"], held_domains = evaluate_newclients(cfg, strategy, clients)
                domains.update(held_domains)
            elif clients_world.is_root:
                log.warning("acc_newclient is evaluated where one process holds every client; not here")
        parts = clients_world.gather(part) if gather and not servers else [part]
        faults.enter("checkpoint", r)
        rd.save_shard(
            r,
            clients_world.rank,
            {"clients": {c.cid: c.learner.state_dict() for c in clients}, "strategy": strategy.state_dict()},
            cfg_sha,
            n_client_ranks,
        )
        row = None
        if keeps_log:
            row = RoundRow.from_parts(cfg.method, cfg.seed, r, parts, domains)
            rows.append(row)
            rd.write_metrics(rows, log_rank)
        if servers:  # tell the bookkeeper; no barrier (launcher.compute)
            from mpc.servers import send_report

            own = {"part": part, "domains": {c.cid: c.domain for c in clients}} if gather else {"part": None}
            reports.append(send_report(world._comm, server_layout(cfg), {"round": r, **own}))
        else:
            clients_world.barrier()  # every shard and log of round r is on disk
            if clients_world.is_root:
                rd.mark_complete(r, n_client_ranks)
        if clients_world.is_root:
            progress.update(1)
            if row is not None:
                progress.write(report.round_line(row))
    faults.enter("done")
    strategy.close()
    if reports:  # the last reports must reach compute party 0 before this rank exits
        from mpc.servers import _wait_all

        _wait_all(reports, cfg.mpc.deadline_s)
    if not clients_world.is_root:
        return 0
    progress.close()
    if keeps_log:
        summary = report.summarise(cfg, rows, domains)
        summary["train_devices"] = devices
        rd.write_summary(summary)
        report.plot_run(rd, rows)
        print(report.final_line(summary, rd.path), flush=True)
    return 0


def evaluation_domains(clients_world: World, clients: list[Any], gather: bool) -> dict[int, int]:
    """The true domains the metrics need (ARI, per-domain accuracy): with ``evaluation.gather``
    rank 0 receives every client's, and every other rank keeps only its own clients'. A true
    domain is evaluation-only information: no client rank learns another's."""
    own = {c.cid: c.domain for c in clients}
    if not gather:
        return own
    parts = clients_world.gather(own)
    return own if parts is None else {cid: d for part in parts for cid, d in part.items()}


def _device_line(devices: list[str]) -> str:
    """``cpu (ranks 0-8)``-style summary of where each client rank trains."""
    groups: dict[str, list[int]] = {}
    for r, d in enumerate(devices):
        groups.setdefault(d, []).append(r)
    return ", ".join(f"{d} (rank{'s' if len(rs) > 1 else ''} {rs[0]}{f'-{rs[-1]}' if len(rs) > 1 else ''})"
                     for d, rs in groups.items())


def main(argv: list[str]) -> int:
    args = _parse(argv)
    world = World.detect()
    faults.watch(world.rank)
    logging.basicConfig(level=logging.WARNING, format=f"[rank {world.rank}] %(levelname)s %(message)s")
    try:
        if args.resume:
            rd = RunDir(args.resume)
            if not rd.config_path.is_file():
                raise ConfigError(f"--resume: {rd.config_path} not found; is {args.resume} a run directory?")
            cfg = from_dict(rd.read_config())
            if args.overrides:
                raise ConfigError("--resume takes the run's own config; overrides are not allowed")
            code = run(cfg, world, rd.path, resume=True)
        else:
            cfg = load_config(args.config, args.overrides)
            code = run(cfg, world, Path(args.run_dir) if args.run_dir else None)
    except ConfigError as err:  # raised alike on every rank, before any MPC: no abort needed
        prefix = f"[rank {world.rank}] " if launched_by_mpi() else ""
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - any failure must bring the whole job down, loudly
        if not faults.missing():  # a peer's death explains itself; anything else gets its traceback
            log.exception("run failed: %s", err)
        reason = f"{type(err).__name__}: {err}"
        if launched_by_mpi():
            faults.abort(reason)  # exits; mpirun then stops the other ranks, and each says where it was
        print(faults.describe(reason), file=sys.stderr, flush=True)
        return 1
    faults.enter("done")
    from launcher.topology import needs_recovery

    if launched_by_mpi() and needs_recovery(cfg):
        faults.finish(code)  # no MPI_Finalize: it can hang once a peer has died (docs/operations.md)
    return code
