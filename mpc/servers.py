"""Server-aided SecPC: many input-only clients, a few compute parties (``mpc.topology: servers``).

In the peer topology every client is a CrypTen party, so bytes per party grow as N^2 and a
round's time with the number of parties. Here ``S`` compute parties (default 3; CrypTen
ranks ``0..S-1``) and the TTP dealer (rank ``S``) run SecPC, and the clients, many per MPI
rank, are input parties only:

1. **Share.** A client encodes its reduced row as SecPC's integer row ``[round(x 2^s) | 1]``
   (``s = quant_bits(N)`` of the *registered* N, so a round with dropouts keeps the bits and
   the warm-start centres) and its prompt at CrypTen's 16 fractional bits, splits the
   concatenation into ``S`` additive shares over ``Z_2^64`` (``S - 1`` uniform words from a
   ChaCha20 stream keyed by ``os.urandom``, the last one the difference) and sends share
   ``s`` to compute party ``s`` over MPI, one message per client rank and round.
2. **Collect.** Each compute party waits until ``deadline_s`` after the first share of the
   round arrived (and at most ``wait_s`` for the first one). The compute parties then
   publish which rows each of them received and keep the rows *all* of them received: the
   set of rows in a round is public. Rows that missed the deadline are left out of the round
   (their clients keep their prompts); a late message is answered "not included" when it
   arrives.
3. **Compute.** The shares become CrypTen tensors (``MPCTensor.from_shares``) and
   :func:`mpc.secpc.cluster_and_aggregate` runs unchanged: only k is opened.
4. **Output.** Compute party ``s`` sends its share of row ``i``'s aggregate to the rank of
   client ``i`` only, with the public header (round, k, the rows included); the client adds
   the ``S`` shares. No compute party ever holds a plaintext row or opens one.

Trust: any ``S - 1`` compute parties together see only uniform shares; the dealer colludes
with none of them; a client learns its own rows' aggregates, k and which of its own rows were
included. The messages are plain MPI buffers (int64 arrays, never pickles).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mpc import layout as lay
from mpc.clustering import SecureState, quantized_rows
from mpc.compat import import_crypten
from mpc.prg import ChaChaGenerator
from mpc.secure_ops import FIXED_BITS, matmul_public_int
from mpc.stats import CommLog, PhaseStats

log = logging.getLogger(__name__)

TAG_SHARES = 7101  # client rank -> compute party: header + one share of its rows
TAG_OUTPUT = 7102  # compute party -> client rank: header + its share of the rows' outputs
_HEADER = 4  # shares: [round, n_rows, m + 1, d]; outputs: [round, k, n_rows, has_labels]
_POLL_S = 0.005


class ServerLost(RuntimeError):
    """A compute party did not answer within ``wait_s``: the round cannot finish."""


@dataclass(frozen=True)
class ServerLayout:
    """Who is who in a ``servers`` world: the client ranks, then the compute parties and the dealer.

    World ranks ``0..R-1`` host the clients round-robin (:func:`mpc.layout.round_robin`), ranks
    ``R..R+S-1`` are compute parties ``0..S-1`` (CrypTen's ranks in their own communicator),
    and rank ``R+S`` is the TTP dealer (``dealer="ttp"``). Client rank 0 stays world rank 0, so
    the launcher's "rank 0 writes the run directory" holds in both topologies.
    """

    n_servers: int
    n_client_ranks: int
    n_clients: int
    dealer: str = "ttp"

    def __post_init__(self) -> None:
        if self.n_servers < 2:
            raise ValueError(f"need at least 2 compute parties, got {self.n_servers}")
        if not 1 <= self.n_client_ranks <= self.n_clients:
            raise ValueError(f"need 1..{self.n_clients} client ranks for {self.n_clients} clients, "
                             f"got {self.n_client_ranks}")

    @property
    def n_mpc_ranks(self) -> int:
        """Ranks in the CrypTen world: the compute parties and the dealer."""
        return self.n_servers + (1 if self.dealer == "ttp" else 0)

    @property
    def world_size(self) -> int:
        return self.n_client_ranks + self.n_mpc_ranks

    def server_rank(self, s: int) -> int:
        """World rank of compute party ``s``."""
        return self.n_client_ranks + s

    def is_server(self, rank: int) -> bool:
        return self.n_client_ranks <= rank < self.n_client_ranks + self.n_servers

    def is_client_rank(self, rank: int) -> bool:
        return rank < self.n_client_ranks

    def client_ranks(self) -> list[int]:
        return list(range(self.n_client_ranks))

    def owners(self) -> list[int]:
        """World rank of every client, in client-id order."""
        return lay.round_robin(self.n_clients, self.n_client_ranks)

    def clients_of(self, rank: int) -> list[int]:
        return lay.rows_of(rank, self.owners())

    @property
    def bits(self) -> int:
        """Fractional bits of the rows, fixed by the registered N (see the module docstring)."""
        return lay.quant_bits(self.n_clients)


# ------------------------------------------------------------------ helpers


def split_shares(values: torch.Tensor, n: int, rng: ChaChaGenerator | None = None) -> list[torch.Tensor]:
    """``n`` additive shares of int64 ``values`` over Z_2^64: ``n - 1`` uniform, the last the rest."""
    rng = rng or ChaChaGenerator()
    shares = [rng.int64(values.shape) for _ in range(n - 1)]
    last = values.clone()
    for s in shares:
        last -= s  # int64 arithmetic wraps: this is arithmetic mod 2^64
    return shares + [last]


def encode_inputs(x: torch.Tensor, p: torch.Tensor, bits: int) -> torch.Tensor:
    """A client's rows as the int64 ring elements SecPC shares: ``[xq | 1 | round(p 2^16)]``."""
    import_crypten()
    from crypten.encoder import FixedPointEncoder

    pq = FixedPointEncoder(precision_bits=FIXED_BITS).encode(p.float()).long()
    return torch.cat([quantized_rows(x, bits), pq], 1)


def _recv_any(comm, sources: set[int], tag: int):
    """One message from any of ``sources`` if one is waiting: (source, int64 array) or None."""
    from mpi4py import MPI

    for src in sorted(sources):
        status = MPI.Status()
        if comm.Iprobe(source=src, tag=tag, status=status):
            buf = np.empty(status.Get_count(MPI.INT64_T), dtype=np.int64)
            comm.Recv([buf, MPI.INT64_T], source=src, tag=tag)
            return src, buf
    return None


def _wait_all(requests: list, bound_s: float) -> bool:
    """Wait for MPI send requests up to ``bound_s``; False if some never completed (dead peer)."""
    end = time.monotonic() + bound_s
    pending = list(requests)
    while pending:
        pending = [r for r in pending if not r.Test()]
        if pending and time.monotonic() > end:
            return False
        if pending:
            time.sleep(_POLL_S)
    return True


# ------------------------------------------------------------------ client side


@dataclass
class ClientRound:
    """What a client rank learns in one round."""

    rows: dict[int, torch.Tensor]  # client id -> its aggregate prompt (included clients only)
    k: int  # chosen k (0: the round was skipped, too few rows arrived)
    included: list[int]  # this rank's clients whose rows were in the round
    labels: dict[int, int] = field(default_factory=dict)  # own cluster labels (evaluation switch)
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0


def check_client_inputs(x: torch.Tensor, p: torch.Tensor, n_rows: int) -> None:
    """The peer topology's range check, done by the client itself before it shares anything."""
    from mpc.secpc import InputError, max_prompt_abs

    if not torch.isfinite(x).all() or not torch.isfinite(p).all():
        raise InputError("a reduced row or domain prompt has a NaN or infinite entry; nothing was shared")
    if x.numel() and float(x.double().norm(dim=-1).max()) > 1.0 + 1e-6:
        raise InputError("a reduced row has Euclidean norm > 1 (rows must be normalised); nothing was shared")
    if p.numel() and float(p.abs().max()) > max_prompt_abs(n_rows):
        raise InputError(f"a domain prompt entry is above the bound {max_prompt_abs(n_rows):.4g}; nothing was shared")


def client_round(
    comm,
    layout: ServerLayout,
    round_idx: int,
    ids: list[int],
    x: torch.Tensor,
    p: torch.Tensor,
    wait_s: float,
) -> ClientRound:
    """Share this rank's live clients' rows to the compute parties and reconstruct their outputs.

    ``ids``: the clients taking part this round (a subset of this rank's clients; a client that
    dropped out is simply not listed), ``x``: their reduced rows, ``p``: their flattened prompts.
    """
    t0 = time.perf_counter()
    check_client_inputs(x, p, layout.n_clients)
    header = np.array([round_idx, len(ids), x.shape[1] + 1, p.shape[1]] + list(ids), dtype=np.int64)
    shares = split_shares(encode_inputs(x, p, layout.bits), layout.n_servers)
    msgs = [np.concatenate([header, s.numpy().ravel()]) for s in shares]
    reqs = [comm.Isend(msg, dest=layout.server_rank(s), tag=TAG_SHARES) for s, msg in enumerate(msgs)]
    sent = sum(m.nbytes for m in msgs)
    answers: dict[int, np.ndarray] = {}
    servers = {layout.server_rank(s) for s in range(layout.n_servers)}
    end = time.monotonic() + wait_s
    while len(answers) < layout.n_servers:
        got = _recv_any(comm, servers - set(answers), TAG_OUTPUT)
        if got is None:
            if time.monotonic() > end:
                missing = sorted(r - layout.n_client_ranks for r in servers - set(answers))
                raise ServerLost(f"no answer from compute part{'ies' if len(missing) > 1 else 'y'} "
                                 f"{missing} within {wait_s:.0f} s in round {round_idx + 1}")
            time.sleep(_POLL_S)
            continue
        src, buf = got
        if int(buf[0]) != round_idx:  # an answer to an earlier round we were late for
            continue
        answers[src] = buf
    _wait_all(reqs, wait_s)
    heads = {tuple(a[:_HEADER + int(a[2])]) for a in answers.values()}
    if len(heads) != 1:
        raise ServerLost(f"compute parties disagree on round {round_idx + 1}'s header: {sorted(heads)}")
    first = next(iter(answers.values()))
    _, k, n_in, has_labels = (int(v) for v in first[:_HEADER])
    included = [int(v) for v in first[_HEADER : _HEADER + n_in]]
    width = p.shape[1] + int(has_labels)
    total = torch.zeros(n_in, width, dtype=torch.long)
    for a in answers.values():
        total += torch.from_numpy(a[_HEADER + n_in :].copy()).view(n_in, width)
    rows = {cid: total[j, : p.shape[1]].double() / 2.0**FIXED_BITS for j, cid in enumerate(included)}
    labels = {cid: int(total[j, -1]) for j, cid in enumerate(included)} if has_labels else {}
    received = sum(a.nbytes for a in answers.values())
    return ClientRound({c: r.float() for c, r in rows.items()}, k, included, labels, sent, received,
                       time.perf_counter() - t0)


# ------------------------------------------------------------------ compute-party side


@dataclass
class ServerRound:
    """What a compute party learns and keeps from one round."""

    k: int  # 0 when the round was skipped
    included: list[int]  # client ids in the round (public among compute parties)
    dropped: list[int]  # registered clients whose rows were not in it
    stats: dict
    state: SecureState | None = None
    late: list[int] = field(default_factory=list)  # client ranks answered "not included" for an earlier round


def _answer_late(comm, src: int, round_idx: int) -> None:
    comm.Send(np.array([round_idx, 0, 0, 0], dtype=np.int64), dest=src, tag=TAG_OUTPUT)


def _collect(comm, layout: ServerLayout, round_idx: int, deadline_s: float, wait_s: float):
    """This compute party's shares of the round: {client rank: (ids, int64 n x w array)}."""
    got: dict[int, tuple[list[int], np.ndarray, tuple[int, int]]] = {}
    late: list[int] = []
    pending = set(layout.client_ranks())
    owners = layout.owners()
    start = time.monotonic()
    first = None
    while pending:
        msg = _recv_any(comm, pending, TAG_SHARES)
        now = time.monotonic()
        if msg is None:
            if first is not None and now - first > deadline_s:
                break
            if first is None and now - start > wait_s:
                raise TimeoutError(f"no client shared anything within {wait_s:.0f} s in round {round_idx + 1}")
            time.sleep(_POLL_S)
            continue
        src, buf = msg
        r, n, m1, d = (int(v) for v in buf[:_HEADER])
        if r < round_idx:  # late for an earlier round: tell it, keep waiting for this round's
            _answer_late(comm, src, r)
            late.append(src)
            continue
        first = now if first is None else first
        ids = [int(v) for v in buf[_HEADER : _HEADER + n]]
        if any(owners[i] != src for i in ids):
            raise ValueError(f"rank {src} sent rows {ids} it does not host")
        got[src] = (ids, buf[_HEADER + n :].reshape(n, m1 + d), (m1, d))
        pending.discard(src)
    return got, late


def serve_round(
    comm,
    layout: ServerLayout,
    round_idx: int,
    config: lay.SecPCConfig,
    warm: SecureState | None,
    deadline_s: float,
    wait_s: float,
    before_output: Callable[[ServerRound], None] | None = None,
) -> ServerRound:
    """One SecPC round at this compute party (CrypTen initialised among the compute parties).

    ``before_output`` is called with the round's result before any client gets its output: the
    launcher checkpoints there, so a round a client has seen is always resumable."""
    from mpc.secpc import cluster_and_aggregate

    ct = import_crypten()
    MPCTensor = ct.mpc.MPCTensor
    cc = ct.communicator.get()
    clog = CommLog()
    t0 = time.perf_counter()
    got, late = _collect(comm, layout, round_idx, deadline_s, wait_s)
    n_total = layout.n_clients
    mask = torch.zeros(n_total + 2, dtype=torch.long)
    for ids, _, (m1, d) in got.values():
        mask[ids] = 1
        mask[n_total:] = torch.tensor([m1, d])
    table = torch.stack(cc.all_gather(mask))  # public: which rows each compute party holds, shapes
    shapes = {tuple(t[n_total:].tolist()) for t in table if t[:n_total].any()}
    if len(shapes) > 1:
        raise ValueError(f"clients disagree on the (m + 1, d) of their rows: {sorted(shapes)}")
    included = [i for i in range(n_total) if bool(table[:, i].all())]
    dropped = [i for i in range(n_total) if i not in included]
    received = sum(v[1].nbytes for v in got.values())
    clog.phases["collect"] = PhaseStats("collect", time.perf_counter() - t0, 1, 0)
    n_min = max(config.k_max, 1 if config.allow_insecure else lay.SAFE_MIN_CLUSTER)
    if len(included) < n_min:
        log.warning("round %d: only %d rows arrived (need %d); the round is skipped", round_idx + 1,
                    len(included), n_min)
        k, agg, labels, state = 0, None, None, warm
    else:
        (m1, d), = shapes
        rows = {}
        for ids, arr, _ in got.values():
            for j, cid in enumerate(ids):
                rows[cid] = arr[j]
        mine = torch.from_numpy(np.stack([rows[i] for i in included]))
        Xi = MPCTensor.from_shares(mine[:, :m1].contiguous(), precision=0)
        F = MPCTensor.from_shares(mine[:, m1:].contiguous(), precision=FIXED_BITS)
        core = cluster_and_aggregate(Xi, F, layout.bits, config, warm, clog)
        k, agg, state = core.k, core.agg.share, core.state
        labels = matmul_public_int(core.A, torch.arange(k)).share if config.reveal_own_assignment else None
    result = ServerRound(k, included, dropped, clog.as_dict(), state, late)
    if before_output is not None:
        before_output(result)
    t1 = time.perf_counter()
    pos = {cid: j for j, cid in enumerate(included)}
    reqs, sent = [], 0
    for src, (ids, _, _) in sorted(got.items()):
        mine_in = [i for i in ids if i in pos] if k else []
        head = np.array([round_idx, k, len(mine_in), int(labels is not None)] + mine_in, dtype=np.int64)
        body = torch.zeros(len(mine_in), 0, dtype=torch.long)
        if mine_in:
            idx = torch.tensor([pos[i] for i in mine_in])
            body = agg[idx] if labels is None else torch.cat([agg[idx], labels[idx].view(-1, 1)], 1)
        msg = np.concatenate([head, body.numpy().ravel()])
        reqs.append(comm.Isend(msg, dest=src, tag=TAG_OUTPUT))
        sent += msg.nbytes
    if not _wait_all(reqs, deadline_s):
        log.warning("round %d: some client ranks did not take their outputs within %.0f s", round_idx + 1, deadline_s)
    clog.phases["output"] = PhaseStats("output", time.perf_counter() - t1, 1, sent)
    result.stats = clog.as_dict()
    result.stats["clients"] = {"bytes_received": received, "bytes_sent": sent}
    return result


def drain_late(comm, layout: ServerLayout, round_idx: int, missing_ranks: list[int], bound_s: float) -> None:
    """After the last round: answer client ranks that may still send it late, for up to ``bound_s``."""
    pending = set(missing_ranks)
    end = time.monotonic() + bound_s
    while pending and time.monotonic() < end:
        msg = _recv_any(comm, pending, TAG_SHARES)
        if msg is None:
            time.sleep(_POLL_S)
            continue
        src, buf = msg
        _answer_late(comm, src, int(buf[0]))
        pending.discard(src)
