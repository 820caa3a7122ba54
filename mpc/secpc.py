"""One SecPC round at one client: check inputs, share, cluster, choose k, aggregate, reveal.

:func:`secpc_round` is what the launcher calls: every client passes its own rows; the parties
cluster the reduced rows (:mod:`mpc.clustering`), reveal only the chosen k, aggregate the full
prompts under encryption (:mod:`mpc.aggregation`) and decrypt row i at its owner alone, point
to point (:func:`mpc.secure_ops.reveal_to_owners`). With ``reveal_own_assignment`` (off by
default, evaluation only) each party also decrypts its own rows' labels, the same way.

Before anything is shared, every party range-checks its own rows and publishes one code
("my inputs are valid", or why not) plus the public shapes, so an honest party with a NaN or a
huge entry is told why at once. That code is the party's own word, so after sharing the parties
check the same contract on the shares (:mod:`mpc.validity`, one bit per row): a single wrapped
ring word would otherwise corrupt *every* client's aggregate, and a party that lies about its
code stops every party before anything is revealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mpc import layout as lay
from mpc import secure_ops as so
from mpc.aggregation import secure_aggregate
from mpc.clustering import (
    SecureState,
    kmeans_on_shares,
    secure_silhouette_choice,
    select_group,
    with_counts,
)
from mpc.compat import import_crypten
from mpc.layout import SecPCConfig, max_prompt_abs, rows_of
from mpc.preprocessing import planned
from mpc.stats import CommLog
from mpc.validity import valid_rows

class InputError(ValueError):
    """Some party's SecPC inputs are malformed; raised at *every* party, before any sharing."""


@dataclass
class SecPCResult:
    own_rows: torch.Tensor  # n_local x prompt_dim: this party's aggregate prompt(s), float32
    k: int  # chosen k (revealed to every party)
    stats: dict  # CommLog.as_dict(): seconds / rounds / bytes per phase
    state: SecureState | None = None  # encrypted centres for a warm start next round (never revealed)
    own_assignment: torch.Tensor | None = None  # only with reveal_own_assignment
    insecure_dealer: bool = False
    revealed: list = field(default_factory=list)  # what this party learnt, for the results


def _local_problem(x_local: torch.Tensor, p_local: torch.Tensor, n_local: int, n_rows: int) -> int:
    """Index into ``INPUT_PROBLEMS`` of why this party's own inputs cannot be shared (0: they can)."""
    if x_local.dim() != 2 or p_local.dim() != 2 or x_local.shape[0] != n_local or p_local.shape[0] != n_local:
        return 5
    return lay.input_problem(x_local, p_local, n_rows)


def check_inputs(rank: int, x_local: torch.Tensor, p_local: torch.Tensor, owners: list[int]) -> None:
    """Every party checks its own rows and all agree, before anything is shared.

    Publishes per party one small code (valid, or which check failed) and its shapes
    (``m, d``; the row count is public through ``owners`` anyway). Raises :class:`InputError`
    at every party if any party is invalid or the shapes disagree, naming the party and why.
    """
    comm = import_crypten().communicator.get()
    n_local = len(rows_of(rank, owners))
    code = _local_problem(x_local, p_local, n_local, len(owners))
    mine = torch.tensor([code, x_local.shape[-1], p_local.shape[-1]], dtype=torch.long)
    table = torch.stack(comm.all_gather(mine)) if comm.get_world_size() > 1 else mine.unsqueeze(0)
    bad = [(p, int(table[p, 0])) for p in range(table.shape[0]) if int(table[p, 0])]
    if bad:
        what = "; ".join(f"party {p}: {lay.INPUT_PROBLEMS[c] if 0 < c < len(lay.INPUT_PROBLEMS) else 'unknown problem'}" for p, c in bad)
        raise InputError(f"SecPC inputs failed the range check ({what}); nothing was shared")
    shapes = {tuple(r.tolist()) for r in table[:, 1:]}
    if len(shapes) > 1:
        raise InputError(f"parties disagree on the (m, d) of their rows: {sorted(shapes)}; nothing was shared")


def secpc_round(
    party,
    x_local: torch.Tensor,
    p_local: torch.Tensor,
    owners: list[int],
    config: SecPCConfig = SecPCConfig(),
    warm: SecureState | None = None,
    bits: int | None = None,
) -> SecPCResult:
    """One SecPC round at one client.

    ``x_local``: ``n_local x m`` reduced prompts (norm <= 1, :func:`mpc.projection.reduce_prompt`);
    ``p_local``: ``n_local x d`` full prompts (``vec(D_i)``); ``owners``: public owner rank of
    every global row (this party's rows appear in ``x_local`` in that order). ``bits``: the
    rows' fractional bits (default ``quant_bits(N)``; the launcher fixes them by the registered
    clients so that rounds with dropouts keep the warm-start centres).
    """
    rank = party.rank
    N = len(owners)
    if N < lay.min_rows(config.k_max, config.allow_insecure):
        raise ValueError(
            f"{N} rows, fewer than k_max={config.k_max} or {lay.SAFE_MIN_CLUSTER}: too few for the centres, "
            "or the all-client mean hands a client another's prompt (allow_insecure=True lifts the second)"
        )
    check_inputs(rank, x_local, p_local, owners)
    log = CommLog()
    bits = lay.quant_bits(N) if bits is None else bits
    with log.phase("share"):
        F = so.share_rows(p_local.float(), owners, rank, None)
        Xq = so.share_rows(lay.quantize(x_local, bits), owners, rank, 0)
    valid = planned("check", lambda lg: _checked(lg, Xq, F, bits, max_prompt_abs(N)), log,
                    key=(tuple(Xq.shape), tuple(F.shape)))
    if not bool(valid.all()):
        bad = sorted({int(owners[i]) for i in torch.nonzero(~valid).flatten().tolist()})
        raise InputError(f"SecPC inputs of part{'ies' if len(bad) > 1 else 'y'} {bad} failed the range check "
                         "under encryption (an entry or a row norm out of bounds); no output was revealed")
    core = cluster_and_aggregate(Xq, F, bits, config, warm, log)
    k, A, agg = core.k, core.A, core.agg
    own_assign = None
    with log.phase("reveal"):
        own_rows = so.reveal_to_owners(agg, owners, rank)
        if config.reveal_own_assignment:
            labels = so.matmul_public_int(A, torch.arange(k))
            own_assign = so.reveal_to_owners(labels, owners, rank).round().long()
    revealed = ["chosen_k (all parties)", "input check code and shapes (all parties)",
                "one validity bit per row, checked on the shares (all parties)", "own aggregate rows (this party only)"]
    if config.reveal_own_assignment:
        revealed.append("own cluster labels (this party only; evaluation switch)")
    return SecPCResult(
        own_rows=own_rows.float(),
        k=k,
        stats=log.as_dict(),
        state=core.state,
        own_assignment=own_assign,
        insecure_dealer=bool(getattr(party, "insecure_dealer", False)),
        revealed=revealed,
    )


@dataclass
class CoreOutput:
    """What the compute side of a round leaves encrypted, plus the revealed k."""

    k: int
    A: object  # N x k one-hot int shares of the chosen candidate
    agg: object  # N x d fixed-point shares: row i = its cluster's mean prompt
    state: SecureState


def cluster_and_aggregate(Xq, F, bits: int, config: SecPCConfig, warm: SecureState | None, log: CommLog) -> CoreOutput:
    """SecPC between sharing and revealing, the same for both topologies: cluster the shared
    rows ``Xq`` (``N x m`` int shares of :func:`mpc.layout.quantize` at ``bits``, already
    checked by :func:`mpc.validity.valid_rows`), reveal only the chosen k, aggregate the shared
    prompts ``F`` (``N x d``, fixed point) per cluster. The member-count column is added here,
    after sharing (:func:`mpc.clustering.with_counts`)."""
    Xi = with_counts(Xq)
    N = Xi.shape[0]
    ks = lay.candidate_groups(config.k_min, config.k_max, config.restarts)

    def cluster(lg):  # data-oblivious up to the revealed k: one planned block (mpc.preprocessing)
        out = kmeans_on_shares(Xi, ks, config.iters, config.seed, bits, warm=warm, log=lg)
        return out, (secure_silhouette_choice(out, ks, N, lg) if len(ks) > 1 else None)

    out, choice = planned("cluster", cluster, log, key=(tuple(Xi.shape), tuple(ks), config.iters, warm is None))

    def aggregate(lg):  # its shapes follow the revealed k: the second block
        if choice is None:
            A, cbits = out.A, None
        else:
            A, cbits = select_group(out.A, choice[2], choice[1], ks, choice[0], lg)
        return A, secure_aggregate(A, F, N, config.min_cluster_size, lg, count_bits=cbits)

    A, agg = planned("aggregate", aggregate, log, key=(N, tuple(F.shape), tuple(ks), None if choice is None else choice[0]))
    return CoreOutput(ks[0] if choice is None else choice[0], A, agg, out.state)


def _checked(log: CommLog, Xq, F, bits: int, prompt_abs: float) -> torch.Tensor:
    """The input contract on the shares (:func:`mpc.validity.valid_rows`) as a planned block."""
    with log.phase("check"):
        return valid_rows(Xq, F, bits, prompt_abs)
