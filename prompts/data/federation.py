"""Federations: per-client train/test data built from any labelled, domain-tagged dataset.

Why: the launcher, the baselines and the tests all need the same thing from a dataset, namely a list of
clients, each with one domain and its own label mix, and the class names the prompts are built from.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch

from prompts.data import digits, fonts
from prompts.data.partition import dirichlet_counts, dirichlet_proportions, partition

Images = Union[torch.Tensor, list, "RenderedDigits"]  # uint8 (N, 3, H, W), image paths, or lazily drawn


@dataclass
class ClientData:
    client_id: int
    domain: int
    domain_name: str
    train_images: Images
    train_labels: torch.Tensor
    test_images: Images
    test_labels: torch.Tensor
    # optional (the fonts benchmark has them): a validation split with the client's label mix, for
    # anything chosen on data, and a class-balanced test split of the client's domain (``acc_domain``)
    val_images: Images | None = None
    val_labels: torch.Tensor | None = None
    domain_test_images: Images | None = None
    domain_test_labels: torch.Tensor | None = None
    domain_val_images: Images | None = None  # class-balanced validation split of the domain
    domain_val_labels: torch.Tensor | None = None


@dataclass
class Federation:
    classnames: list[str]
    domain_names: list[str]
    clients: list[ClientData]
    meta: dict = field(default_factory=dict)

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    def client(self, client_id: int) -> ClientData:
        """The client with this id (a federation built with ``only=`` holds just those clients)."""
        for c in self.clients:
            if c.client_id == client_id:
                return c
        raise KeyError(f"client {client_id} is not in this federation (built for {[c.client_id for c in self.clients]})")

    @property
    def true_domains(self) -> list[int]:
        """Ground-truth domain per client (for ARI/purity of the clustering, never given to the protocol)."""
        return [c.domain for c in self.clients]

    def few_shot(self, shots: int, seed: int = 0) -> "Federation":
        """At most ``shots`` training images per class per client (CoOp's few-shot protocol); test sets unchanged.

        The kept images are a seeded random choice per (client, class), so the same seed keeps the same shots.
        """
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        clients = []
        for c in self.clients:
            rng = np.random.default_rng([seed, c.client_id])
            y = c.train_labels.numpy()
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == k))[:shots] for k in np.unique(y)]))
            clients.append(dataclasses.replace(c, train_images=_take(c.train_images, keep),
                                               train_labels=c.train_labels[torch.from_numpy(keep)]))
        return dataclasses.replace(self, clients=clients, meta={**self.meta, "shots": shots})


@dataclass
class DomainDataset:
    """All samples of a multi-domain dataset: ``images[i]`` has class ``labels[i]`` and domain ``domains[i]``."""

    images: Images
    labels: np.ndarray
    domains: np.ndarray
    classnames: list[str]
    domain_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class RenderedDigits:
    """Digit scans in several styles, drawn only when taken: a rank that holds a few clients
    renders only their images (``digits.render`` is a pure function of scan and style)."""

    def __init__(self, scans: list[np.ndarray], style_ids: list[int]) -> None:
        self.scans, self.style_ids = scans, style_ids
        self.offsets = np.cumsum([0] + [len(s) for s in scans])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        out = torch.empty(len(idx), 3, digits.IMAGE_SIZE, digits.IMAGE_SIZE, dtype=torch.uint8)
        block = np.searchsorted(self.offsets, idx, side="right") - 1
        for b in np.unique(block):
            sel = np.flatnonzero(block == b)
            out[torch.from_numpy(sel)] = digits.render(self.scans[b][idx[sel] - self.offsets[b]], self.style_ids[b])
        return out


def _take(images: Images, idx: np.ndarray) -> Images:
    if isinstance(images, RenderedDigits):
        return images.take(idx)
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(idx)]
    return [images[int(i)] for i in idx]


def build_federation(ds, clients_per_domain: int | None = None, alpha: float | None = None, seed: int = 0,
                     min_samples: int | None = None, test_fraction: float | None = None,
                     only: Sequence[int] | None = None) -> Federation:
    """Partition ``ds`` (domain skew x Dirichlet label skew) into clients.

    ``ds`` is a ``DomainDataset``, or a data config object (attributes ``name``, ``root``, ``n_domains``,
    ``clients_per_domain``, ``alpha``, ``min_samples``, ``test_fraction``), in which case the dataset is
    loaded by name (see ``from_config``) and the other arguments except ``seed`` and ``only`` are taken
    from it. ``only``: build just these clients. The partition is computed from every sample's label
    and domain (a simulation's public bookkeeping), but only these clients' images are read or drawn.
    The partition parameters have no defaults here: the launcher's config schema is their one source.
    """
    if not isinstance(ds, DomainDataset):
        return from_config(ds, seed=seed, only=only)
    if None in (clients_per_domain, alpha, min_samples, test_fraction):
        raise TypeError("build_federation needs clients_per_domain, alpha, min_samples and test_fraction")
    splits = partition(ds.domains, ds.labels, clients_per_domain, alpha, seed, min_samples, test_fraction)
    if only is not None:
        wanted = set(int(c) for c in only)
        splits = [s for s in splits if s.client_id in wanted]
    lab = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
    clients = [ClientData(client_id=s.client_id, domain=s.domain, domain_name=ds.domain_names[s.domain],
                          train_images=_take(ds.images, s.train_idx), train_labels=lab[torch.from_numpy(s.train_idx)],
                          test_images=_take(ds.images, s.test_idx), test_labels=lab[torch.from_numpy(s.test_idx)])
               for s in splits]
    return Federation(classnames=list(ds.classnames), domain_names=list(ds.domain_names), clients=clients,
                      meta=dict(clients_per_domain=clients_per_domain, alpha=alpha, seed=seed,
                                min_samples=min_samples, test_fraction=test_fraction))


def digits_dataset(n_domains: int = 3, domains: Sequence[str | int] | None = None,
                   pretrain_fraction: float = 0.4) -> DomainDataset:
    """The offline digits in ``n_domains`` styles, on the scans *not* reserved for tiny-CLIP pretraining.

    Every held-out scan appears once per domain (more data per client); the images are drawn
    lazily (:class:`RenderedDigits`), only for the clients a rank builds.
    """
    chosen = list(domains) if domains is not None else list(range(n_domains))
    if not chosen or len(chosen) > len(digits.DOMAIN_NAMES):
        raise ValueError(f"choose 1..{len(digits.DOMAIN_NAMES)} domains from {digits.DOMAIN_NAMES}")
    style_ids = [digits.DOMAIN_NAMES.index(d) if isinstance(d, str) else int(d) for d in chosen]
    _, fed = digits.split_scans(pretrain_fraction, seed=0)
    _, all_labels = digits.load_scans()
    scans = [fed for _ in style_ids]
    images = RenderedDigits(scans, style_ids)
    labels = np.concatenate([all_labels[s] for s in scans])
    doms = np.concatenate([np.full(len(s), j) for j, s in enumerate(scans)])
    return DomainDataset(images=images, labels=labels, domains=doms, classnames=list(digits.CLASSNAMES),
                         domain_names=[digits.DOMAIN_NAMES[s] for s in style_ids])


def digits_federation(n_domains: int, clients_per_domain: int, alpha: float, seed: int, min_samples: int,
                      test_fraction: float, domains: Sequence[str | int] | None = None,
                      only: Sequence[int] | None = None) -> Federation:
    """The offline default federation: digits x styles, ``n_domains * clients_per_domain`` clients."""
    ds = digits_dataset(n_domains, domains)
    fed = build_federation(ds, clients_per_domain, alpha, seed, min_samples, test_fraction, only=only)
    fed.meta.update(dataset="digits")
    return fed


_ID_BLOCK = 1_000_000  # sample ids per split (train, val, test, domain test, domain val) of one domain and class
_ID_SEED = 10_000  # sample ids per seed inside a block


def fonts_federation(domains: Sequence[str] | None, n_domains: int, clients_per_domain: int, alpha: float, seed: int,
                     shots: int, val_per_class: int, test_per_class: int, domain_test_per_class: int,
                     min_samples: int, domain_val_per_class: int = 0, only: Sequence[int] | None = None,
                     max_tries: int = 200, holdout_per_domain: int = 0) -> Federation:
    """The font benchmark: ``clients_per_domain`` few-shot clients per typeface domain.

    Default domains are the first ``n_domains`` of ``fonts.UNSEEN_DOMAINS`` then ``fonts.PRETRAIN_DOMAINS``.
    ``shots`` is the per-class budget *before* label skew: the clients of a domain hold ``shots x
    clients_per_domain`` training images of each class together, split among them by Dirichlet(alpha)
    shares (so a client has ``shots`` per class on average, skewed). Its validation and test splits
    follow the same shares (``val_per_class`` / ``test_per_class`` on average), and its domain test split
    has ``domain_test_per_class`` images of every class (its domain validation split
    ``domain_val_per_class``). All splits are disjoint sample ids, none of them a
    pretraining id, and different seeds draw different images. Shares are redrawn (up to ``max_tries``)
    until every client has ``min_samples`` training images. Only the clients in ``only`` are rendered.

    ``holdout_per_domain`` more clients per domain are *held out* of the federation (ids from
    ``n_domains * clients_per_domain`` on, domain-major; :func:`holdout_ids`): drawn as if the domain
    had ``clients_per_domain + holdout_per_domain`` clients, from their own random stream and sample
    ids (blocks of their own), so the training clients' data are the same with or without them and
    no held-out image is any training client's. They are built only when ``only`` names them.
    """
    chosen = list(domains) if domains else (fonts.UNSEEN_DOMAINS + fonts.PRETRAIN_DOMAINS)[:n_domains]
    unknown = [d for d in chosen if d not in fonts.DOMAIN_NAMES]
    if unknown or not chosen:
        raise ValueError(f"font domains {unknown or chosen} unknown; choose from {fonts.DOMAIN_NAMES}")
    sizes = (val_per_class, test_per_class, domain_test_per_class, domain_val_per_class)
    if shots < 1 or min(sizes) < 0 or clients_per_domain < 1:
        raise ValueError("shots and clients_per_domain must be >= 1, the per-class test/val sizes >= 0")
    if not 0 <= seed < _ID_BLOCK // _ID_SEED or max(shots, *sizes) * (clients_per_domain + holdout_per_domain) > _ID_SEED:
        raise ValueError("seed must be in [0, 100) and a split's per-class size x clients_per_domain <= 10000")
    k, n_cls, h = clients_per_domain, len(fonts.CLASSNAMES), holdout_per_domain
    wanted = None if only is None else set(int(c) for c in only)
    clients = []
    for di, dom in enumerate(chosen):
        # the federation's clients, then (own stream: the federation's draws stay as they are) the held-out ones
        for first, n_kept, stream in ((0, k, ()), (k, h, (1,))):
            if n_kept == 0:
                continue
            ids_here = ([di * k + j for j in range(k)] if first == 0
                        else holdout_ids(len(chosen), k, h)[di * h:(di + 1) * h])
            if wanted is not None and not set(ids_here) & wanted:
                continue
            clients += _fonts_domain(dom, di, ids_here, first, first + n_kept, wanted, seed, stream, alpha, shots,
                                     (val_per_class, test_per_class, domain_test_per_class, domain_val_per_class),
                                     min_samples, max_tries, block0=0 if first == 0 else len(_SPLITS))
    return Federation(classnames=list(fonts.CLASSNAMES), domain_names=chosen, clients=clients,
                      meta=dict(dataset="fonts", clients_per_domain=k, alpha=alpha, seed=seed, shots=shots,
                                val_per_class=val_per_class, test_per_class=test_per_class,
                                domain_test_per_class=domain_test_per_class,
                                domain_val_per_class=domain_val_per_class, min_samples=min_samples,
                                holdout_per_domain=h))


_SPLITS = ("train", "val", "test", "domain_test", "domain_val")  # in id-block order


def holdout_ids(n_domains: int, clients_per_domain: int, holdout_per_domain: int) -> list[int]:
    """Ids of the held-out clients, domain-major, after the federation's ``n_domains * clients_per_domain``."""
    return [n_domains * clients_per_domain + i for i in range(n_domains * holdout_per_domain)]


def _fonts_domain(dom: str, di: int, cids: list[int], first: int, stop: int, wanted: set[int] | None, seed: int,
                  stream: tuple[int, ...], alpha: float, shots: int, sizes: tuple[int, int, int, int],
                  min_samples: int, max_tries: int, block0: int) -> list[ClientData]:
    """Clients ``first..stop-1`` of one font domain's Dirichlet draw over ``stop`` clients, as ``cids``."""
    val_per_class, test_per_class, domain_test_per_class, domain_val_per_class = sizes
    k, n_cls = stop, len(fonts.CLASSNAMES)
    rng = np.random.default_rng([seed, fonts.DOMAIN_NAMES.index(dom), *stream])
    for _ in range(max_tries):
        p = dirichlet_proportions(k, n_cls, alpha, rng)
        train = dirichlet_counts([shots * k] * n_cls, p)
        if train[first:].sum(1).min() >= min_samples:
            break
    else:
        raise ValueError(f"could not give every client of domain {dom!r} {min_samples} training images in "
                         f"{max_tries} draws; raise shots or alpha, or lower min_samples")
    splits = dict(train=train, val=dirichlet_counts([val_per_class * k] * n_cls, p),
                  test=dirichlet_counts([test_per_class * k] * n_cls, p),
                  domain_test=np.full((k, n_cls), domain_test_per_class),
                  domain_val=np.full((k, n_cls), domain_val_per_class))  # last: earlier splits' ids stay
    clients = []
    for j, cid in zip(range(first, stop), cids):
        if wanted is not None and cid not in wanted:
            continue
        drawn = {}
        for b, (split, counts) in enumerate(splits.items(), start=block0):
            start = counts[:j].sum(0)  # ids before this client's, per class
            labels = np.repeat(np.arange(n_cls), counts[j])
            ids = b * _ID_BLOCK + seed * _ID_SEED + np.concatenate(
                [start[c] + np.arange(counts[j, c]) for c in range(n_cls)]).astype(np.int64)
            drawn[split] = (fonts.render(dom, labels, ids), torch.from_numpy(labels))
        clients.append(ClientData(client_id=cid, domain=di, domain_name=dom,
                                  train_images=drawn["train"][0], train_labels=drawn["train"][1],
                                  test_images=drawn["test"][0], test_labels=drawn["test"][1],
                                  val_images=drawn["val"][0], val_labels=drawn["val"][1],
                                  domain_test_images=drawn["domain_test"][0],
                                  domain_test_labels=drawn["domain_test"][1],
                                  domain_val_images=drawn["domain_val"][0],
                                  domain_val_labels=drawn["domain_val"][1]))
    return clients


DATASETS = ("digits", "fonts", "office_caltech10", "domainnet", "imagefolder", "cifar10", "cifar100")


def from_config(cfg, seed: int = 0, only: Sequence[int] | None = None) -> Federation:
    """Federation from a data config (the launcher's ``DataConfig`` or any object with its attributes:
    no defaults here, so a config and a library call cannot disagree); ``name`` in ``DATASETS``."""
    from prompts.data import folders

    name = cfg.name
    kw = dict(clients_per_domain=cfg.clients_per_domain, alpha=cfg.alpha, seed=seed, min_samples=cfg.min_samples,
              test_fraction=cfg.test_fraction)
    shots = cfg.shots
    if name == "digits":
        fed = digits_federation(n_domains=cfg.n_domains, domains=cfg.domains, only=only, **kw)
        return fed.few_shot(shots, seed) if shots else fed
    if name == "fonts":  # shots: the per-class budget before label skew, not a cap (see fonts_federation)
        return fonts_federation(domains=cfg.domains, n_domains=cfg.n_domains, shots=shots,
                                val_per_class=cfg.val_per_class, test_per_class=cfg.test_per_class,
                                domain_test_per_class=cfg.domain_test_per_class,
                                domain_val_per_class=cfg.domain_val_per_class, only=only,
                                holdout_per_domain=getattr(cfg, "holdout_clients_per_domain", 0),
                                **{k: v for k, v in kw.items() if k != "test_fraction"})
    root = cfg.root
    if not root:
        raise ValueError(f"dataset {name!r} needs data.root (a local directory); nothing is downloaded")
    loaders = {"office_caltech10": folders.office_caltech10, "domainnet": folders.domainnet,
               "imagefolder": folders.image_folder, "cifar10": lambda r: folders.cifar(r, 10),
               "cifar100": lambda r: folders.cifar(r, 100)}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    fed = build_federation(loaders[name](root), only=only, **kw)
    fed.meta.update(dataset=name, root=str(root))
    return fed.few_shot(shots, seed) if shots else fed
