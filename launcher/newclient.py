"""``acc_newclient``: what the federation's shared domain prompt is worth to a client that never
took part (issue 21).

``data.holdout_clients_per_domain`` clients per domain (fonts only) are drawn beside the
federation's (:func:`prompts.data.federation.holdout_ids`; the training clients' data are the
same with or without them) and never train with it or share anything: the round loop never
builds them. After the last round each one gets its domain's shared prompt, as the method's
``newclient`` fact in :mod:`launcher.methods` says, and is evaluated with it *alone* (its class
prompt is zero) on its class-balanced domain test split:

* ``zeroshot`` (``local``, ``zeroshot``): nothing is shared, so CLIP's hand-written prompts;
* ``shared`` (``fedavgd``, ``promptfl``, ``dpfedavg``, ``dpfpl``): the one prompt every client holds;
* ``domain`` (``truedomain``): the prompt its true domain's clients hold;
* ``nearest_cluster`` (``clustered``): the held-out client runs round 1's local step on its own
  few-shot split (nothing leaves it), reduces its drift as every client's row is reduced, and
  takes the prompt of the cluster whose final centre is nearest. This is evaluated in the
  plaintext twin only: SecFPP has no secure nearest-centre query, so its rows carry no
  ``acc_newclient`` (``none``).

Evaluated where one process holds every client (the plaintext methods as ``compare`` runs them).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from launcher.methods import get as get_method

log = logging.getLogger(__name__)


def evaluate_newclients(cfg: Any, strategy: Any, clients: list[Any]) -> tuple[dict[int, float], dict[int, int]]:
    """Held-out client id -> accuracy of its domain's shared prompt alone, and -> its domain."""
    from launcher.run import build_clients
    from launcher.strategies import client_seed
    from prompts.data.federation import holdout_ids
    from prompts.training import evaluate, train_local, zero_shot_accuracy

    kind = get_method(cfg.method).newclient
    d = cfg.data
    ids = holdout_ids(d.n_domains, d.clients_per_domain, d.holdout_clients_per_domain)
    if kind == "none" or not ids:
        return {}, {}
    held, backbone, classnames = build_clients(cfg, ids)
    acc: dict[int, float] = {}
    for h in held:
        x, y = h.extra["acc_domain"]
        if kind == "zeroshot":
            acc[h.cid] = zero_shot_accuracy(backbone, classnames, x, y)
            continue
        if kind == "shared":
            prompt = clients[0].learner.get_domain_prompt()
        elif kind == "domain":
            prompt = next(c.learner.get_domain_prompt() for c in clients if c.domain == h.domain)
        elif kind == "nearest_cluster":
            init = h.learner.domain_init
            t = cfg.train
            train_local(h.learner, h.train_x, h.train_y, epochs=t.epochs, lr=t.lr, batch_size=t.batch_size,
                        optimizer=t.optimizer, balanced=t.balanced, softmax=t.softmax,
                        absent_logit_scale=t.absent_logit_scale, seed=client_seed(cfg.seed, 0, h.cid))
            prompt = strategy.nearest_cluster_prompt(h.learner.get_domain_prompt() - init, init)
        else:
            raise ValueError(f"method {cfg.method}: unknown newclient rule {kind!r}")
        h.learner.set_domain_prompt(prompt)
        with torch.no_grad():
            h.learner.class_ctx.zero_()  # the shared prompt alone
        acc[h.cid] = evaluate(h.learner, x, y)
    return acc, {h.cid: h.domain for h in held}
