"""The dealer's look-ahead (mpc.lookahead) is invisible: whatever the requests, a dealer that
makes its next batch ahead answers every request with the same words as one that does not,
and its streams end where the other's do.

Real dealer code (mpc.preprocessing's batch on CrypTen's TTPServer methods) and real ChaCha20
streams, two dealers with the same keys side by side, no party processes: the end-to-end runs
(tests/mpc/test_preprocessing.py, every multi-party test) go through it too, as it is on by
default.
"""

from __future__ import annotations

import os

import pytest
import torch

from mpc import lookahead
from mpc.compat import import_crypten
from mpc.prg import ChaChaGenerator


def _dealer(keys):
    import_crypten()  # mpc.compat: ChaCha20 in CrypTen's generation code, the dealer's batch method
    from crypten.mpc.provider.ttp_provider import TTPServer

    server = TTPServer.__new__(TTPServer)  # no party world: only the generation methods are used
    server.generators = [ChaChaGenerator(k) for k in keys]
    server.generators_cuda = server.generators
    server.device = "cpu"
    return server


def _batch(n: int, k: int):
    """A batch as party 0 sends it: its planned requests (an edaBit, a matmul triple, bit products)."""
    return [("edabits", (n,)), ("additive", (n, 3), (3, k), "matmul", (), ()), ("bitprods", (n, k - 1))]


CHECK, CLUSTER, AGG3, AGG4 = _batch(5, 2), _batch(7, 3), _batch(2, 3), _batch(2, 4)
# three rounds of (check, cluster, aggregate), the revealed k changing in the third, then
# CrypTen's online requests (a square, an edaBit), then a round again
REQUESTS = ([("batch", (CHECK,)), ("batch", (CLUSTER,)), ("batch", (AGG3,))] * 2
            + [("batch", (CHECK,)), ("batch", (CLUSTER,)), ("batch", (AGG4,))]
            + [("square", (torch.Size([4]),)), ("edabits", (torch.Size([3]),))]
            + [("batch", (CHECK,)), ("ahead_stats", ()), ("batch", (CLUSTER,)), ("batch", (AGG4,))])


def _serve(server, ahead, function, args):
    result = ahead.take(function, args) if ahead is not None else None
    if result is None:
        result = getattr(server, function)(*args)
    if ahead is not None:
        ahead.served(function, args)
    return result


def _replay(break_rewind: bool = False):
    keys = [os.urandom(32) for _ in range(3)]
    plain, ahead_server = _dealer(keys), _dealer(keys)
    ahead_server.ahead_stats = lambda: ahead.stats()
    ahead = lookahead.Lookahead(ahead_server)
    if break_rewind:  # the injected fault: words made ahead are dropped but the streams stay advanced
        ahead._rewind = lambda positions: None
    same = []
    for function, args in REQUESTS:
        got = _serve(ahead_server, ahead, function, args)
        if function == "ahead_stats":
            continue
        same.append(torch.equal(got, _serve(plain, None, function, args)))
    positions = ([g.tell() for g in plain.generators], [g.tell() for g in ahead_server.generators])
    return same, positions, ahead


def test_a_dealer_looking_ahead_answers_every_request_with_the_same_words():
    same, (plain_pos, ahead_pos), ahead = _replay()
    assert all(same), same
    assert plain_pos == ahead_pos
    # round 1 teaches the order. Round 2: all but its check made ahead (nothing followed an
    # aggregate yet). Round 3: its aggregate (k 4, not 3) is a miss. The online requests are
    # never guessed and end the chain, so in the last round the check is not made ahead, the
    # cluster and the aggregate (for k 4, learnt in round 3) are.
    assert (ahead.hits, ahead.misses, ahead.made) == (6, 1, 7), (ahead.hits, ahead.misses, ahead.made)
    assert ahead.stats().tolist()[:3] == [ahead.hits, ahead.misses, ahead.made]


def test_the_invisibility_check_catches_a_dealer_that_does_not_rewind():
    """The test above can fail: without the rewind, the first miss leaves the streams ahead of
    the parties' and every later answer differs."""
    same, (plain_pos, ahead_pos), _ = _replay(break_rewind=True)
    assert not all(same) and plain_pos != ahead_pos


@pytest.mark.parametrize("rewind", [True, False])
def test_a_guess_that_cannot_be_made_is_dropped_and_the_streams_stay_put(caplog, monkeypatch, rewind):
    """A batch that fails half made (after drawing) leaves no trace; without the rewind, the
    streams would be moved (the check below can fail)."""
    keys = [os.urandom(32) for _ in range(2)]
    server = _dealer(keys)
    ahead = lookahead.Lookahead(server)
    if not rewind:
        monkeypatch.setattr(ahead, "_rewind", lambda positions: None)
    ahead.served("batch", (CLUSTER,))
    ahead.served("batch", (CHECK,))  # learnt: CHECK follows CLUSTER
    real = server.batch

    def draws_then_fails(requests):
        real(requests)  # every stream moves
        raise ValueError("the dealer refuses this batch")

    monkeypatch.setattr(server, "batch", draws_then_fails)
    before = [g.tell() for g in server.generators]
    ahead.served("batch", (CLUSTER,))  # guesses CHECK, which fails
    assert ahead.made == 0 and ahead._made is None
    assert "could not make its next batch ahead" in caplog.text
    assert ([g.tell() for g in server.generators] == before) is rewind


@pytest.mark.parametrize("function, args", [("batch", ([("square", (2,))],)), ("square", (torch.Size([2]),))])
def test_batch_key_tells_batches_apart_and_ignores_list_or_tuple(function, args):
    key = lookahead.batch_key(function, args)
    if function != "batch":
        assert key is None
    else:
        assert key == lookahead.batch_key("batch", ([["square", [2]]],)) != lookahead.batch_key("batch", ([("square", (3,))],))
        assert key != lookahead.batch_key("batch", ([("square", (2.0,))],))  # the dealer's code judges a float size
        assert lookahead.batch_key("batch", args, {"extra": 1}) is None
