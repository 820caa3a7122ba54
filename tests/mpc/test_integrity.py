"""Integrity: no client can move another client's result or break the round by what it sends.

Each test starts real parties (``mpirun`` for the server-aided topology, CrypTen's spawned
parties for the peer one) in which one client deviates in its *input*, skipping its own range
check, and asserts that every honest client still gets exactly the plaintext reference on the
honest rows (servers), or that every party stops, naming the deviating party, before anything
is revealed (peer). The attacks are written against the message format (:mod:`tests.mpc._servers_jobs`),
so the same tests run on code without the fixes, where they fail (see the issue's closing note).

* item 2, ``count``: a member count of -5 where a count column would be;
* item 3, ``range``: one prompt entry of ring word 2^31 (both topologies);
* item 5, ``straddle``: shares on time at one compute party, late at the others;
* item 6, ``negative-id``: a negative row id that Python's indexing maps onto the sender's own
  client; every other malformed field is refused in process (:class:`mpc.servers.Inbox`,
  :func:`mpc.wire.decode`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mpc.layout import SecPCConfig
from mpc.runtime import PartyFailure, PartySpec, run_parties
from mpc.servers import Inbox, ServerLayout
from tests.mpc import _integrity_jobs
from tests.mpc.test_servers import TOL, _job, _reference

HONEST = [0, 1]  # client ranks 0 and 1 (clients i % 3 != 2); rank 2 (clients 2, 5, 8) deviates


def _servers(out) -> list[dict]:
    return [json.loads((out / f"server-{s}.json").read_text()) for s in range(3)]


def _check_honest(out, rows: list[int]) -> None:
    """Every honest client's output is the reference computed on ``rows`` (the rows in the round):
    same k, its aggregate within fixed-point error, the same partition."""
    ref = _reference(rows)
    pos = {i: j for j, i in enumerate(rows)}
    got = {}
    for r in HONEST:
        c = json.loads((out / f"client-{r}.json").read_text())
        assert c["k"] == ref.k
        got.update({int(i): (torch.tensor(v), c["labels"][i]) for i, v in c["rows"].items()})
    assert sorted(got) == [i for i in rows if i % 3 != 2]
    for i, (row, _) in got.items():
        assert float((row.double() - ref.rows[pos[i]]).abs().max()) < TOL
    ref_lab = {i: int(ref.labels[pos[i]]) for i in got}
    assert all((got[a][1] == got[b][1]) == (ref_lab[a] == ref_lab[b]) for a in got for b in got)


def _attacked(tmp_path, mode: str, left_out: list[int]):
    out = tmp_path / mode
    job = _job(mode, out, 3)
    assert job.returncode == 0, job.stderr[-3000:]
    rows = [i for i in range(9) if i not in left_out]
    _check_honest(out, rows)
    attacker = json.loads((out / "client-2.json").read_text())
    assert attacker["included"] == [i for i in (2, 5, 8) if i in rows]
    servers = _servers(out)
    assert all(s["included"] == rows for s in servers)
    return servers


@pytest.mark.timeout(300)
def test_integrity_a_client_cannot_set_its_member_count(tmp_path):
    servers = _attacked(tmp_path, "count", [2, 5, 8])
    assert all("2" in s["refused"] for s in servers), servers  # its format has no count: too long


@pytest.mark.timeout(300)
def test_integrity_an_out_of_range_entry_is_caught_on_the_shares_in_servers(tmp_path):
    servers = _attacked(tmp_path, "range", [2])  # only the row with the bad entry is left out
    assert all(s["invalid"] == [2] and s["refused"] == {} for s in servers)


@pytest.mark.timeout(300)
def test_integrity_an_out_of_range_entry_is_caught_on_the_shares_in_peer():
    g = torch.Generator().manual_seed(0)
    X = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    P = torch.randn(3, 16, generator=g) * 0.1
    with pytest.raises(PartyFailure, match=r"part(y|ies) \[1\] failed the range check under encryption"):
        run_parties(_integrity_jobs.lying_party, PartySpec(3), X, P, 1, deadline_s=240)
    # the control: an honest world goes through with the same inputs
    assert len(run_parties(_integrity_jobs.lying_party, PartySpec(3), X, P, -1, deadline_s=240)) == 3


@pytest.mark.timeout(300)
def test_integrity_a_client_straddling_the_deadline_is_left_out_not_failed(tmp_path):
    servers = _attacked(tmp_path, "straddle", [2, 5, 8])
    assert all(s["dropped"] == [2, 5, 8] for s in servers)


@pytest.mark.timeout(300)
def test_integrity_a_negative_row_id_is_refused_naming_the_sender(tmp_path):
    servers = _attacked(tmp_path, "negative-id", [2, 5, 8])
    assert all("not distinct clients it hosts" in s["refused"]["2"] for s in servers)


# ------------------------------------------------------------------ item 6, in process


def _msg(round_idx=0, n=2, m=8, d=16, ids=(1, 3), body=None) -> np.ndarray:
    body = np.zeros(len(ids) * (m + d), dtype=np.int64) if body is None else body
    return np.concatenate([np.array([round_idx, n, m, d, *ids], dtype=np.int64), body])


@pytest.mark.parametrize("buf, why", [
    (_msg(), None),
    (_msg(ids=(-7, 3)), "not distinct clients it hosts"),  # owners[-7] == owners[2] == 0: another's
    (_msg(ids=(1, 9)), "not distinct clients it hosts"),  # past the registered clients
    (_msg(ids=(1, 1)), "not distinct clients it hosts"),
    (_msg(ids=(0, 3)), "not distinct clients it hosts"),  # client 0 lives on rank 0
    (_msg(round_idx=4), "claims round 5 during round 1"),
    (_msg(n=5), "claims 5 rows"),
    (_msg(m=9), "words wide"),
    (_msg()[:-1], "do not match its header"),
    (np.zeros(3, dtype=np.int64), "shorter than the header"),
], ids=["valid", "negative-id", "id-too-large", "repeated-id", "others-client", "future-round", "row-count",
        "shape", "length", "short"])
def test_integrity_every_message_field_is_checked(buf, why):
    inbox = Inbox(None, ServerLayout(3, 2, 9), (8, 16))  # rank 1 hosts clients 1, 3, 5, 7
    got = inbox._check(1, buf, 0)
    assert got is None if why is None else why in got, got
    assert inbox.cap(1) == 4 + 4 + 4 * 24  # a size claim over the cap is refused before allocation


def test_integrity_a_tensor_whose_data_does_not_fit_its_shape_is_refused():
    from mpc import wire

    good = wire.encode(torch.arange(6).view(2, 3))
    assert torch.equal(wire.decode(good), torch.arange(6).view(2, 3))
    bad = good.replace(b"[2,3]", b"[4,3]")
    with pytest.raises(ValueError, match="does not match its shape"):
        wire.decode(bad)
    with pytest.raises(ValueError, match="does not match its shape"):
        wire.decode(wire.encode(torch.zeros(0, 3)).replace(b"[0,3]", b"[5,3]"))  # no data, non-empty shape
