"""The compute side of ``mpc.topology: servers``: the compute parties' round loop, and the run's
bookkeeping at compute party 0.

Why the bookkeeping lives here: in this topology the client ranks meet at no barrier once the
rounds start. A barrier (or a gather) among client ranks ends the job as soon as one of them
dies, whatever ``mpirun`` is told; the compute parties are needed by every round anyway. So each
client rank, after it has checkpointed a round, sends compute party 0 one report
(:func:`mpc.servers.send_report`), and compute party 0 decides, with a deadline, which client
ranks finished the round: those that did not are *lost* (their process is gone, or nothing came
by ``mpc.deadline_s`` after the first report). It then marks the round complete (listing the
lost ranks), logs the round (``metrics.jsonl`` with ``evaluation.gather``, the dropped clients
with their reasons) and tells the other compute parties, who stop waiting for the lost ranks'
shares from the next round on. A lost rank's clients stay out for the rest of the run;
``--resume`` brings them back from their last checkpoint.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

import torch

from launcher import faults
from launcher.config import Config
from launcher.metrics import RoundRow
from launcher.rundir import RunDir
from launcher.secure import SecFPP
from launcher.world import World

log = logging.getLogger(__name__)

#: ``launcher run``'s exit code when the run finished but lost a client rank on the way
#: (``mpc.tolerate_rank_loss``); 0 is a run every client finished, 1 and 137 a failed one.
EXIT_DROPOUTS = 3

REASON_LATE = "no shares by the deadline"
REASON_LOST = "rank lost"
REASON_INVALID = "inputs failed the check on the shares"


def serve(cfg: Config, world: World, mpc_world: World, rd: RunDir, resume_round: int | None,
          n_client_ranks: int, devices: list[str]) -> int:
    """A compute party's (or the dealer's) whole run in the servers topology; returns the exit code.

    Every round: collect the clients' shares, run SecPC, checkpoint this party's shares of the
    centres (before any client sees an output, so a round a client has seen is resumable), send
    each client rank its rows' output shares, and log this party's costs per phase
    (:meth:`RunDir.write_compute_costs`). The compute party's state is a :class:`SecFPP` with no
    clients of its own, so its checkpoint has the format of every other SecFPP shard
    (``{"k", "warm", "features"}``) and its adaptive-k schedule is the clients' own, driven by
    the revealed k. Compute party 0 then keeps the round's books (module docstring).
    """
    from launcher.topology import party_spec, server_layout
    from mpc.compat import import_crypten
    from mpc.runtime import init_from_mpi, shutdown
    from mpc.servers import Inbox, drain_late, serve_round
    from prompts.backbone import text_width

    layout = server_layout(cfg)
    party = init_from_mpi(party_spec(cfg, cfg.mpc.servers), comm=mpc_world._comm)
    if party.is_dealer:
        return 0
    cc = import_crypten().communicator.get()
    # the public shape of a client's row, from the config alone: anything else is refused
    inbox = Inbox(world._comm, layout, (cfg.mpc.proj_dim, cfg.model.n_ctx * text_width(cfg.model.name)))
    state = SecFPP(cfg, world, None)  # its schedule and encrypted centres; no clients, no features
    cfg_sha = rd.config_sha(cfg.to_dict())
    start = 0
    if resume_round is not None:
        state.load_state_dict(rd.load_shard(resume_round, world.rank, cfg_sha, n_client_ranks))
        start = resume_round + 1
    books = Books(cfg, world, rd, layout, start, devices) if mpc_world.rank == 0 else None
    peers = [r for r in range(n_client_ranks, world.size) if r != world.rank]  # compute parties, dealer
    check = faults.require_alive(peers)
    last = None
    costs = rd.read_compute_costs(mpc_world.rank, through_round=start)
    for r in range(start, cfg.rounds):
        faults.enter("secpc", r)
        k_range = state.schedule.k_range(r)

        def checkpoint(res: Any, r: int = r, k_range: tuple[int, int] = k_range) -> None:
            if res.k:
                state.warm[k_range], state.schedule.k = res.state, res.k
            late = [c for c in res.dropped if layout.owners()[c] not in inbox.lost]
            if late:
                log.warning("round %d: clients %s left out (%s)", r + 1, late, REASON_LATE)
            if res.invalid:
                log.warning("round %d: clients %s left out (%s)", r + 1, res.invalid, REASON_INVALID)
            faults.enter("checkpoint", r)
            rd.save_shard(r, world.rank, state.state_dict(), cfg_sha, n_client_ranks)

        lost_before = set(inbox.lost)
        last = serve_round(world._comm, layout, r, state.schedule.round_config(r), state.warm.get(k_range),
                           cfg.mpc.deadline_s, cfg.mpc.wait_s, before_output=checkpoint, inbox=inbox, check=check,
                           gone=faults.gone)
        reasons = {c: REASON_LOST if layout.owners()[c] in lost_before else REASON_LATE for c in last.dropped}
        reasons.update({c: REASON_INVALID for c in last.invalid})
        faults.enter("evaluate", r)
        if books is not None:
            books.close_round(r, last, reasons, inbox.lost, check)
        inbox.lost = _agree_on_lost(cc, inbox.lost if books is not None else set(), n_client_ranks)
        costs.append({"round": r + 1, "k": last.k, "rows": len(last.included), "dropouts": last.dropped,
                      "invalid": last.invalid, "refused": {str(k): v for k, v in last.refused.items()},
                      "dropout_reasons": {str(c): why for c, why in sorted(reasons.items())},
                      "lost_ranks": sorted(inbox.lost), "phases": last.stats})
        rd.write_compute_costs(mpc_world.rank, costs)
    faults.enter("done")
    if last is not None and last.dropped:  # answer a client rank that is still late for the last round
        late_ranks = sorted({layout.owners()[c] for c in last.dropped} - inbox.lost)
        drain_late(inbox, cfg.rounds - 1, late_ranks, cfg.mpc.deadline_s)
    shutdown(party)
    if books is not None:
        books.finish()
    # only the bookkeeper says "with dropouts": a rank that exits non-zero early can make Open MPI
    # drop the output the others print after it (compute party 0's summary line)
    return EXIT_DROPOUTS if books is not None and books.ever_lost else 0


def _agree_on_lost(cc: Any, mine: set[int], n_client_ranks: int) -> set[int]:
    """Compute party 0's set of lost client ranks, at every compute party (one small all-gather
    among them: the set is public among the compute parties, as the rows of a round are)."""
    mask = torch.zeros(n_client_ranks, dtype=torch.long)
    mask[sorted(mine)] = 1
    table = torch.stack(cc.all_gather(mask))
    return {r for r in range(n_client_ranks) if bool(table[0, r])}


class Books:
    """Compute party 0's record of the run: which client ranks finished each round, the
    ``COMPLETE`` markers, and (``evaluation.gather``) ``metrics.jsonl``, ``summary.json`` and the
    progress lines. Nothing here is secret-shared: the reports carry what ``evaluation.gather``
    already sends (docs/threat_model.md), or only the round number without it."""

    def __init__(self, cfg: Config, world: World, rd: RunDir, layout: Any, start: int, devices: list[str]) -> None:
        self.cfg, self.world, self.rd, self.layout, self.devices = cfg, world, rd, layout, devices
        self.gather = cfg.evaluation.gather
        self.rows = [r for r in rd.read_metrics(0) if r.round <= start] if (self.gather and start) else []
        self.domains: dict[int, int] = {}
        self.ever_lost: set[int] = set()

    def close_round(self, r: int, res: Any, reasons: dict[int, str], lost: set[int], check: Any) -> None:
        """Wait for the round's reports, decide which client ranks are lost, write the books.
        ``lost`` (the inbox's set) grows in place."""
        from mpc.servers import collect_reports

        expected = set(self.layout.client_ranks()) - lost
        reports, silent, refused = collect_reports(self.world._comm, expected, r, self.cfg.mpc.deadline_s,
                                                   self.cfg.mpc.wait_s, gone=faults.gone, check=check)
        parts = []
        for rank in sorted(reports):
            why = self._check(rank, reports[rank])
            if why is None:
                parts.append(reports[rank].get("part"))
                self.domains.update(reports[rank].get("domains") or {})
            else:
                refused[rank] = why
        for rank, why in sorted(refused.items()):
            log.error("round %d: refused the report of client rank %d: %s", r + 1, rank, why)
        for rank in sorted(silent):
            gone = faults.gone(rank)
            log.error("round %d: client rank %d (clients %s) %s; its clients are left out for the rest of the run",
                      r + 1, rank, self.layout.clients_of(rank),
                      "is gone" if gone else f"sent no report within {self.cfg.mpc.deadline_s:.0f} s")
            for c in self.layout.clients_of(rank):
                reasons[c] = REASON_LOST  # whether or not its rows made the round, it was not evaluated
        lost |= silent
        self.ever_lost |= silent
        self.rd.mark_complete(r, self.layout.n_client_ranks, lost=sorted(lost))
        if not self.gather:
            return
        if not parts:
            log.error("round %d: no client rank reported; nothing to log", r + 1)
            return
        row = RoundRow.from_parts(self.cfg.method, self.cfg.seed, r, parts, self.domains)
        row.dropouts = sorted(reasons) or None
        row.dropout_reasons = {str(c): why for c, why in sorted(reasons.items())} or None
        row.lost_ranks = sorted(lost) or None
        self.rows.append(row)
        self.rd.write_metrics(self.rows, 0)
        from launcher import report

        print(report.round_line(row), file=sys.stderr, flush=True)

    def _check(self, rank: int, rep: Any) -> str | None:
        """Why a client rank's report is not what this config lets it send (None: it is).
        Checked: the shape of the part, that its clients are the rank's own, accuracies in [0, 1]."""
        if not self.gather:
            return None if rep.get("part") is None else "evaluation.gather is off, yet the report carries evaluation"
        part, domains = rep.get("part"), rep.get("domains")
        mine = set(self.layout.clients_of(rank))
        if not isinstance(part, dict) or not isinstance(domains, dict) or not isinstance(part.get("info"), dict):
            return "a report without its part, domains and info"
        for key in ("acc", *(k for k in part if k.startswith("acc_") or k.startswith("zeroshot"))):
            vals = part.get(key, {})
            if not isinstance(vals, dict) or not set(vals) <= mine:
                return f"{key} names clients it does not host"
            if not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in vals.values()):
                return f"{key} holds a value outside [0, 1]"
        if not set(domains) <= mine or not all(isinstance(d, int) and d >= 0 for d in domains.values()):
            return "domains of clients it does not host"
        for key in ("train_s", "agg_s"):
            if not isinstance(part.get(key), (int, float)) or not math.isfinite(part[key]) or part[key] < 0:
                return f"{key} is not a time"
        if not set(part["info"].get("assignment", {})) <= mine or not set(part["info"].get("dropped", [])) <= mine:
            return "info names clients it does not host"
        return None

    def finish(self) -> None:
        """The summary, plot and final line (``evaluation.gather``): over the clients that finished."""
        if not self.gather or not self.rows:
            return
        from launcher import report

        summary = report.summarise(self.cfg, self.rows, self.domains)
        summary["train_devices"] = self.devices
        summary["lost_ranks"] = sorted(self.ever_lost)
        self.rd.write_summary(summary)
        report.plot_run(self.rd, self.rows)
        print(report.final_line(summary, self.rd.path), flush=True)
