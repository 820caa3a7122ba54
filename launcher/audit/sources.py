"""Reading the audited runs: configs, saved per-client prompts, and the data they were trained on.

Nothing is retrained. The federation (who holds which sample) is rebuilt deterministically
from the run's config and seed, so membership ground truth is exact: a client's members are its
train split, its non-members its held-out split (same domain, same label mix). Image features
come from the feature cache (:func:`prompts.features.compute_features`), shared by every run
of a seed.

One thing the run directories do not store is what a client *uploaded* in the last round (the
locally trained domain prompt, before aggregation) - the very thing a server or co-member
observes. :func:`replay_uploads` recomputes it exactly: local training is seeded by (seed, round,
client) and starts from the saved state after the round before, so replaying that one local
step reproduces the upload bit for bit. :func:`upload_check` verifies it against the saved
aggregate (PromptFL's weighted mean, SecFPP's cluster mean) and the audit reports the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from launcher.config import Config, from_dict
from launcher.methods import get as get_method
from launcher.metrics import RoundRow
from launcher.rundir import RunDir

@dataclass
class AuditedRun:
    path: Path
    cfg: Config
    final: dict[int, dict[str, torch.Tensor]]  # client -> learner state after the last round
    before_last: dict[int, dict[str, torch.Tensor]] | None  # ... after the round before (None: 1 round)
    metrics: list[RoundRow]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.cfg.method

    @property
    def epsilon(self) -> float | None:
        return float(self.cfg.dp.epsilon) if get_method(self.cfg.method).dp else None

    @property
    def assignment(self) -> dict[int, int] | None:
        """Final round's cluster labels (logged with ``evaluation.gather``; SecFPP and its twin)."""
        last = self.metrics[-1].assignment if self.metrics else None
        return {int(k): int(v) for k, v in last.items()} if last is not None else None


def find_runs(path: str | Path) -> list[Path]:
    """A run directory itself, or every finished run under a ``compare`` directory's ``runs/``."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return [path]
    runs = sorted(p for p in (path / "runs").glob("*") if (p / "summary.json").is_file())
    if not runs:
        raise FileNotFoundError(f"{path}: neither a run directory (config.yaml) nor a compare directory with "
                                "finished runs under runs/")
    return runs


def _states(rd: RunDir, cfg: Config, round_idx: int) -> dict[int, dict[str, torch.Tensor]]:
    marker = rd.checkpoint_dir / f"round-{round_idx:04d}" / "COMPLETE"
    n_ranks = int(marker.read_text())
    sha = rd.config_sha(cfg.to_dict())
    out: dict[int, dict[str, torch.Tensor]] = {}
    for rank in range(n_ranks):
        out.update({int(c): s for c, s in rd.load_shard(round_idx, rank, sha, n_ranks)["clients"].items()})
    return out


def load_run(path: str | Path) -> AuditedRun:
    """Config, metrics and the last two rounds' per-client prompts of one finished run."""
    rd = RunDir(path)
    cfg = from_dict(rd.read_config())
    last = rd.last_complete_round()
    if last is None or last + 1 != cfg.rounds:
        raise FileNotFoundError(f"{path}: run not finished ({'no' if last is None else last + 1} of "
                                f"{cfg.rounds} rounds checkpointed); finish it with `launcher run --resume`")
    summary = json.loads(rd.summary_path.read_text()) if rd.summary_path.is_file() else {}
    return AuditedRun(rd.path, cfg, _states(rd, cfg, last), _states(rd, cfg, last - 1) if last > 0 else None,
                      rd.read_metrics(), summary)


def data_key(cfg: Config) -> str:
    """Runs with equal data, model and seed share clients, features and shadows."""
    d = cfg.to_dict()
    return json.dumps({"data": d["data"], "model": d["model"], "seed": cfg.seed,
                       "augment": d["train"].get("augment")}, sort_keys=True)


class ClientCache:
    """Clients (data, cached features, a learner to load states into) per data key."""

    def __init__(self) -> None:
        self._clients: dict[str, list[Any]] = {}
        self.backbone: Any = None
        self.classnames: list[str] = []

    def clients(self, cfg: Config) -> list[Any]:
        key = data_key(cfg)
        if key not in self._clients:
            from launcher.run import build_clients

            built, self.backbone, self.classnames = build_clients(cfg, list(range(cfg.n_clients)))
            self._clients[key] = built
        return self._clients[key]


def set_state(learner: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    learner.load_state_dict(state)
    learner.eval()
    return learner


def replay_uploads(run: AuditedRun, clients: list[Any]) -> dict[int, torch.Tensor]:
    """Every client's last-round upload (its locally trained domain prompt), recomputed exactly
    by the method's own local step from the saved state after the round before."""
    from launcher.strategies import LocalOnly

    method = get_method(run.method)
    if not method.uploads or run.before_last is None:
        return {}
    trains_class = method.class_prompt
    step = LocalOnly(run.cfg, None)  # the default local step every uploading method runs
    out = {}
    for c in clients:
        set_state(c.learner, run.before_last[c.cid])
        c.learner.class_ctx.requires_grad_(trains_class)
        step.train_round([c], run.cfg.rounds - 1)
        c.learner.class_ctx.requires_grad_(True)
        out[c.cid] = c.learner.get_domain_prompt()
    return out


def upload_check(run: AuditedRun, uploads: dict[int, torch.Tensor], weights: dict[int, int]) -> float | None:
    """Max |saved final domain prompt - aggregate of the replayed uploads|, where the aggregate
    is known in plaintext (the method's ``aggregate`` in :mod:`launcher.methods`: PromptFL's
    weighted mean; SecFPP/clustered/truedomain's cluster means, or the all-client mean for a
    cluster under ``min_cluster_size``, given the logged assignment; local: the upload itself).
    The formula is the strategies' own (:data:`launcher.strategies.AGGREGATES`), so the audit
    checks the formula the runs use."""
    from launcher.strategies import AGGREGATES

    kind = get_method(run.method).aggregate
    if not uploads or kind is None or (kind == "cluster_mean" and not run.assignment):
        return None
    final = {c: s["domain_ctx"].cpu() for c, s in run.final.items()}
    expect = AGGREGATES[kind](uploads, weights, run.assignment, run.cfg.mpc.min_cluster_size)
    return max(float((expect[i] - final[i]).abs().max()) for i in sorted(uploads))
