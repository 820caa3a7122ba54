"""What one party sees: record every message and buffer, and test it for leaks.

:class:`Recorder` wraps ``torch.distributed``'s point-to-point and collective calls inside one
party process and keeps, for every call, the tensors the party holds afterwards: what it
received, and the in/out buffers of collectives (gloo's ``reduce`` leaves partial sums in
non-destination buffers: "after a collective" is where such leaks sit). An opening by direct
exchange (:mod:`mpc.transport`) is recorded twice: each share received (``irecv``) and the sum
the party forms from them (``open``), since a value can leak through the sum of messages that
are each uniform. Each entry is tagged with the protocol phase (:class:`mpc.stats.CommLog`
phases).

:func:`compare` then decides whether a transcript depends on another party's secret, from two
runs with secret input A and two with secret input B (same public inputs, same outputs' shapes):

* **determinism test** (exact under the null): per message and element, ``X = [A1 == A2]`` and
  ``Y = [A1 == B1]``. If the message's distribution does not depend on the secret, ``A2`` and
  ``B1`` are exchangeable given ``A1``, so among discordant elements ``X != Y`` each direction
  has probability 1/2: a one-sided binomial (sign) test. A value computed from the secret
  (an opened distance, a plaintext row, an unmasked partial sum) repeats across runs with
  the same input and changes with the input, and is caught;
* **distribution test**: two-sample Kolmogorov-Smirnov of the message's elements under A vs B;
* both with Holm's correction over all messages;
* **exact check** (:func:`plaintext_hits`): no buffer element equals a plaintext value of the
  victim (encoded inputs or outputs), ignoring values too small to be telling.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

_OPS = ("send", "recv", "isend", "irecv", "reduce", "all_reduce", "broadcast", "all_gather", "gather",
        "scatter", "reduce_scatter", "all_to_all")


@dataclass
class Entry:
    phase: str
    op: str
    tensors: list  # references while recording, snapshots after :meth:`Recorder.stop`


@dataclass
class Recorder:
    """Patch ``torch.distributed`` in this process; :meth:`stop` restores it and snapshots."""

    entries: list[Entry] = field(default_factory=list)
    phase: str = "setup"

    @contextlib.contextmanager
    def active(self) -> Iterator["Recorder"]:
        import torch.distributed as dist

        from mpc import stats, transport

        originals = {name: getattr(dist, name) for name in _OPS if hasattr(dist, name)}
        original_exchange = transport._exchange
        original_phase = stats.CommLog.phase
        recorder = self

        def wrap(name, fn):
            def call(*args, **kwargs):
                out = fn(*args, **kwargs)
                held = [t for t in list(args) + list(kwargs.values()) + [out] for t in _tensors(t)]
                recorder.entries.append(Entry(recorder.phase, name, held))
                return out

            return call

        @contextlib.contextmanager
        def phase(log, name):
            before, recorder.phase = recorder.phase, name
            try:
                with original_phase(log, name) as p:
                    yield p
            finally:
                recorder.phase = before

        for name, fn in originals.items():
            setattr(dist, name, wrap(name, fn))
        transport._exchange = wrap("open", original_exchange)
        stats.CommLog.phase = phase
        try:
            yield self
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)
            transport._exchange = original_exchange
            stats.CommLog.phase = original_phase
            self.snapshot()

    def snapshot(self) -> None:
        """Copy every held tensor as it is now (async receives have completed)."""
        for e in self.entries:
            e.tensors = [t.detach().clone() for t in e.tensors]

    def messages(self) -> list[tuple[str, str, np.ndarray]]:
        """``(phase, op, int64 words)`` per call: every integer tensor the party held."""
        out = []
        for e in self.entries:
            words = [t.flatten().numpy().astype(np.int64) for t in e.tensors if not torch.is_floating_point(t)]
            out.append((e.phase, e.op, np.concatenate(words) if words else np.zeros(0, dtype=np.int64)))
        return out


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass
class Verdict:
    flagged: bool
    n_messages: int
    worst: list[dict]  # the most significant messages, for the report
    plaintext_hits: int = 0


def compare(a1, a2, b1, b2, alpha: float = 1e-3) -> Verdict:
    """Does the transcript depend on the secret? ``a1, a2``: two runs with secret A (lists of
    :meth:`Recorder.messages`), ``b1, b2`` with secret B. A differing message count or shape is
    itself a leak (control flow depends on the secret) and is flagged. The sign test uses
    ``a1, a2, b1``; ``b2`` only checks that B's control flow is stable."""
    from scipy.stats import binomtest, ks_2samp

    if not (len(a1) == len(a2) == len(b1) == len(b2)):
        return Verdict(True, len(a1), [{"reason": f"message counts differ: {len(a1)}, {len(a2)}, {len(b1)}, {len(b2)}"}])
    rows = []
    for i, ((phase, op, x1), (_, _, x2), (_, _, y1), (_, _, y2)) in enumerate(zip(a1, a2, b1, b2)):
        if not (x1.shape == x2.shape == y1.shape == y2.shape):
            return Verdict(True, len(a1), [{"reason": f"message {i} ({phase}/{op}) changes size with the secret"}])
        if x1.size == 0:
            continue
        same_a = x1 == x2
        cross = x1 == y1
        n10, n01 = int((same_a & ~cross).sum()), int((~same_a & cross).sum())
        p_det = binomtest(n10, n10 + n01, 0.5, alternative="greater").pvalue if n10 + n01 else 1.0
        p_ks = ks_2samp(x1.astype(np.float64), y1.astype(np.float64)).pvalue if x1.size > 1 else 1.0
        rows.append(dict(index=i, phase=phase, op=op, size=int(x1.size), p_det=p_det, p_ks=p_ks))
    adj = holm([r["p_det"] for r in rows] + [r["p_ks"] for r in rows])
    for r, pd, pk in zip(rows, adj[: len(rows)], adj[len(rows) :]):
        r["p_det_holm"], r["p_ks_holm"] = pd, pk
    flagged = any(min(r["p_det_holm"], r["p_ks_holm"]) < alpha for r in rows)
    worst = sorted(rows, key=lambda r: min(r["p_det_holm"], r["p_ks_holm"]))[:5]
    return Verdict(flagged, len(a1), worst)


def plaintext_hits(messages, secrets: np.ndarray, min_abs: int = 2**8) -> int:
    """How many held words equal one of ``secrets`` (int64 encodings of another party's
    plaintext), ignoring secrets smaller than ``min_abs`` (public bits and counts are small)."""
    s = np.asarray(secrets, dtype=np.int64).ravel()
    s = np.unique(s[np.abs(s) >= min_abs])
    return int(sum(np.isin(w, s).sum() for _, _, w in messages))
