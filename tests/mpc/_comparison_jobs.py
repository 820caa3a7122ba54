"""Party functions for the comparison tests (module level so run_parties can pickle them)."""

from __future__ import annotations

import torch

from mpc import comparison, preprocessing
from mpc.compat import import_crypten
from mpc.stats import CommLog


def _rounds() -> int:
    return int(import_crypten().communicator.get().get_communication_stats()["rounds"])


def _shared(values: torch.Tensor):
    """``values`` as int (scale 1) shares, input by party 0."""
    from mpc.secure_ops import as_int

    return as_int(import_crypten().cryptensor(values, src=0, precision=0))


def compare_all(party, values, small, bits, A):
    """``ltz`` and ``is_zero_small``/``none_of`` with both protocols, online and planned; the
    opened results and this party's rounds per call."""
    out = {}
    for name in comparison.METHODS:
        with comparison.using(name):
            for planned in (False, True):
                log = CommLog()

                def block(lg, name=name):
                    r0 = _rounds()
                    with lg.phase("ltz"):
                        lt = comparison.ltz(_shared(values)).get_plain_text().long()
                    r1 = _rounds()
                    with lg.phase("zero"):
                        z = comparison.is_zero_small(_shared(small), bits).get_plain_text().long()
                    r2 = _rounds()
                    e = comparison.none_of(_shared(A), 0).get_plain_text().long()
                    return lt, z, e, r1 - r0 - 1, r2 - r1 - 1  # minus the opening of the result

                with preprocessing.enabled(planned):
                    lt, z, e, lt_rounds, z_rounds = preprocessing.planned("cmp", block, log)
                online = sum(p.rounds - p.offline_rounds for p in log.phases.values())
                out[(name, planned)] = dict(lt=lt, z=z, e=e, lt_rounds=lt_rounds, z_rounds=z_rounds,
                                            online=online)
    return out


def reciprocal(party, x):
    """``secure_ops.reciprocal_bounded`` on ``x`` (input by party 0) and this party's rounds."""
    from mpc import secure_ops as so

    ct = import_crypten()
    r0 = _rounds()
    y = so.reciprocal_bounded(ct.cryptensor(x, src=0), -8, 3)
    rounds = _rounds() - r0
    return y.get_plain_text(), rounds
