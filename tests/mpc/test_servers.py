"""The server-aided topology (:mod:`mpc.servers`): input-only clients, 3 compute parties + TTP.

* Shares: additive over Z_2^64, from the ChaCha20 generator, each alone uniform.
* A real round under ``mpirun`` (2 client ranks hosting 9 clients, 3 compute parties, the
  dealer) equals the plaintext reference: same k, same partition, aggregates within fixed-point
  error (tolerance below; labels are compared after relabelling, see ``bench secpc``).
* Dropout: a client rank SIGKILLed before it shares is left out after the deadline; the others
  get exactly the reference computed on the surviving rows.
* Leaks: the words compute party 0 holds after the round are uniform shares and contain no
  client secret; a deliberately leaky sharing is caught by the same check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mpc.layout import SecPCConfig, quant_bits
from mpc.reference import secpc_reference
from mpc.servers import ServerLayout, split_shares
from tests.launcher._mpirun import ENV, MPIRUN, ROOT

JOB = str(ROOT / "tests/mpc/_servers_jobs.py")
TOL = 1e-3  # aggregates: 16 fractional bits, one truncation by 2^20 (error ~1e-4 on entries ~0.1)


def test_shares_add_up_mod_2_64_and_each_alone_is_uniform():
    v = torch.tensor([[0, 1, -1, 2**62, -(2**63)]], dtype=torch.long).repeat(4000, 1)
    shares = split_shares(v, 3)
    total = shares[0] + shares[1] + shares[2]  # int64 addition wraps: arithmetic mod 2^64
    assert torch.equal(total, v)
    for s in shares:  # whatever the value (0, -1, 2^62 ...), a share's top bit is a fair coin
        frac = float((s < 0).double().mean())
        assert 0.47 < frac < 0.53, frac
    assert not torch.equal(split_shares(v, 3)[0], shares[0])  # fresh randomness every call


def test_layout_puts_clients_first_then_compute_parties_then_the_dealer():
    lay = ServerLayout(3, 2, 7)
    assert lay.world_size == 6 and lay.n_mpc_ranks == 4
    assert lay.owners() == [0, 1, 0, 1, 0, 1, 0] and lay.clients_of(1) == [1, 3, 5]
    assert [lay.server_rank(s) for s in range(3)] == [2, 3, 4]
    assert lay.is_server(4) and not lay.is_server(5) and lay.is_client_rank(1)
    assert lay.bits == quant_bits(7)
    with pytest.raises(ValueError, match="at least 2 compute parties"):
        ServerLayout(1, 2, 7)
    with pytest.raises(ValueError, match="client ranks"):
        ServerLayout(3, 8, 7)


def _job(mode: str, out: Path, n_client_ranks: int, recovery: bool = False) -> subprocess.CompletedProcess:
    """Run the job; on a hang, kill its whole process group and fail with what it printed."""
    out.mkdir()
    cmd = [MPIRUN, "--oversubscribe", *(["--enable-recovery"] if recovery else []),
           "-np", str(n_client_ranks + 4), sys.executable, JOB, mode, str(out), str(n_client_ranks)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        output, _ = p.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        output, _ = p.communicate()
        pytest.fail(f"job {mode} hung; files: {sorted(f.name for f in out.iterdir())}; output:\n{output[-3000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, output, output)


def _reference(rows: list[int]):
    from tests.mpc._servers_jobs import CONFIG, D, M, N, blobs

    X, P = blobs(N, M, D, 3, 1, 0.5)
    return secpc_reference(X[rows].double(), P[rows].double(), CONFIG, bits=quant_bits(N))


def _check_against_reference(out: Path, client_ranks: list[int], rows: list[int]) -> None:
    ref = _reference(rows)
    got = {}
    for r in client_ranks:
        c = json.loads((out / f"client-{r}.json").read_text())
        assert c["k"] == ref.k
        got.update({int(i): (torch.tensor(v), c["labels"][i]) for i, v in c["rows"].items()})
    assert sorted(got) == rows
    for j, i in enumerate(rows):
        assert float((got[i][0].double() - ref.rows[j]).abs().max()) < TOL
    # same partition: pairs of rows together in one are together in the other
    lab_s = [got[i][1] for i in rows]
    lab_r = ref.labels.tolist()
    assert all((lab_s[a] == lab_s[b]) == (lab_r[a] == lab_r[b]) for a in range(len(rows)) for b in range(len(rows)))


@pytest.mark.timeout(300)
def test_a_server_round_equals_the_reference_and_compute_parties_hold_only_uniform_shares(tmp_path):
    out = tmp_path / "plain"
    job = _job("plain", out, 2)
    assert job.returncode == 0, job.stderr[-3000:]
    _check_against_reference(out, [0, 1], list(range(9)))
    servers = [json.loads((out / f"server-{s}.json").read_text()) for s in range(3)]
    assert all(s["included"] == list(range(9)) and s["dropped"] == [] for s in servers)
    held = np.load(out / "received.npy")
    secrets = np.concatenate([np.load(out / f"secrets-{r}.npy").ravel() for r in (0, 1)])
    assert held.size == secrets.size  # one share of every encoded entry, nothing else
    from mpc.transcript import plaintext_hits

    assert plaintext_hits([("collect", "recv", held)], secrets) == 0
    assert (np.abs(held) < 2**40).mean() < 1e-3  # uniform words are almost never small


@pytest.mark.timeout(300)
def test_the_leak_check_catches_a_client_that_sends_its_plaintext(tmp_path):
    out = tmp_path / "leak"
    job = _job("leak", out, 2)
    assert job.returncode == 0, job.stderr[-3000:]
    _check_against_reference(out, [0, 1], list(range(9)))  # the leak does not change the result...
    held = np.load(out / "received.npy")
    secrets = np.concatenate([np.load(out / f"secrets-{r}.npy").ravel() for r in (0, 1)])
    from mpc.transcript import plaintext_hits

    assert plaintext_hits([("collect", "recv", held)], secrets) > 100  # ...but compute party 0 holds it
    assert (np.abs(held) < 2**40).mean() > 0.5


@pytest.mark.timeout(300)
def test_a_client_rank_killed_before_sharing_is_left_out_and_the_round_goes_on(tmp_path):
    out = tmp_path / "drop"
    job = _job("drop", out, 3, recovery=True)
    survivors = [i for i in range(9) if i % 3 != 2]  # rank 2 hosted clients 2, 5, 8
    for s in range(3):
        server = json.loads((out / f"server-{s}.json").read_text())
        assert server["included"] == survivors and server["dropped"] == [2, 5, 8], job.stderr[-3000:]
    _check_against_reference(out, [0, 1], survivors)
