"""Transcript and cluster-size audits of SecPC, on a real multi-party world (CrypTen, one process per party).

**Transcript audit.** One fixed protocol run (public inputs, seed and the chosen k fixed); a
watching party records everything it receives *and every buffer it holds after each
collective* (:class:`mpc.transcript.Recorder`), twice with the victim's secret input A and
twice with B. :func:`mpc.transcript.compare` tests each message (sign test on repeats + KS,
Holm-corrected) and :func:`mpc.transcript.plaintext_hits` looks for the victim's plaintext
(inputs or its own output rows, fixed point) anywhere in the watcher's buffers. A third,
exact check (:func:`opened_values`) catches a *single* opened value, which no per-message
statistical test can with four runs: a word the watcher holds that looks like an encoded
plaintext (``2^8 <= |w| < 2^40``; a share word is uniform on the 64-bit ring, so this happens with
probability 2^-23, and smaller words - single bits of binary shares, public counts - carry
too little entropy to tell a repeat from chance), repeats exactly in both runs with secret A and changes with B. Two deliberate
leaks are audited alongside the real protocol so the audit is shown able to fail:
``open_distance`` (one x_i . S_j opened to everyone) and ``reduce_reveal`` (the output
revealed with CrypTen's ``get_plain_text(dst=p)``, a gloo ``reduce`` that leaves partial sums in
non-destination buffers - the leak the project removed).

**Cluster-size audit.** A co-member of a cluster of n knows its own prompt and the cluster
mean, so ``n * mean - own`` is the sum of the others; for n = 2 that *is* the victim's prompt.
Run with ``min_cluster_size=2`` (explicit ``allow_insecure``) the co-member recovers the victim
up to fixed point; with the default policy (3) a 2-cluster gets the all-client mean instead and
the same subtraction misses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

LEAKS = ("open_distance", "reduce_reveal")
VICTIM, WATCHER = 0, 1  # party ranks
FIXED = 2**16  # CrypTen's fixed-point scale: plaintext as the ring encodes it


def victim_inputs(n: int = 9, m: int = 8, d: int = 6, seed: int = 4) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Secret inputs A and B of party 0 (rows ``i % 3 == 0``) with the same public outcome:
    its rows move to other blobs and its prompts are redrawn; the other parties' rows stay."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, m, generator=g, dtype=torch.float64)
    lab_a = torch.arange(n) % 3
    lab_a = lab_a[torch.randperm(n, generator=g)]
    victim = torch.arange(0, n, 3)
    lab_b = lab_a.clone()
    lab_b[victim] = (lab_a[victim] + 1) % 3
    noise = 0.05 * torch.randn(n, m, generator=g, dtype=torch.float64)

    def rows(lab: torch.Tensor) -> torch.Tensor:
        X = centres[lab] + noise
        return (X / X.norm(dim=1, keepdim=True)).float()

    P_a = torch.randn(n, d, generator=g) * 0.3
    P_b = P_a.clone()
    P_b[victim] = torch.randn(len(victim), d, generator=g) * 0.3
    return (rows(lab_a), P_a), (rows(lab_b), P_b)


def pair_inputs(m: int = 8, d: int = 6, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Six rows, one each of parties 0,1,2,0,1,2: rows 0 (victim) and 1 (co-member) form a tight
    2-cluster, rows 2-5 a 4-cluster far away."""
    g = torch.Generator().manual_seed(seed)
    c = torch.linalg.qr(torch.randn(m, 2, generator=g, dtype=torch.float64))[0].T  # two orthonormal centres
    lab = torch.tensor([0, 0, 1, 1, 1, 1])
    X = c[lab] + 0.02 * torch.randn(6, m, generator=g, dtype=torch.float64)
    P = torch.randn(6, d, generator=g) * 0.3
    return (X / X.norm(dim=1, keepdim=True)).float(), P, [0, 1, 2, 0, 1, 2]


# ------------------------------------------------------------------ deliberate leaks (controls)


def _reduce_reveal(x: Any, owners: list[int], rank: int) -> torch.Tensor:
    """The removed reveal: ``get_plain_text(dst=p)`` per owner, a gloo reduce."""
    out = None
    for p in sorted(set(owners)):
        idx = torch.tensor([i for i, o in enumerate(owners) if o == p])
        val = x[idx].get_plain_text(dst=p)
        if p == rank:
            out = val
    return out


@contextlib.contextmanager
def leak(variant: str) -> Iterator[None]:
    """Install one deliberate leak (or none, ``real``) in this party process for one round."""
    import mpc.secpc as secpc
    from mpc import secure_ops

    if variant == "real":
        yield
        return
    if variant == "reduce_reveal":
        mod, name, value = secure_ops, "reveal_to_owners", _reduce_reveal
    elif variant == "open_distance":
        kmeans = secpc.kmeans_on_shares

        def value(*a: Any, **k: Any) -> Any:
            out = kmeans(*a, **k)
            out.Xi[:1].matmul(out.state.SN[:1].t()).get_plain_text()  # one x_i . S_j, opened to all
            return out

        mod, name = secpc, "kmeans_on_shares"
    else:
        raise ValueError(f"unknown variant {variant!r}; choose real or one of {LEAKS}")
    saved = getattr(mod, name)
    setattr(mod, name, value)
    try:
        yield
    finally:
        setattr(mod, name, saved)


# ------------------------------------------------------------------ party job


def _mine(owners: list[int], rank: int) -> list[int]:
    return [i for i, o in enumerate(owners) if o == rank]


def _encoded(*tensors: torch.Tensor) -> np.ndarray:
    return np.concatenate([torch.round(t.double() * FIXED).long().numpy().ravel() for t in tensors])


def party_job(party: Any, inputs: list, owners: list[int], cfg_kw: dict, variants: tuple[str, ...],
              pair: tuple, sizes: tuple[int, ...]) -> dict:
    """Runs in every party: the transcript runs (watcher records) and the cluster-size rounds."""
    from mpc.secpc import SecPCConfig, secpc_round
    from mpc.transcript import Recorder

    cfg = SecPCConfig(**cfg_kw)
    mine = _mine(owners, party.rank)
    out: dict[str, Any] = {"transcripts": {}, "sizes": {}}
    for variant in variants:
        runs = []
        for X, P in inputs:
            rec = Recorder()
            with leak(variant):
                with rec.active() if party.rank == WATCHER else contextlib.nullcontext():
                    res = secpc_round(party, X[mine], P[mine], owners, cfg)
            runs.append({"k": res.k, "messages": rec.messages() if party.rank == WATCHER else None,
                         "secrets": _encoded(X[mine], P[mine], res.own_rows)})
        out["transcripts"][variant] = runs
    X, P, pair_owners = pair
    mine = _mine(pair_owners, party.rank)
    for size in sizes:
        c = SecPCConfig(k_min=2, k_max=2, iters=5, seed=0, restarts=1, min_cluster_size=size,
                        allow_insecure=size < 3)
        out["sizes"][size] = secpc_round(party, X[mine], P[mine], pair_owners, c).own_rows
    return out


# ------------------------------------------------------------------ verdicts

OPENED_BOUND = 2**40  # |word| below this: an encoded plaintext, not a share (a share is uniform on 2^64)
MIN_ABS = 2**8  # below this a repeat is chance: bits of binary shares, public counts and codes


def opened_values(a1: list, a2: list, b1: list) -> int:
    """Words that are plaintext-sized, identical across the two runs with secret A and different
    with B: a secret-dependent value opened to the watcher (public values do not change with B;
    shares are neither small nor repeated across runs with fresh randomness)."""
    hits = 0
    for (_, _, x1), (_, _, x2), (_, _, y1) in zip(a1, a2, b1):
        if x1.shape != x2.shape or x1.shape != y1.shape:
            continue  # a size change is already flagged by :func:`mpc.transcript.compare`
        a, b = np.abs(x1), np.abs(y1)
        small = (a >= MIN_ABS) & (a < OPENED_BOUND) & (b < OPENED_BOUND)
        hits += int((small & (x1 == x2) & (x1 != y1)).sum())
    return hits



@dataclass
class TranscriptAudit:
    verdicts: dict[str, dict]  # variant -> flagged, plaintext_hits, n_messages, worst messages
    cluster_size: dict[str, dict]  # "min2" / "min3" -> co-member's reconstruction error
    parties: int

    @property
    def leaky_flagged(self) -> bool:
        return all(self.verdicts[v]["flagged"] for v in LEAKS if v in self.verdicts)

    @property
    def real_flagged(self) -> bool:
        return self.verdicts["real"]["flagged"]

    def as_dict(self) -> dict:
        return {"leaky_flagged": self.leaky_flagged, "real_flagged": self.real_flagged, "parties": self.parties,
                "runs_per_variant": 4, "variants": self.verdicts, "cluster_size": self.cluster_size}


def run_audit(variants: tuple[str, ...] = ("real", *LEAKS), sizes: tuple[int, ...] = (2, 3),
              alpha: float = 1e-3, iters: int = 2) -> TranscriptAudit:
    """Spawn 3 parties + the TTP dealer, run everything, judge it here. ``iters``: Lloyd
    iterations of the audited run (each adds the same kinds of message; 1 keeps tests fast)."""
    from mpc import transcript
    from mpc.runtime import PartySpec, run_parties

    A, B = victim_inputs()
    owners = [i % 3 for i in range(len(A[0]))]
    pair = pair_inputs()
    cfg_kw = dict(k_min=2, k_max=3, iters=iters, seed=0, restarts=1)
    out = run_parties(party_job, PartySpec(3), [A, A, B, B], owners, cfg_kw, variants, pair, sizes)
    watcher, victim = out[WATCHER]["transcripts"], out[VICTIM]["transcripts"]
    verdicts = {}
    for v in variants:
        runs = watcher[v]
        msgs = [r["messages"] for r in runs]
        verdict = transcript.compare(*msgs, alpha=alpha)
        hits = sum(transcript.plaintext_hits(msgs[i], victim[v][i]["secrets"]) for i in range(4))
        opened = opened_values(msgs[0], msgs[1], msgs[2])
        ks = sorted({r["k"] for r in runs})
        verdicts[v] = {"flagged": bool(verdict.flagged or hits > 0 or opened > 0), "by_test": bool(verdict.flagged),
                       "plaintext_hits": int(hits), "opened_values": opened, "n_messages": verdict.n_messages,
                       "k": ks,
                       "phases": sorted({p for p, _, _ in runs[0]["messages"]}),
                       "worst": [{k: (float(x) if isinstance(x, (float, np.floating)) else x) for k, x in w.items()}
                                 for w in verdict.worst[:3]]}
    X, P, _ = pair
    sizes_out = {}
    for size in sizes:
        mean = out[WATCHER]["sizes"][size][0]  # the co-member's aggregate row (its row 1)
        guess = 2 * mean - P[1]  # n * mean - own prompt, n = 2
        err = float((guess - P[0]).abs().max())
        sizes_out[f"min{size}"] = {"max_abs_error": err, "recovered": err < 1e-3,
                                   "victim_norm_max": float(P[0].abs().max())}
    return TranscriptAudit(verdicts, sizes_out, parties=3)
