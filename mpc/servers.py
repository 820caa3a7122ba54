"""Server-aided SecPC: many input-only clients, a few compute parties (``mpc.topology: servers``).

In the peer topology every client is a CrypTen party, so bytes per party grow as N^2 and a
round's time with the number of parties. Here ``S`` compute parties (default 3; CrypTen
ranks ``0..S-1``) and the TTP dealer (rank ``S``) run SecPC, and the clients, many per MPI
rank, are input parties only:

1. **Share.** A client encodes its reduced row as ``round(x 2^s)`` (``s = quant_bits(N)`` of
   the *registered* N, so a round with dropouts keeps the bits and the warm-start centres) and
   its prompt at CrypTen's 16 fractional bits, splits the concatenation into ``S`` additive
   shares over ``Z_2^64`` (``S - 1`` uniform words from a ChaCha20 stream keyed by
   ``os.urandom``, the last one the difference) and sends share ``s`` to compute party ``s``
   over MPI, one message per client rank and round.
2. **Collect.** Each compute party waits until ``deadline_s`` after the first share of the
   round arrived (and at most ``wait_s`` for the first one), and refuses, naming the sender,
   any message that does not fit what the config fixes (:class:`Inbox`). The compute parties
   then all-gather which rows each of them received and which client ranks each heard from,
   and keep the rows *all* of them received: the set of rows in a round is public. Rows that
   missed the deadline somewhere are left out of the round (their clients keep their
   prompts), and every compute party answers every rank that any of them heard from with the
   same header, so a client whose send straddled one party's deadline is left out, not failed.
3. **Check and compute.** The shares become CrypTen tensors (``MPCTensor.from_shares``); the
   input contract is checked on them (:func:`mpc.validity.valid_rows`, one opened bit per
   row: a client's own range check is not the others' proof), invalid rows are left out and
   named, and :func:`mpc.secpc.cluster_and_aggregate` runs unchanged (it appends the public
   member-count column itself): only k is opened.
4. **Output.** Compute party ``s`` sends its share of row ``i``'s aggregate to the rank of
   client ``i`` only, with the public header (round, k, the rows included); the client adds
   the ``S`` shares. No compute party ever holds a plaintext row or opens one.

Trust: any ``S - 1`` compute parties together see only uniform shares and the validity bits;
the dealer colludes with none of them; a client learns its own rows' aggregates, k and which
of its own rows were included. The messages are plain MPI buffers (int64 arrays, never pickles).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mpc import dealer as dealers
from mpc import layout as lay
from mpc.clustering import SecureState
from mpc.compat import import_crypten
from mpc.prg import ChaChaGenerator
from mpc.layout import FIXED_BITS, INPUT_PROBLEMS, input_problem, max_prompt_abs
from mpc.secure_ops import matmul_public_int
from mpc.stats import CommLog, PhaseStats

log = logging.getLogger(__name__)

TAG_SHARES = 7101  # client rank -> compute party: header + one share of its rows
TAG_OUTPUT = 7102  # compute party -> client rank: header + its share of the rows' outputs
TAG_REPORT = 7103  # client rank -> compute party 0: the round's bookkeeping (JSON, mpc.wire)
REPORT_CAP = 1 << 24  # bytes: a report is a few numbers per client; anything larger is refused unread
_CHECK_S = 0.5  # how often a waiting rank asks ``check`` whether a peer it needs is gone
_HEADER = 4  # shares: [round, n_rows, m, d]; outputs: [round, k, n_rows, has_labels]
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
        return self.n_servers + int(dealers.get(self.dealer).needs_process)

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
    """A client's rows as the int64 ring elements it shares: ``[round(x 2^bits) | round(p 2^16)]``.

    No member-count column: the compute parties append the public 1 themselves after sharing
    (:func:`mpc.clustering.with_counts`), so a client cannot claim to be -5 members."""
    import_crypten()
    from crypten.encoder import FixedPointEncoder

    pq = FixedPointEncoder(precision_bits=FIXED_BITS).encode(p.float()).long()
    return torch.cat([lay.quantize(x, bits), pq], 1)


def _probe_any(comm, sources: set[int], tag: int) -> tuple[int, int] | None:
    """(source, number of int64 words) of a message waiting from one of ``sources``, or None.
    Nothing is received (or allocated) yet: the size is checked first."""
    from mpi4py import MPI

    for src in sorted(sources):
        status = MPI.Status()
        if comm.Iprobe(source=src, tag=tag, status=status):
            return src, status.Get_count(MPI.INT64_T)
    return None


def _recv(comm, src: int, tag: int, count: int, gone: Callable[[int], bool] | None = None,
          bound_s: float | None = None) -> np.ndarray | None:
    """Receive the probed message. With ``gone`` (and ``bound_s``), poll instead of blocking and
    give up (None) once the sender is known dead or ``bound_s`` has passed: a sender killed
    half-way through a large message leaves a receive that Open MPI never completes, even under
    ``--enable-recovery``."""
    from mpi4py import MPI

    buf = np.empty(count, dtype=np.int64)
    if gone is None and bound_s is None:
        comm.Recv([buf, MPI.INT64_T], source=src, tag=tag)
        return buf
    req = comm.Irecv([buf, MPI.INT64_T], source=src, tag=tag)
    end = None if bound_s is None else time.monotonic() + bound_s
    next_check = time.monotonic() + _CHECK_S
    while not req.Test():
        now = time.monotonic()
        if (end is not None and now > end) or (gone is not None and now > next_check and gone(src)):
            req.Cancel()
            log.error("a message from rank %d never completed (%s); dropped", src,
                      "the rank is gone" if gone is not None and gone(src) else f"not within {bound_s:.0f} s")
            return None
        if now > next_check:
            next_check = now + _CHECK_S
        time.sleep(_POLL_S)
    return buf


def _recv_any(comm, sources: set[int], tag: int, bound_s: float | None = None):
    """One message from any of ``sources`` if one is waiting: (source, int64 array) or None.
    With ``bound_s``: :class:`ServerLost` if the message does not complete within it."""
    got = _probe_any(comm, sources, tag)
    if got is None:
        return None
    buf = _recv(comm, got[0], tag, got[1], bound_s=bound_s)
    if buf is None:
        raise ServerLost(f"a message from rank {got[0]} never completed within {bound_s:.0f} s")
    return got[0], buf


def _wait_all(requests: list, bound_s: float, still: Callable[[], list] | None = None) -> bool:
    """Wait for MPI send requests up to ``bound_s``; False if some never completed (dead peer).
    ``still``, if given, returns the requests still worth waiting for (checked every ``_CHECK_S``)."""
    end = time.monotonic() + bound_s
    pending = list(requests)
    next_check = time.monotonic() + _CHECK_S
    while pending:
        if still is not None and time.monotonic() > next_check:
            keep = {id(q) for q in still()}
            pending = [q for q in pending if id(q) in keep]
            next_check = time.monotonic() + _CHECK_S
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
    """The input contract (:func:`mpc.layout.input_problem`), checked by the client itself
    before it shares anything, as in the peer topology."""
    from mpc.secpc import InputError

    code = input_problem(x, p, n_rows)
    if code:
        raise InputError(f"{INPUT_PROBLEMS[code]} (bound {max_prompt_abs(n_rows):.4g}); nothing was shared")


def send_shares(comm, layout: ServerLayout, round_idx: int, ids: list[int], x: torch.Tensor,
                p: torch.Tensor) -> tuple[list, int]:
    """Start sending one share of these clients' encoded rows to each compute party.

    Message: ``[round, n_rows, m, d, ids..., share of the n x (m + d) words]``. Returns the MPI
    requests and the bytes sent."""
    check_client_inputs(x, p, layout.n_clients)
    header = np.array([round_idx, len(ids), x.shape[1], p.shape[1]] + list(ids), dtype=np.int64)
    shares = split_shares(encode_inputs(x, p, layout.bits), layout.n_servers)
    msgs = [np.concatenate([header, s.numpy().ravel()]) for s in shares]
    reqs = [comm.Isend(msg, dest=layout.server_rank(s), tag=TAG_SHARES) for s, msg in enumerate(msgs)]
    return reqs, sum(m.nbytes for m in msgs)


def receive_outputs(comm, layout: ServerLayout, round_idx: int, d: int, wait_s: float,
                    check: Callable[[], None] | None = None) -> ClientRound:
    """Wait for every compute party's answer to this round and add up the output shares.

    The compute parties decide inclusion from the table they all-gathered, so their headers
    (round, k, this rank's included clients) are identical; if they are not, one of them is
    faulty and the round's output cannot be trusted.

    ``check`` (called every ``_CHECK_S`` while waiting) raises if a compute party is known to be
    gone: under ``mpirun --enable-recovery`` nobody else ends the job for it, and ``wait_s`` is
    as long as local training may take."""
    answers: dict[int, np.ndarray] = {}
    servers = {layout.server_rank(s) for s in range(layout.n_servers)}
    end = time.monotonic() + wait_s
    next_check = time.monotonic() + _CHECK_S
    while len(answers) < layout.n_servers:
        got = _recv_any(comm, servers - set(answers), TAG_OUTPUT, bound_s=wait_s)
        if got is None:
            if check is not None and time.monotonic() > next_check:
                check()
                next_check = time.monotonic() + _CHECK_S
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
    heads = {tuple(a[:_HEADER + int(a[2])]) for a in answers.values()}
    if len(heads) != 1:
        raise ServerLost(f"compute parties disagree on round {round_idx + 1}'s header: {sorted(heads)}")
    first = next(iter(answers.values()))
    _, k, n_in, has_labels = (int(v) for v in first[:_HEADER])
    included = [int(v) for v in first[_HEADER : _HEADER + n_in]]
    width = d + int(has_labels)
    total = torch.zeros(n_in, width, dtype=torch.long)
    for a in answers.values():
        total += torch.from_numpy(a[_HEADER + n_in :].copy()).view(n_in, width)
    rows = {cid: (total[j, :d].double() / 2.0**FIXED_BITS).float() for j, cid in enumerate(included)}
    labels = {cid: int(total[j, -1]) for j, cid in enumerate(included)} if has_labels else {}
    return ClientRound(rows, k, included, labels, 0, sum(a.nbytes for a in answers.values()))


def client_round(
    comm,
    layout: ServerLayout,
    round_idx: int,
    ids: list[int],
    x: torch.Tensor,
    p: torch.Tensor,
    wait_s: float,
    check: Callable[[], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ClientRound:
    """Share this rank's live clients' rows to the compute parties and reconstruct their outputs.

    ``ids``: the clients taking part this round (a subset of this rank's clients; a client that
    dropped out is simply not listed), ``x``: their reduced rows, ``p``: their flattened prompts.
    ``on_step`` is told "share" before anything is sent and "output" once it is (the launcher's
    fault hooks); ``check`` as in :func:`receive_outputs`.
    """
    t0 = time.perf_counter()
    step = on_step or (lambda name: None)
    step("share")
    reqs, sent = send_shares(comm, layout, round_idx, ids, x, p)
    # delivered (the compute parties read them while they collect); a dead compute party ends it here
    _wait_all(reqs, wait_s, (lambda: (check(), reqs)[1]) if check is not None else None)
    step("output")
    res = receive_outputs(comm, layout, round_idx, p.shape[1], wait_s, check)
    res.bytes_sent, res.seconds = sent, time.perf_counter() - t0
    return res


# ------------------------------------------------------------------ compute-party side


@dataclass
class ServerRound:
    """What a compute party learns and keeps from one round."""

    k: int  # 0 when the round was skipped
    included: list[int]  # client ids in the round (public among compute parties)
    dropped: list[int]  # registered clients whose rows did not reach every compute party in time
    stats: dict
    state: SecureState | None = None
    invalid: list[int] = field(default_factory=list)  # rows that failed the check on the shares
    refused: dict[int, str] = field(default_factory=dict)  # client rank -> why its message was refused here


class Inbox:
    """A compute party's view of the client ranks across rounds.

    It validates every share message against what the compute parties know from the config
    (round, the sender's own clients, the row shape, the exact length; sizes are checked
    before anything is allocated), refuses a bad one with a one-line reason naming the
    sender, and remembers which (rank, round) it has answered, so a message that arrives after
    the round was decided without it is dropped rather than answered twice. A sender whose
    message is over the size cap is never read from again (MPI keeps messages in order, so
    reading past it would mean receiving it).
    """

    def __init__(self, comm, layout: ServerLayout, shape: tuple[int, int]) -> None:
        self.comm, self.layout, self.shape = comm, layout, (int(shape[0]), int(shape[1]))
        self.owners = layout.owners()
        self.banned: dict[int, str] = {}
        self.lost: set[int] = set()  # client ranks the compute parties stopped waiting for (dead)
        self.answered: set[tuple[int, int]] = set()
        self.inflight: list = []  # answers to late messages (small, kept until MPI is done with them)

    def cap(self, src: int) -> int:
        """Most int64 words a valid share message from ``src`` can have."""
        n = len(self.layout.clients_of(src))
        return _HEADER + n + n * sum(self.shape)

    def _check(self, src: int, buf: np.ndarray, round_idx: int) -> str | None:
        """Why ``buf`` from ``src`` is not a valid share message for ``round_idx`` (None: it is)."""
        if buf.size < _HEADER:
            return f"a message of {buf.size} words is shorter than the header"
        r, n, m, d = (int(v) for v in buf[:_HEADER])
        if r != round_idx:
            return f"it claims round {r + 1} during round {round_idx + 1}"
        mine = self.layout.clients_of(src)
        if not 0 <= n <= len(mine):
            return f"it claims {n} rows but hosts {len(mine)} clients"
        if (m, d) != self.shape:
            return f"its rows are {m} + {d} words wide, expected {self.shape[0]} + {self.shape[1]}"
        if buf.size != _HEADER + n + n * (m + d):
            return f"{buf.size} words do not match its header ({_HEADER + n + n * (m + d)} expected)"
        ids = [int(v) for v in buf[_HEADER : _HEADER + n]]
        if len(set(ids)) != n or any(not 0 <= i < len(self.owners) or self.owners[i] != src for i in ids):
            return f"rows {ids} are not distinct clients it hosts"
        return None

    def collect(self, round_idx: int, deadline_s: float, wait_s: float, check: Callable[[], None] | None = None,
                gone: Callable[[int], bool] | None = None):
        """This compute party's valid shares of the round: ``({rank: (ids, n x (m+d) words)},
        ranks heard from, {rank: reason refused})``. Waits until ``deadline_s`` after the first
        message of the round (at most ``wait_s`` for the first); ranks in ``lost`` are not
        waited for (a message from one, should it be alive after all, is answered "not
        included"). ``check`` as in :func:`receive_outputs`; a rank ``gone`` (known dead) is not
        waited for either."""
        got: dict[int, tuple[list[int], np.ndarray]] = {}
        refused: dict[int, str] = {}
        pending = set(self.layout.client_ranks()) - set(self.banned) - self.lost
        start, first = time.monotonic(), None
        next_check = start + _CHECK_S
        while pending:
            probe = _probe_any(self.comm, pending, TAG_SHARES)
            now = time.monotonic()
            if probe is None:
                if now > next_check:
                    if check is not None:
                        check()
                    if gone is not None:  # a dead rank sends nothing: no need to wait out the deadline
                        pending = {r for r in pending if not gone(r)}
                    next_check = now + _CHECK_S
                if not pending:
                    break
                if first is not None and now - first > deadline_s:
                    break
                if first is None and now - start > wait_s:
                    raise TimeoutError(f"no client shared anything within {wait_s:.0f} s in round {round_idx + 1}")
                time.sleep(_POLL_S)
                continue
            src, count = probe
            if count > self.cap(src):
                reason = f"a message of {count} words is over the cap of {self.cap(src)}; rank ignored from now on"
                self.banned[src] = reason
                refused[src] = reason
                pending.discard(src)
                log.error("round %d: refused client rank %d: %s", round_idx + 1, src, reason)
                continue
            buf = _recv(self.comm, src, TAG_SHARES, count, gone=gone, bound_s=deadline_s + wait_s)
            if buf is None:  # the sender died while its shares were on the way: it did not share
                pending.discard(src)
                continue
            if buf.size >= 1 and 0 <= int(buf[0]) < round_idx:  # late for an earlier round
                self.answer_late(src, int(buf[0]))
                continue
            first = now if first is None else first
            pending.discard(src)
            reason = self._check(src, buf, round_idx)
            if reason is not None:
                refused[src] = reason
                log.error("round %d: refused client rank %d: %s", round_idx + 1, src, reason)
                continue
            n = int(buf[1])
            got[src] = ([int(v) for v in buf[_HEADER : _HEADER + n]], buf[_HEADER + n :].reshape(n, sum(self.shape)))
        self._answer_lost()
        heard = set(got) | set(refused) | set(self.banned)
        return got, heard, refused

    def _answer_lost(self) -> None:
        """Answer "not included" to share messages from ranks given up for lost: such a rank is
        out for the rest of the run, but if it was only slow it must not wait forever."""
        for src in sorted(self.lost - set(self.banned)):
            while (probe := _probe_any(self.comm, {src}, TAG_SHARES)) is not None:
                if probe[1] > self.cap(src) or probe[1] < 1:
                    self.banned[src] = "an oversized message after it was given up for lost"
                    break
                buf = _recv(self.comm, src, TAG_SHARES, probe[1], bound_s=_CHECK_S * 10)
                if buf is None:
                    self.banned[src] = "a message that never completed after it was given up for lost"
                    break
                self.answer_late(src, int(buf[0]))

    def answer(self, src: int, round_idx: int, k: int, ids: list[int], body: torch.Tensor | None,
               has_labels: bool = False):
        """Send rank ``src`` this round's header (and its rows' output shares): one message."""
        head = np.array([round_idx, k, len(ids), int(has_labels)] + list(ids), dtype=np.int64)
        msg = np.concatenate([head, body.numpy().ravel()]) if body is not None else head
        self.answered.add((src, round_idx))
        return self.comm.Isend(msg, dest=src, tag=TAG_OUTPUT), msg.nbytes

    def answer_late(self, src: int, round_idx: int) -> None:
        """"Not included" for a round decided without ``src``'s message (once per round)."""
        if (src, round_idx) not in self.answered:
            self.inflight.append(self.answer(src, round_idx, 0, [], None)[0])
        self.inflight = [r for r in self.inflight if not r.Test()]


def serve_round(
    comm,
    layout: ServerLayout,
    round_idx: int,
    config: lay.SecPCConfig,
    warm: SecureState | None,
    deadline_s: float,
    wait_s: float,
    before_output: Callable[[ServerRound], None] | None = None,
    inbox: Inbox | None = None,
    shape: tuple[int, int] | None = None,
    check: Callable[[], None] | None = None,
    gone: Callable[[int], bool] | None = None,
) -> ServerRound:
    """One SecPC round at this compute party (CrypTen initialised among the compute parties).

    ``inbox`` carries what the compute party remembers between rounds (make one per run;
    else pass ``shape``, the public ``(m, d)`` of a client's row, for a single round).
    Inclusion is decided from the all-gathered table, so every compute party answers every
    client rank that any of them heard from, with the same header. ``check`` is called while
    waiting for shares (:func:`receive_outputs`); ``gone(rank)`` tells whether a client rank's
    process is known dead (no output to it is waited for). ``before_output`` is called
    with the round's result before any client gets its output: the launcher checkpoints there,
    so a round a client has seen is always resumable."""
    from mpc.preprocessing import planned
    from mpc.secpc import _checked, cluster_and_aggregate

    ct = import_crypten()
    MPCTensor = ct.mpc.MPCTensor
    cc = ct.communicator.get()
    if inbox is None:
        if shape is None:
            raise ValueError("serve_round needs an inbox or the public row shape (m, d)")
        inbox = Inbox(comm, layout, shape)
    m = inbox.shape[0]
    clog = CommLog()
    t0 = time.perf_counter()
    got, heard, refused = inbox.collect(round_idx, deadline_s, wait_s, check, gone)
    n_total, n_ranks = layout.n_clients, layout.n_client_ranks
    mask = torch.zeros(n_total + n_ranks, dtype=torch.long)
    for ids, _ in got.values():
        mask[ids] = 1
    mask[[n_total + r for r in heard]] = 1
    table = torch.stack(cc.all_gather(mask))  # public: which rows each compute party holds, whom it heard
    received = [i for i in range(n_total) if bool(table[:, i].all())]
    heard_any = [r for r in range(n_ranks) if bool(table[:, n_total + r].any())]
    dropped = [i for i in range(n_total) if i not in received]
    clog.phases["collect"] = PhaseStats("collect", time.perf_counter() - t0, 1, 0)
    rows = {cid: arr[j] for ids, arr in got.values() for j, cid in enumerate(ids)}
    Xq = F = None
    included, invalid = received, []
    if received:
        words = torch.from_numpy(np.stack([rows[i] for i in received]))
        Xq = MPCTensor.from_shares(words[:, :m].contiguous(), precision=0)
        F = MPCTensor.from_shares(words[:, m:].contiguous(), precision=FIXED_BITS)
        ok = planned("check", lambda lg: _checked(lg, Xq, F, layout.bits, max_prompt_abs(n_total)), clog,
                     key=(tuple(Xq.shape), tuple(F.shape)))
        if not bool(ok.all()):
            keep = torch.nonzero(ok).flatten()
            invalid = [received[j] for j in torch.nonzero(~ok).flatten().tolist()]
            included = [received[j] for j in keep.tolist()]
            Xq, F = Xq[keep], F[keep]
            log.error("round %d: rows of clients %s failed the range check on the shares; left out",
                      round_idx + 1, invalid)
    n_min = lay.min_rows(config.k_max, config.allow_insecure)
    if len(included) < n_min:
        log.warning("round %d: only %d valid rows arrived (need %d); the round is skipped", round_idx + 1,
                    len(included), n_min)
        k, agg, labels, state = 0, None, None, warm
    else:
        core = cluster_and_aggregate(Xq, F, layout.bits, config, warm, clog)
        k, agg, state = core.k, core.agg.share, core.state
        labels = matmul_public_int(core.A, torch.arange(k)).share if config.reveal_own_assignment else None
    result = ServerRound(k, included, dropped, clog.as_dict(), state, invalid, refused)
    if before_output is not None:
        before_output(result)
    t1 = time.perf_counter()
    pos = {cid: j for j, cid in enumerate(included)}
    reqs, sent = [], 0
    to = []
    for src in heard_any:
        mine_in = [i for i in layout.clients_of(src) if i in pos] if k else []
        body = None
        if mine_in:
            idx = torch.tensor([pos[i] for i in mine_in])
            body = agg[idx] if labels is None else torch.cat([agg[idx], labels[idx].view(-1, 1)], 1)
        req, nbytes = inbox.answer(src, round_idx, k, mine_in, body, labels is not None)
        reqs.append(req)
        to.append(src)
        sent += nbytes
    # a send to a rank that died after sharing may never complete: stop waiting for it once it is known gone
    live = (lambda: [q for q, dest in zip(reqs, to) if not gone(dest)]) if gone is not None else None
    if not _wait_all(reqs, deadline_s, live):
        log.warning("round %d: some client ranks did not take their outputs within %.0f s", round_idx + 1, deadline_s)
    clog.phases["output"] = PhaseStats("output", time.perf_counter() - t1, 1, sent)
    result.stats = clog.as_dict()
    result.stats["clients"] = {"bytes_received": sum(v[1].nbytes for v in got.values()), "bytes_sent": sent}
    return result


def drain_late(inbox: Inbox, round_idx: int, missing_ranks: list[int], bound_s: float) -> None:
    """After the last round: answer client ranks that may still send it late, for up to ``bound_s``."""
    pending = set(missing_ranks) - set(inbox.banned)
    end = time.monotonic() + bound_s
    while pending and time.monotonic() < end:
        probe = _probe_any(inbox.comm, pending, TAG_SHARES)
        if probe is None:
            time.sleep(_POLL_S)
            continue
        src, count = probe
        pending.discard(src)
        if count > inbox.cap(src):
            continue
        buf = _recv(inbox.comm, src, TAG_SHARES, count, bound_s=bound_s)
        r = int(buf[0]) if buf is not None and buf.size else -1
        if 0 <= r <= round_idx:
            inbox.answer_late(src, r)
    _wait_all(inbox.inflight, bound_s)


# ------------------------------------------------------------------ round bookkeeping


def send_report(comm, layout: ServerLayout, report: object) -> object:
    """Start sending compute party 0 this client rank's bookkeeping of a round (JSON through
    :mod:`mpc.wire`, never a pickle). Returns the MPI request: the caller waits for it, bounded,
    before it exits. Client ranks meet at no barrier in this topology: this message, not a
    collective, tells the bookkeeper that the rank finished the round."""
    from mpc import wire

    data = np.frombuffer(wire.encode(report), dtype=np.uint8).copy()
    if data.size > REPORT_CAP:
        raise ValueError(f"a round report of {data.size} bytes is over the cap of {REPORT_CAP}")
    return comm.Isend(data, dest=layout.server_rank(0), tag=TAG_REPORT)  # mpi4py keeps ``data`` alive


def collect_reports(comm, sources: set[int], round_idx: int, deadline_s: float, wait_s: float,
                    gone: Callable[[int], bool] | None = None,
                    check: Callable[[], None] | None = None) -> tuple[dict[int, object], set[int], dict[int, str]]:
    """Compute party 0: each client rank's report of ``round_idx``: ``({rank: report}, ranks that
    sent none, {rank: why its report was refused})``.

    Waits until every rank in ``sources`` reported, a rank is known ``gone`` (its process is dead),
    or ``deadline_s`` has passed since the first report arrived (at most ``wait_s`` for the first).
    A report is decoded as JSON and must be a dict naming this round; one for an earlier round
    (a rank answered "not included" late) is read and dropped. Larger than ``REPORT_CAP``: refused
    unread."""
    from mpi4py import MPI

    from mpc import wire

    got: dict[int, object] = {}
    refused: dict[int, str] = {}
    pending, silent = set(sources), set()
    start, first = time.monotonic(), None
    next_check = start + _CHECK_S
    while pending:
        status = MPI.Status()
        src = next((r for r in sorted(pending) if comm.Iprobe(source=r, tag=TAG_REPORT, status=status)), None)
        now = time.monotonic()
        if src is None:
            if now > next_check:
                if check is not None:
                    check()
                if gone is not None:
                    dead = {r for r in pending if gone(r)}
                    silent |= dead
                    pending -= dead
                next_check = now + _CHECK_S
            if (first is not None and now - first > deadline_s) or (first is None and now - start > wait_s):
                break
            time.sleep(_POLL_S)
            continue
        count = status.Get_count(MPI.BYTE)
        if count > REPORT_CAP:
            refused[src] = f"a report of {count} bytes is over the cap of {REPORT_CAP}"
            pending.discard(src)
            continue
        buf = np.empty(count, dtype=np.uint8)
        comm.Recv([buf, MPI.BYTE], source=src, tag=TAG_REPORT)
        try:
            report = wire.decode(buf.tobytes())
        except (ValueError, UnicodeDecodeError) as err:
            refused[src] = f"a report that is not a valid message ({err})"
            pending.discard(src)
            continue
        r = report.get("round") if isinstance(report, dict) else None
        if isinstance(r, int) and 0 <= r < round_idx:
            continue  # an earlier round's, after the rank was answered late
        first = now if first is None else first
        pending.discard(src)
        if r != round_idx:
            refused[src] = f"a report that names round {r!r} during round {round_idx + 1}"
            continue
        got[src] = report
    return got, silent | pending, refused
