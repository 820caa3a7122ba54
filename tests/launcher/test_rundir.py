"""Checkpoint shards: a resumed run uses exactly the state its own run wrote, or stops with a clear message."""

from __future__ import annotations

import pytest
import torch

from launcher.rundir import CheckpointError, RunDir, config_hash

CFG = config_hash({"seed": 0, "rounds": 3})


def _saved(tmp_path) -> RunDir:
    rd = RunDir(tmp_path / "run")
    state = {"clients": {3: {"domain_ctx": torch.arange(6.0).view(2, 3)}}, "strategy": {"k": 2, "warm": {(2, 4): 7}}}
    rd.save_shard(1, 0, state, CFG, n_ranks=2)
    rd.mark_complete(1, 2)
    return rd


def test_a_shard_round_trips_through_the_safe_loader(tmp_path):
    rd = _saved(tmp_path)
    assert rd.last_complete_round() == 1
    assert rd.shard_path(1, 0).parent == rd.party_dir(0)  # each party's shards in its own 0700 directory
    assert rd.party_dir(0).stat().st_mode & 0o777 == 0o700
    state = rd.load_shard(1, 0, CFG, n_ranks=2)
    assert torch.equal(state["clients"][3]["domain_ctx"], torch.arange(6.0).view(2, 3))
    assert state["strategy"] == {"k": 2, "warm": {(2, 4): 7}}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], r"truncated or corrupt \(checksum mismatch\)"),
        (lambda b: b[:-40] + bytes([b[-40] ^ 1]) + b[-39:], r"truncated or corrupt \(checksum mismatch\)"),
        (lambda b: b"PK" + b[2:], r"not a SecFPP shard \(bad magic\)"),
        (lambda b: b"", r"not a SecFPP shard"),
    ],
)
def test_a_damaged_shard_is_refused_and_the_way_out_named(tmp_path, damage, message):
    rd = _saved(tmp_path)
    path = rd.shard_path(1, 0)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        rd.load_shard(1, 0, CFG, n_ranks=2)
    assert f"delete {rd.round_dir(1) / 'COMPLETE'}" in str(err.value)


def test_a_missing_shard_is_refused(tmp_path):
    rd = _saved(tmp_path)
    rd.shard_path(1, 0).unlink()
    with pytest.raises(CheckpointError, match="cannot be read"):
        rd.load_shard(1, 0, CFG, n_ranks=2)


def test_a_shard_of_another_config_or_world_size_is_refused(tmp_path):
    rd = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="different config"):
        rd.load_shard(1, 0, config_hash({"seed": 1, "rounds": 3}), n_ranks=2)
    with pytest.raises(CheckpointError, match="written by a job with 2 client ranks, this one has 3"):
        rd.load_shard(1, 0, CFG, n_ranks=3)
    (rd.round_dir(1) / "COMPLETE").unlink()  # the shard's own header says so too
    with pytest.raises(CheckpointError, match="rank 0 of 2 client ranks, round 1; this is rank 0 of 3"):
        rd.load_shard(1, 0, CFG, n_ranks=3)


def test_a_pickled_object_is_never_executed(tmp_path):
    """weights_only=True: a shard whose payload pickles an arbitrary class is refused, not run."""
    import hashlib
    import io

    from launcher import rundir

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"header": {}, "state": Evil()}, buf)
    rd = _saved(tmp_path)
    payload = buf.getvalue()
    rd.shard_path(1, 0).write_bytes(rundir.MAGIC + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        rd.load_shard(1, 0, CFG, n_ranks=2)


def test_shards_stay_valid_when_the_schema_gains_a_field_but_not_when_the_record_is_edited(tmp_path):
    from launcher.config import from_dict, load_config

    rd = RunDir(tmp_path / "run")
    old = load_config(None, ["method=local"]).to_dict()
    del old["data"]["n_views"]  # as if written before data.n_views existed
    rd.write_config(old)
    rd.save_shard(0, 0, {"clients": {}}, rd.config_sha(old), n_ranks=1)
    now = from_dict(rd.read_config()).to_dict()  # today's schema fills the new field in
    assert "n_views" in now["data"]
    assert rd.load_shard(0, 0, rd.config_sha(now), n_ranks=1) == {"clients": {}}
    rd.write_config({**old, "rounds": old["rounds"] + 1})  # the record edited by hand
    with pytest.raises(CheckpointError, match="different config"):
        rd.load_shard(0, 0, rd.config_sha(now), n_ranks=1)


def test_a_client_rank_lost_mid_run_resumes_from_its_own_last_shard(tmp_path):
    rd = RunDir(tmp_path / "run")
    state = {"clients": {}, "strategy": {"k": 2}}
    for r in range(3):  # rank 1 died in round 2 (0-based 1): it has round 0's shard only
        for rank in ((0, 1) if r == 0 else (0,)):
            rd.save_shard(r, rank, {**state, "round": r}, CFG, n_ranks=2)
        rd.mark_complete(r, 2, lost=[] if r == 0 else [1])
    assert rd.last_complete_round() == 2 and rd.lost_ranks(2) == [1] and rd.lost_ranks(0) == []
    assert rd.resume_round_of(0, 2) == 2 and rd.resume_round_of(1, 2) == 0
    assert rd.load_shard(rd.resume_round_of(1, 2), 1, CFG, n_ranks=2)["round"] == 0  # the marker's first line is read
    empty = RunDir(tmp_path / "empty")  # a rank lost before its first shard has nothing to resume from
    empty.mark_complete(0, 2, lost=[1])
    with pytest.raises(CheckpointError, match="lost before it checkpointed any round"):
        empty.resume_round_of(1, 0)
