"""One directory per run: resolved config, metrics log, checkpoints, summary, plots.

Every write is atomic (temporary file + ``os.replace``) so a crash mid-write leaves the
previous state intact and ``--resume`` never reads a torn file. Only rank 0 writes the
shared files; every rank writes its own checkpoint shard, into a directory of its own
(``checkpoints/rank-R/``, created by that rank with mode 0700): a compute party's shards are
shares of the encrypted centres, and anyone who could read every party's could add them up.
In a one-user simulation the mode protects nothing between parties (they are one OS user);
with parties under separate accounts, or on separate hosts, it does.

A shard is ``MAGIC`` + the SHA-256 of the payload + a ``torch.save`` payload holding a
header (format version, config hash, number of client ranks, round, rank) and the state.
Loading checks the checksum before unpickling anything, unpickles with ``weights_only=True``
(tensors and plain containers only), and refuses a shard written by another config or
another world size: a resumed run either continues the same run exactly or stops with a
:class:`CheckpointError` that says what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from launcher.metrics import RoundRow
from prompts.atomic import atomic_write_bytes

FORMAT_VERSION = 1
MAGIC = b"SECFPP-SHARD\n"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used; the message says which file, why, and what to do."""


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the resolved config: a shard is only valid for the run that wrote it."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class RunDir:
    """Paths and writers for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def round_dir(self, round_idx: int) -> Path:
        """Where rank 0 marks a round complete (``COMPLETE``)."""
        return self.checkpoint_dir / f"round-{round_idx:04d}"

    def party_dir(self, rank: int) -> Path:
        return self.checkpoint_dir / f"rank-{rank}"

    def shard_path(self, round_idx: int, rank: int) -> Path:
        path = self.party_dir(rank) / f"round-{round_idx:04d}.pt"
        legacy = self.round_dir(round_idx) / f"rank-{rank}.pt"  # run directories written before per-party ones
        return legacy if not path.exists() and legacy.exists() else path

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_bytes(self.config_path, yaml.safe_dump(config, sort_keys=False).encode())

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text())

    def config_sha(self, config: dict[str, Any]) -> str:
        """The hash shards are keyed by: of the config this run *recorded* (``config.yaml``), or of
        ``config`` before one is recorded (the same dict: a fresh run records ``config`` itself).

        Hashing the record, not the config re-read through today's schema, keeps a run's
        checkpoints valid when a field is later added to the schema with a default."""
        return config_hash(self.read_config() if self.config_path.is_file() else config)

    def metrics_file(self, rank: int = 0) -> Path:
        """Rank 0's log is ``metrics.jsonl``; without ``evaluation.gather`` every other client
        rank keeps its own clients' log, ``metrics.rank-R.jsonl``."""
        return self.metrics_path if rank == 0 else self.path / f"metrics.rank-{rank}.jsonl"

    def read_metrics(self, rank: int = 0) -> list[RoundRow]:
        path = self.metrics_file(rank)
        if not path.exists():
            return []
        return [RoundRow.from_json(json.loads(line)) for line in path.read_text().splitlines() if line]

    def write_metrics(self, rows: Iterable[RoundRow], rank: int = 0) -> None:
        """Rewrite the whole log: keeps it consistent with the checkpoint it was written with."""
        text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in rows)
        atomic_write_bytes(self.metrics_file(rank), text.encode())

    def compute_costs_path(self, party: int) -> Path:
        """Servers topology: compute party ``party``'s own costs per round and phase."""
        return self.path / f"mpc.compute-{party}.jsonl"

    def read_compute_costs(self, party: int, through_round: int | None = None) -> list[dict[str, Any]]:
        """Compute party ``party``'s cost records (1-based ``round`` <= ``through_round`` if given)."""
        path = self.compute_costs_path(party)
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [c for c in rows if through_round is None or c["round"] <= through_round]

    def write_compute_costs(self, party: int, costs: Iterable[dict[str, Any]]) -> None:
        """Rewrite the whole cost log, atomically (as :meth:`write_metrics`)."""
        text = "".join(json.dumps(c, sort_keys=True) + "\n" for c in costs)
        atomic_write_bytes(self.compute_costs_path(party), text.encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.summary_path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())

    def save_shard(self, round_idx: int, rank: int, state: dict[str, Any], config_sha256: str, n_ranks: int) -> None:
        """Checksummed, headed, atomic; ``n_ranks`` is the number of client ranks of the job."""
        header = {"format": FORMAT_VERSION, "config_sha256": config_sha256, "n_ranks": n_ranks,
                  "round": round_idx, "rank": rank}
        buf = io.BytesIO()
        torch.save({"header": header, "state": state}, buf)
        payload = buf.getvalue()
        mine = self.party_dir(rank)
        if not mine.is_dir():
            mine.mkdir(parents=True, exist_ok=True)
            os.chmod(mine, 0o700)  # the umask may have taken bits from mkdir's mode
        atomic_write_bytes(self.shard_path(round_idx, rank), MAGIC + hashlib.sha256(payload).digest() + payload)

    def mark_complete(self, round_idx: int, n_ranks: int, lost: list[int] | None = None) -> None:
        """Written once every rank saved its shard (by rank 0; in the servers topology by compute
        party 0): the round is resumable. ``lost``: client ranks that died (servers topology,
        ``mpc.tolerate_rank_loss``); they have no shard of this round, and resume from their last."""
        text = f"{n_ranks}\n" + (f"lost {' '.join(map(str, lost))}\n" if lost else "")
        atomic_write_bytes(self.round_dir(round_idx) / "COMPLETE", text.encode())

    def lost_ranks(self, round_idx: int) -> list[int]:
        """The client ranks the ``COMPLETE`` marker of ``round_idx`` lists as lost."""
        marker = self.round_dir(round_idx) / "COMPLETE"
        lines = marker.read_text().splitlines() if marker.is_file() else []
        return [int(v) for line in lines[1:] if line.startswith("lost ") for v in line.split()[1:]]

    def resume_round_of(self, rank: int, round_idx: int) -> int:
        """The round whose shard client rank ``rank`` resumes from when the run resumes after
        ``round_idx``: that round, or, for a rank lost on the way, its last shard before it."""
        if rank not in self.lost_ranks(round_idx):
            return round_idx
        for r in range(round_idx, -1, -1):
            if self.shard_path(r, rank).is_file():
                return r
        raise CheckpointError(f"client rank {rank} was lost before it checkpointed any round; start a new run "
                              "(without --resume)")

    def last_complete_round(self) -> int | None:
        if not self.checkpoint_dir.exists():
            return None
        done = sorted(
            int(p.parent.name.split("-")[1])
            for p in self.checkpoint_dir.glob("round-*/COMPLETE")
        )
        return done[-1] if done else None

    def load_shard(self, round_idx: int, rank: int, config_sha256: str, n_ranks: int) -> dict[str, Any]:
        """This rank's state after round ``round_idx``, or :class:`CheckpointError`."""
        path = self.shard_path(round_idx, rank)
        marker = self.round_dir(round_idx) / "COMPLETE"
        fix = (f"delete {marker} to resume from the round before it, or start a new run "
               "(without --resume)")
        marked = marker.read_text().splitlines()[0].strip() if marker.is_file() else None
        if marked is not None and marked != str(n_ranks):
            raise CheckpointError(
                f"{marker.parent} was written by a job with {marked} client ranks, this one has {n_ranks}; "
                f"resume with the same number of processes as the run that wrote it"
            )
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"checkpoint {path} cannot be read ({err.strerror}); {fix}") from None
        head, digest, payload = data[: len(MAGIC)], data[len(MAGIC): len(MAGIC) + 32], data[len(MAGIC) + 32:]
        if head != MAGIC:
            raise CheckpointError(f"checkpoint {path} is not a SecFPP shard (bad magic); {fix}")
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (checksum mismatch); {fix}")
        try:
            shard = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - anything the safe unpickler refuses
            raise CheckpointError(f"checkpoint {path} cannot be loaded safely ({err}); {fix}") from None
        header = shard.get("header", {}) if isinstance(shard, dict) else {}
        if header.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format {header.get('format')!r}; this code reads format {FORMAT_VERSION}"
            )
        if header.get("config_sha256") != config_sha256:
            raise CheckpointError(
                f"checkpoint {path} was written by a run with a different config (its config.yaml was edited, "
                f"or the checkpoints were copied from another run); refusing to mix them"
            )
        if header.get("n_ranks") != n_ranks or header.get("rank") != rank or header.get("round") != round_idx:
            raise CheckpointError(
                f"checkpoint {path} belongs to rank {header.get('rank')} of {header.get('n_ranks')} client ranks, "
                f"round {header.get('round')}; this is rank {rank} of {n_ranks}, round {round_idx}: resume with "
                f"the same number of processes as the run that wrote it"
            )
        return shard["state"]
