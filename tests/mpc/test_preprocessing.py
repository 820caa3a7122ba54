"""The dealer's offline phase (mpc.preprocessing) with real CrypTen parties and the TTP dealer.

* a SecPC round with the offline dealer gives the same k and partition as CrypTen's online
  path in the same party world, aggregates within fixed-point noise, and party 0 makes no
  online dealer request: its online round count equals the other parties';
* a block whose requests disagree with its plan (shape, an extra request, a request fewer, a
  plan reused under a key that misses the shape) stops every party with PlanMismatch, and the
  world refuses any later dealer material;
* with the plan cache on, a second round with the same shapes reuses the plans: no dry run, no
  plan broadcast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpc.layout import SecPCConfig
from mpc.runtime import PartySpec, run_parties
from tests.mpc import _preprocessing_jobs as jobs


def _data(n_rows: int, n_parties: int):
    g = torch.Generator().manual_seed(3)
    C = torch.randn(3, 8, generator=g, dtype=torch.float64)
    X = C[torch.arange(n_rows) % 3] + 0.3 * torch.randn(n_rows, 8, generator=g, dtype=torch.float64)
    X = (X / X.norm(dim=1, keepdim=True)).float()
    P = (torch.randn(n_rows, 16, generator=g) * 0.1).float()
    return X, P, [i % n_parties for i in range(n_rows)]


@pytest.mark.parametrize("n_parties", [2, 3])
def test_secpc_round_same_results_and_no_online_request_at_party_0(n_parties):
    X, P, owners = _data(12, n_parties)
    cfg = SecPCConfig(2, 4, 3, 0, restarts=2, reveal_own_assignment=True)
    out = run_parties(jobs.both_paths, PartySpec(n_parties), X, P, owners, cfg)
    NEW, CACHED, OLD = 0, 1, 2
    for rank, o in enumerate(out):
        for run in (NEW, CACHED):
            assert o[run]["k"] == o[OLD]["k"]
            # each run is within the project's 2e-4 of the plaintext aggregate, so within 4e-4 of each other
            assert np.abs(o[run]["rows"] - o[OLD]["rows"]).max() < 4e-4
    # the same partition: restarts that reach it tie exactly, and the secure comparison of their
    # fixed-point scores may pick another restart, so only label names may differ (a bijection)
    for run in (NEW, CACHED):
        pairs = {(int(a), int(b)) for o in out for a, b in zip(o[run]["assign"], o[OLD]["assign"])}
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)
    p0 = out[0][NEW]
    assert p0["online"] == 0 and out[0][CACHED]["online"] == 0, "party 0 asked the dealer online"
    assert p0["batch"] == 3  # check, cluster, aggregate: one batch per planned block
    assert out[0][OLD]["online"] > 50  # CrypTen's path: one request per triple/bit/wrap
    online = [o[NEW]["stats"]["total"]["rounds"] - o[NEW]["stats"]["total"]["offline_rounds"] for o in out]
    assert len(set(online)) == 1, f"online rounds differ between parties: {online}"
    assert online[0] == out[1][OLD]["stats"]["total"]["rounds"]  # the others' count is unchanged
    # the second round reuses the plans: no dry run, no plan broadcast; party 0 only fetches
    assert out[1][CACHED]["stats"]["total"]["offline_rounds"] == 0
    # per batch: the request, then its chunks (one round)
    assert out[0][CACHED]["stats"]["total"]["offline_rounds"] == 2 * out[0][CACHED]["batch"]
    total = p0["stats"]["total"]
    assert total["offline_seconds"] > 0 and total["online_seconds"] > 0
    # the dealer's look-ahead (mpc.lookahead, on by default): the first round teaches it the
    # order of the batches, so the second round's cluster and aggregate batches were made ahead;
    # the batch it then made for a third round was dropped when CrypTen's online requests came,
    # and that round (OLD, above) still agrees: the dealer rewound its streams
    assert (p0["ahead"]["hits"], p0["ahead"]["misses"]) == (0, 0)
    assert (out[0][CACHED]["ahead"]["hits"], out[0][CACHED]["ahead"]["misses"]) == (2, 0)
    assert (out[0][OLD]["ahead"]["hits"], out[0][OLD]["ahead"]["misses"]) == (2, 1)
    assert abs(total["online_seconds"] + total["offline_seconds"] - total["seconds"]) < 1e-9
    # one dealer request per block (charged where the block starts); waits for its chunks are
    # charged where they happen, as offline time inside the phase's wall time
    assert total["offline_rounds"] >= 2 * p0["batch"]
    assert p0["stats"]["check"]["offline_seconds"] > 0
    for row in p0["stats"].values():
        assert 0 <= row["offline_seconds"] <= row["seconds"] + 1e-9


def test_data_oblivious_block_equals_online_path():
    out = run_parties(jobs.good_block, PartySpec(3))
    for o in out:
        new, old = o[True][0], o[False][0]
        assert (np.abs(new - old) <= 1e-3 + 1e-4 * np.abs(old)).all()  # fixed-point noise (16 bits)
        assert new[4:10].tolist() == [1, 1, 1, 0, 0, 0]  # x < 0.5: exact
    rounds = [o[True][1]["total"]["rounds"] - o[True][1]["total"]["offline_rounds"] for o in out]
    assert len(set(rounds)) == 1


@pytest.mark.parametrize("case,expect", [
    ("shape", "planned mul triple [3] x [3], the protocol asked for mul triple [4] x [4]"),
    ("extra", "planned nothing (the plan was used up)"),
    ("fewer", "made 2 of the 4 planned requests"),  # a fixed-point mul: a triple and a wraps
    ("stale", "planned mul triple [3] x [3], the protocol asked for mul triple [4] x [4]"),  # reused plan
])
def test_plan_mismatch_stops_every_party(case, expect):
    out = run_parties(jobs.mismatch, PartySpec(3), case)
    for rank, (first, later) in enumerate(out):
        assert first is not None, f"party {rank} went on past a plan mismatch"
        assert "offline dealer plan mismatch in block 'test'" in first and expect in first, first
        assert later is not None and "start the party world again" in later, later


def test_a_block_that_fails_half_way_poisons_the_party_world():
    """Its own error surfaces unchanged; every later request stops (the dealer's streams are
    ahead of the parties' by the rest of the block)."""
    for first, later in run_parties(jobs.stops_half_way, PartySpec(2)):
        assert first == "a bug half-way through the block"
        assert later is not None and "stopped half-way (ValueError" in later and "start the party world again" in later


def _bench(np_: int, args: list[str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    cmd = [mpirun, "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    cmd += ["-np", str(np_), sys.executable, "-m", "launcher", "bench", "secpc", *args]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


SMALL = ["--dim", "8", "--prompt-dim", "16", "--k-max", "3", "--restarts", "1", "--iters", "2", "--baseline",
         "--repeat", "2", "--reuse-plans"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("np_,args", [(4, ["--clients", "3", "--topology", "peer"]),
                                      (5, ["--clients", "9", "--topology", "servers", "--servers", "2",
                                           "--baseline-repeat", "2"])])
def test_bench_secpc_baseline_under_mpirun(np_, args):
    res = _bench(np_, args + SMALL)
    for key in ("seconds", "baseline_seconds", "online_seconds", "offline_seconds", "rounds", "rounds_party0",
                "rounds_per_lloyd_iter", "rounds_per_lloyd_iter_party0", "baseline_rounds_party0", "agreement",
                "max_abs_error", "first_seconds", "first_offline_seconds"):
        assert key in res, key
    assert res["agreement"] == res["baseline_agreement"] == res["first_agreement"] == 1.0
    assert res["same_k"] and res["same_partition"] and res["k"] == res["reference_k"]
    assert res["max_abs_error"] < 2e-4 and res["baseline_max_abs_error"] < 2e-4
    # party 0's online rounds are the others' (its offline ones: a few per block), and the
    # edaBits comparisons take no more rounds than CrypTen's (fewer from 3 parties on)
    assert res["online_rounds_party0"] == res["rounds"]
    assert res["rounds"] <= res["baseline_rounds"]
    assert res["rounds_by_phase"]["lloyd"] == 8 * 2  # 8 rounds per Lloyd iteration, --iters 2
    assert res["rounds_party0"] < res["baseline_rounds_party0"] / 2
    assert abs(res["online_seconds"] + res["offline_seconds"] - res["seconds"]) < 2e-3
    # times: the warm run's (the median of one), the baseline's median over its runs
    assert len(res["seconds_all"]) == 2 and res["seconds"] == res["seconds_all"][1]
    runs = res["baseline_seconds_all"]
    assert len(runs) == (2 if "--baseline-repeat" in args else 1)
    assert res["baseline_seconds"] == round(float(np.median(runs)), 3)
    assert res["ratio"] == round(res["seconds"] / res["baseline_seconds"], 3)


def test_a_failing_dry_run_falls_back_to_the_online_path():
    for value, err in run_parties(jobs.dry_run_fails, PartySpec(3)):
        assert np.allclose(value, [0, 1, 4, 9], atol=1e-3)
        assert err is not None and "always" in err


@pytest.mark.parametrize("words", [[], [0], [5], [2**15], [2**15 - 1, 1, 7], [3] * 40_000, [10**7, 1, 2**20, 5],
                                   [2**14] * 300, [2**12] * 1200])
def test_stream_chunks_cover_every_request_once_in_order(words):
    """The dealer and party 0 cut a batch the same way (:func:`stream_chunks` of the same word
    counts): consecutive, non-empty request ranges covering all of them, each chunk closed at the
    first request that takes it to its target (2^15 words, then doubling up to 2^20)."""
    from mpc.preprocessing import STREAM_FIRST_WORDS, STREAM_MAX_WORDS, stream_chunks

    chunks = stream_chunks(words)
    assert [i for lo, hi in chunks for i in range(lo, hi)] == list(range(len(words)))
    assert all(hi > lo for lo, hi in chunks)
    target = STREAM_FIRST_WORDS
    for j, (lo, hi) in enumerate(chunks):
        total = sum(words[lo:hi])
        if j < len(chunks) - 1:  # only the last may fall short
            assert total >= target and sum(words[lo : hi - 1]) < target
        target = min(2 * target, STREAM_MAX_WORDS)
    if words and max(words) < STREAM_FIRST_WORDS and sum(words) >= 4 * STREAM_MAX_WORDS:
        assert len(chunks) >= 8  # a big batch of small requests travels in bounded pieces


def test_incoming_hands_each_share_out_once_after_its_chunk():
    """Party 0's store of a streamed batch: shares are views into their chunk, each taken once;
    a chunk's receive is waited for (and the wait charged) only when one of its shares is taken."""
    from mpc.preprocessing import Incoming, PlanMismatch

    class Work:
        def __init__(self):
            self.waits = 0

        def wait(self):
            self.waits += 1

    charged = []
    store = Incoming(["a", "a", "b"], lambda phase, s, inside=False: charged.append((phase, inside)))
    first, second = Work(), Work()
    store.add_chunk(torch.arange(6), [(2, 2), (2,)], first)
    store.add_chunk(torch.arange(3), [(3,)], second)
    assert store.take(0).tolist() == [[0, 1], [2, 3]] and (first.waits, second.waits) == (1, 0)
    assert store.take(1).tolist() == [4, 5] and first.waits == 1  # the chunk is in already
    assert store.in_flight() == [second]
    assert store.take(2).tolist() == [0, 1, 2] and second.waits == 1 and not store.in_flight()
    assert charged == [("a", True), ("b", True)]
    with pytest.raises(PlanMismatch, match="used twice"):
        store.take(1)
