"""Party functions for the offline-dealer tests (module level so run_parties can pickle them)."""

from __future__ import annotations

import torch

from mpc import preprocessing
from mpc.compat import import_crypten
from mpc.stats import CommLog


def _online_requests():
    """Count party 0's online dealer requests and its offline batches (streamed, not asked
    through ``ttp_request``)."""
    from crypten.mpc.provider.ttp_provider import TTPClient

    cls = TTPClient._TTPClient__TTPClient
    counts = {"online": 0, "batch": 0}
    inner = cls.ttp_request
    fetch = preprocessing._fetch

    def counting(self, func_name, device, *args, **kwargs):
        if preprocessing._state.mode != "replay":  # a replayed request is served from the store
            counts["online"] += 1
        return inner(self, func_name, device, *args, **kwargs)

    def counting_fetch(tagged, charge):
        counts["batch"] += 1
        return fetch(tagged, charge)

    cls.ttp_request = counting
    preprocessing._fetch = counting_fetch
    return counts


def both_paths(party, X, P, owners, cfg):
    """SecPC rounds on the same inputs: with the offline dealer (planning every block), again
    (plans reused from the first), then on CrypTen's online path."""
    from mpc.lookahead import dealer_stats
    from mpc.secpc import secpc_round

    mine = [i for i, o in enumerate(owners) if o == party.rank]
    counts = _online_requests()
    preprocessing.set_plan_cache(True)
    out = []
    for flag in (True, True, False):
        before = dict(counts)
        with preprocessing.enabled(flag):
            r = secpc_round(party, X[mine], P[mine], owners, cfg)
        out.append(dict(k=r.k, rows=r.own_rows.numpy(), assign=r.own_assignment.numpy(), stats=r.stats,
                        online=counts["online"] - before["online"], batch=counts["batch"] - before["batch"],
                        ahead=dealer_stats() if party.rank == 0 else None))
    return out


def _block(shape_online, shape_dry, extra: bool = False, fewer: bool = False):
    """A block whose requests differ between party 0's dry run and the online run (as a block
    that is not data-oblivious would): the dry run sees the null communicator."""

    def fn(log):
        ct = import_crypten()
        dry = type(ct.communicator.get()).__name__ == "_NullCommunicator"
        n = shape_dry if dry else shape_online
        x = ct.cryptensor(torch.ones(n), src=0)
        with log.phase("mismatch"):
            y = x * x
            if not (fewer and not dry):
                y = y * x
            if extra and not dry:
                y = y * x
        return y.get_plain_text()

    return fn


def _later_request() -> str | None:
    """What a multiplication after a failed block raises (None: it went through)."""
    ct = import_crypten()
    try:
        x = ct.cryptensor(torch.ones(2), src=0)
        (x * x).get_plain_text()
    except preprocessing.PlanMismatch as err:
        return str(err)
    return None


def mismatch(party, case):
    """Run a block whose plan disagrees with its requests; return what every party raised, and
    what a later multiplication in the same world raises."""
    ct = import_crypten()
    fn = {"shape": _block(4, 3), "extra": _block(3, 3, extra=True), "fewer": _block(3, 3, fewer=True),
          "stale": _block(4, 4)}[case]
    log = CommLog()
    first = None
    if case == "stale":  # a plan kept under a key that misses the shape
        preprocessing.set_plan_cache(True)
        preprocessing.planned("test", _block(3, 3), log, key="n")
    try:
        preprocessing.planned("test", fn, log, key="n" if case == "stale" else None)
    except preprocessing.PlanMismatch as err:
        first = str(err)
    return first, _later_request()


def stops_half_way(party):
    """A block that raises after its first multiplication (online only, so its plan is made):
    the dealer drew the whole block, so a later request must refuse, not use stale streams."""
    ct = import_crypten()

    def fn(log):
        x = ct.cryptensor(torch.ones(3), src=0)
        with log.phase("half"):
            y = x * x
            if type(ct.communicator.get()).__name__ != "_NullCommunicator":
                raise ValueError("a bug half-way through the block")
            return (y * x).get_plain_text()

    first = None
    try:
        preprocessing.planned("test", fn, CommLog())
    except ValueError as err:
        first = str(err)
    return first, _later_request()


def good_block(party):
    """A data-oblivious block: the same result planned and online, and party 0's online rounds
    equal the others'."""
    ct = import_crypten()
    out = {}
    for flag in (True, False):
        log = CommLog()

        def fn(lg):
            x = ct.cryptensor(torch.arange(6, dtype=torch.float32).view(2, 3) - 2, src=0)
            y = ct.cryptensor(torch.full((3, 2), 0.5), src=1)
            with lg.phase("ops"):
                z = (x.matmul(y) * x[:, :2]).square()
                c = (x < 0.5)
                t = x.div(3)
            return torch.cat([z.get_plain_text().flatten(), c.get_plain_text().flatten(), t.get_plain_text().flatten()])

        with preprocessing.enabled(flag):
            val = preprocessing.planned("ops", fn, log)
        out[flag] = (val.numpy(), log.as_dict())
    return out


def dry_run_fails(party):
    """A block that raises only in party 0's dry run runs on the online path instead, and one
    that raises everywhere raises its own error at every party."""
    ct = import_crypten()

    def flaky(lg):
        if type(ct.communicator.get()).__name__ == "_NullCommunicator":
            raise ValueError("only in the dry run")
        x = ct.cryptensor(torch.arange(4.0), src=0)
        return (x * x).get_plain_text()

    def broken(lg):
        raise KeyError("always")

    value = preprocessing.planned("flaky", flaky, CommLog())
    try:
        preprocessing.planned("broken", broken, CommLog())
        err = None
    except KeyError as e:
        err = str(e)
    return value.tolist(), err
