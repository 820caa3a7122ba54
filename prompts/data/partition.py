"""Federated partitioner shared by every dataset: domain skew x Dirichlet label skew.

Why: SecFPP is about clients whose data differ both in *domain* (what the clustering must discover) and
in *label mix* (what the class prompts personalise). Each client holds samples of exactly one domain;
``clients_per_domain`` clients share a domain, and inside a domain each class is split among its clients
with proportions drawn from Dirichlet(alpha) (small alpha = strong skew, ``inf`` = even split). Every sample
goes to at most one client. Each client's samples are then split train/test per class, so both splits
follow the same client distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ClientSplit:
    client_id: int
    domain: int
    train_idx: np.ndarray
    test_idx: np.ndarray


def _dirichlet_split(idx_by_class: list[np.ndarray], k: int, alpha: float, rng: np.random.Generator) -> list[list]:
    parts: list[list] = [[] for _ in range(k)]
    for idx in idx_by_class:
        if len(idx) == 0:
            continue
        idx = rng.permutation(idx)
        p = np.full(k, 1.0 / k) if math.isinf(alpha) else rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].append(chunk)
    return parts


def partition(domains: np.ndarray, labels: np.ndarray, clients_per_domain: int = 2, alpha: float = 0.5,
              seed: int = 0, min_samples: int = 10, test_fraction: float = 0.25, max_tries: int = 200,
              domain_ids: list[int] | None = None) -> list[ClientSplit]:
    """Split sample indices into ``len(domain_ids) * clients_per_domain`` clients.

    Client ids run domain-major: client ``d * clients_per_domain + j`` is the j-th client of domain ``d``.
    Dirichlet draws are repeated (up to ``max_tries``) until every client has ``min_samples`` samples.
    """
    domains, labels = np.asarray(domains), np.asarray(labels)
    if domains.shape != labels.shape or domains.ndim != 1:
        raise ValueError(f"domains and labels must be 1-D arrays of equal length, got {domains.shape}, {labels.shape}")
    if not (alpha > 0):
        raise ValueError(f"alpha must be > 0 (use float('inf') for an even split), got {alpha}")
    if clients_per_domain < 1:
        raise ValueError(f"clients_per_domain must be >= 1, got {clients_per_domain}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    domain_ids = sorted(np.unique(domains).tolist()) if domain_ids is None else list(domain_ids)
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    clients: list[ClientSplit] = []
    for d in domain_ids:
        in_d = np.flatnonzero(domains == d)
        need = clients_per_domain * min_samples
        if len(in_d) < need:
            raise ValueError(f"domain {d} has {len(in_d)} samples, fewer than clients_per_domain x min_samples "
                             f"= {clients_per_domain} x {min_samples}; lower one of them")
        by_class = [in_d[labels[in_d] == c] for c in classes]
        for _ in range(max_tries):
            parts = _dirichlet_split(by_class, clients_per_domain, alpha, rng)
            if min(sum(len(c) for c in p) for p in parts) >= min_samples:
                break
        else:
            raise ValueError(f"could not give every client of domain {d} at least {min_samples} samples in "
                             f"{max_tries} Dirichlet draws with alpha={alpha}; raise alpha or lower "
                             f"min_samples / clients_per_domain")
        for j, chunks in enumerate(parts):
            train, test = [], []
            for chunk in chunks:  # one chunk per class: stratified train/test split
                n_test = int(math.floor(len(chunk) * test_fraction + 0.5))
                if test_fraction > 0 and n_test == len(chunk) and len(chunk) > 1:
                    n_test -= 1
                test.append(chunk[:n_test])
                train.append(chunk[n_test:])
            clients.append(ClientSplit(client_id=len(clients), domain=int(d),
                                       train_idx=np.sort(np.concatenate(train)).astype(np.int64),
                                       test_idx=np.sort(np.concatenate(test)).astype(np.int64)))
    return clients


def label_distribution(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Normalised class histogram (zeros for an empty set)."""
    h = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    return h / h.sum() if h.sum() else h


def dirichlet_counts(totals: np.ndarray | list[int], proportions: np.ndarray) -> np.ndarray:
    """Split ``totals[c]`` items of each class ``c`` among clients by ``proportions[:, c]``: (clients, classes).

    Why: a generative dataset (the fonts) has no fixed pool to partition, only per-class budgets; the
    same rounding as :func:`partition` (cuts at rounded cumulative shares) keeps the counts exact, so
    the clients of a domain hold ``totals[c]`` items of class ``c`` together.
    """
    p = np.asarray(proportions, dtype=float)
    out = np.zeros(p.shape, dtype=np.int64)
    for c, n in enumerate(np.asarray(totals, dtype=np.int64)):
        cuts = (np.cumsum(p[:, c])[:-1] * n).round().astype(np.int64)
        out[:, c] = np.diff(np.concatenate([[0], cuts, [n]]))
    return out


def dirichlet_proportions(n_clients: int, n_classes: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Each class's share per client, ``(clients, classes)``, drawn Dirichlet(alpha) per class as in
    :func:`partition` (``inf``: an even split)."""
    if math.isinf(alpha):
        return np.full((n_clients, n_classes), 1.0 / n_clients)
    return np.stack([rng.dirichlet(np.full(n_clients, alpha)) for _ in range(n_classes)], axis=1)
