"""Prompt stealing in the training view: each method's honest-but-curious observer and its best
reconstruction of the victim's private prompt.

The victim's *private prompt* is what it computed from its own data alone in the last round:
its locally trained domain prompt (the upload, before aggregation; DP-FPL has no upload, its
shared prompt moves in lockstep) plus its class prompt. Everything an observer sees is derived
from it. The observers, from the threat model:

=========  ======================================  =========================================
method     observer                                best reconstruction (domain, class)
=========  ======================================  =========================================
promptfl   the server: every uploaded prompt       (upload, 0)
clustered  the honest server of the plaintext twin (upload, 0)
truedomain the server grouping by true domain      (upload, 0)
secfpp     a co-member of the victim's cluster:    ((n * mean - own upload) / (n - 1), 0);
           its own prompt and the cluster mean     n = cluster size (assumed known), or all
                                                   clients when the cluster is under
                                                   ``min_cluster_size`` (SecPC then hands out
                                                   the all-client mean)
dpfedavg   the aggregator: the clipped noised sum  (new global prompt, 0)
dpfpl      the aggregator: the noised gradients    (shared prompt, 0)
local      anyone: nothing is shared               (public initialisation, 0)
=========  ======================================  =========================================

The class prompt never leaves a client in any method, so every observer guesses zero for it.
SecFPP's *other* parties (outside the victim's cluster) see only k and a transcript that the
transcript audit (:mod:`launcher.audit.transcript`) shows independent of the victim's input.

Cosines are of the change from the public initialisation (``prompt - init``, all classes'
contexts flattened): the initialisation is public, so a raw cosine would credit every observer
with it; 0 means "nothing beyond the public init", 1 "the victim's direction exactly".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from launcher.audit.sources import AuditedRun
from launcher.methods import get as get_method
from launcher.strategies import served_group


@dataclass
class Reconstruction:
    domain: torch.Tensor  # M x width
    class_ctx: torch.Tensor  # like the victim's class prompt
    note: str = ""


def private_domain(run: AuditedRun, cid: int, uploads: dict[int, torch.Tensor]) -> torch.Tensor:
    """The victim's own last locally trained domain prompt."""
    return uploads[cid] if cid in uploads else run.final[cid]["domain_ctx"].cpu()


def reconstruct(run: AuditedRun, cid: int, uploads: dict[int, torch.Tensor], init: torch.Tensor) -> Reconstruction:
    """The observer's best estimate of client ``cid``'s private prompt (table above)."""
    zero = torch.zeros_like(run.final[cid]["class_ctx"].cpu())
    final_d = run.final[cid]["domain_ctx"].cpu()
    observer = get_method(run.method).observer  # the table above, from launcher.methods
    if observer == "server":
        return Reconstruction(uploads[cid], zero)
    if observer == "co_member":
        assign = run.assignment
        if not assign:
            raise ValueError(f"{run.path}: no cluster assignment logged (run with evaluation.gather=true)")
        members = served_group(assign, cid, run.cfg.mpc.min_cluster_size)
        others = [i for i in members if i != cid]
        if not others:
            return Reconstruction(final_d, zero, "alone")
        co = others[0]
        n = len(members)
        return Reconstruction((n * final_d - uploads[co]) / (n - 1), zero, f"co-member {co}, n={n}")
    if observer in ("dp_aggregator", "dp_gradients"):
        return Reconstruction(final_d, zero)
    if observer == "nobody":
        return Reconstruction(init.clone(), zero)
    raise ValueError(f"no observer model for method {run.method!r}")


def delta_cosine(est_d: torch.Tensor, est_l: torch.Tensor, true_d: torch.Tensor, true_l: torch.Tensor,
                 init: torch.Tensor) -> float:
    """Cosine of (estimate - init) and (truth - init) over every class's context ``D + L[c]``;
    0 when the estimate adds nothing to the public initialisation."""
    a = ((est_d - init).unsqueeze(0) + est_l).reshape(-1).double()
    b = ((true_d - init).unsqueeze(0) + true_l).reshape(-1).double()
    if float(a.norm()) == 0.0 or float(b.norm()) == 0.0:
        return 0.0
    return float(a @ b / (a.norm() * b.norm()))
