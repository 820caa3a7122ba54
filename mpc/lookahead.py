"""The dealer makes the next batch of material while the parties compute with this one.

In the offline phase (:mod:`mpc.preprocessing`) party 0 asks the dealer for one batch per
planned block and waits while the dealer makes it; at 2 compute parties that wait was about a
quarter of a warm round. The blocks of a round come in a fixed order (the input check, the
clustering, the aggregation for the revealed k), and a round asks for the same batches as the
round before unless a public size changed (the rows that passed the check, the revealed k).
So after answering a batch the dealer makes the batch that followed it last time, before it
waits for the next request. When that request comes and is the same batch, the answer is
ready; the dealer's work overlaps the parties' online phase instead of stalling it.

**Invisible by construction.** All the dealer makes is a function of where its ChaCha20
streams stand (one per party, keyed with that party, :mod:`mpc.prg`). A batch made ahead
draws exactly the words it would draw when asked for. When the next request is anything else
(another batch, one of CrypTen's online requests), the dealer seeks every stream back to where
it stood and serves the request as if it had never looked ahead: the words made ahead are
dropped unsent. So party 0 receives the same words either way, and the other parties, who draw
their shares from the same streams, stay in step. No message is added to a protocol run
(``ahead_stats``, below, is a diagnostic that draws nothing) and nobody learns anything new:
the dealer knows all it makes anyway, and its guess uses only the request shapes it has
already seen.

Cost: a wrong guess (the revealed k changed, say) wastes the dealer's time for one batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from mpc.compat import import_crypten

_logger = logging.getLogger(__name__)

#: Requests that draw no randomness: answered without dropping what was made ahead.
NEUTRAL = frozenset({"ahead_stats"})
#: Batches whose successor the dealer remembers (one per public shape seen: rows that passed
#: the check, revealed k); the oldest is forgotten first.
MAX_REMEMBERED = 64


def _freeze(obj: Any) -> Any:
    """A hashable copy of a request: lists, tuples and ``torch.Size`` alike, scalars with their
    type (a size of 2.0 is not the size 2: the dealer's own code would refuse it)."""
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(x) for x in obj)
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    return (type(obj).__name__, obj)


def batch_key(function: str, args: tuple, kwargs: dict | None = None) -> tuple | None:
    """What identifies a batch request (its planned requests, in order); None for any other,
    and for a batch with keyword arguments (party 0 sends none: the dealer's code judges it)."""
    if function != "batch" or len(args) != 1 or kwargs:
        return None
    return _freeze(args[0])


@dataclass
class _Made:
    key: tuple
    result: torch.Tensor
    before: list[int]  # every stream's position before it was made


class Lookahead:
    """The dealer's guess of its next batch, made ahead, and the bookkeeping to undo it.

    ``server``: a ``TTPServer`` with :mod:`mpc.prg` generators (``server.generators``) and the
    ``batch`` method of :mod:`mpc.preprocessing`."""

    def __init__(self, server: Any, enabled: bool = True) -> None:
        self.server = server
        self.enabled = enabled
        self._next: dict[tuple, tuple[tuple, Any]] = {}  # batch -> (key, requests) of the batch after it; oldest first
        self._last: tuple | None = None
        self._made: _Made | None = None
        self.hits = self.misses = self.made = 0
        self.seconds = 0.0  # spent making batches ahead

    def _positions(self) -> list[int]:
        return [g.tell() for g in self.server.generators]

    def _rewind(self, positions: list[int]) -> None:
        for g, pos in zip(self.server.generators, positions):
            g.seek(pos)

    def take(self, function: str, args: tuple, kwargs: dict | None = None) -> torch.Tensor | None:
        """The answer made ahead for this request, or None: then nothing was made ahead or it was
        for another request, and every stream stands where it stood before (serve as usual)."""
        if function in NEUTRAL:
            return None
        made, self._made = self._made, None
        if made is None:
            return None
        if batch_key(function, args, kwargs) == made.key:
            self.hits += 1
            return made.result
        self.misses += 1
        self._rewind(made.before)
        return None

    def served(self, function: str, args: tuple, kwargs: dict | None = None) -> None:
        """After answering a request: learn which batch followed which, then make the batch that
        followed this one last time (nothing after any other request)."""
        if function in NEUTRAL or not self.enabled:
            return
        key = batch_key(function, args, kwargs)
        if key is not None and self._last is not None:
            self._next.pop(self._last, None)  # re-inserted as the newest
            self._next[self._last] = (key, args[0])
            while len(self._next) > MAX_REMEMBERED:
                del self._next[next(iter(self._next))]
        self._last = key
        guess = self._next.get(key) if key is not None else None
        if guess is None:
            return
        before = self._positions()
        t0 = time.perf_counter()
        try:
            result = self.server.batch(guess[1])
        except Exception:  # noqa: BLE001 - a guess that cannot be made is no guess
            _logger.exception("the dealer could not make its next batch ahead; it will make it when asked")
            self._rewind(before)
            return
        self.seconds += time.perf_counter() - t0
        self.made += 1
        self._made = _Made(guess[0], result, before)

    def stats(self) -> torch.Tensor:
        """``[hits, misses, batches made ahead, microseconds spent making them]``."""
        return torch.tensor([self.hits, self.misses, self.made, round(self.seconds * 1e6)], dtype=torch.long)


def serve(lookahead: bool = True) -> None:
    """CrypTen's ``TTPServer`` loop, with a :class:`Lookahead` (unless ``lookahead`` is off)
    and batches streamed in chunks (:func:`mpc.preprocessing.stream_batch`): runs until
    party 0 says "terminate" (returns) or its connection breaks (CrypTen's RuntimeError, left
    to the caller to tell apart, as for ``TTPServer``). Any other request is answered as
    CrypTen's server answers it."""
    crypten = import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPServer

    from mpc import preprocessing

    comm = crypten.communicator

    class LookaheadServer(TTPServer):
        def __init__(self) -> None:  # CrypTen's TTPServer.__init__, minus its loop
            crypten.init()
            self.ttp_group = comm.get().ttp_group
            self.comm_group = comm.get().ttp_comm_group
            self.device = "cpu"
            self._setup_generators()
            self.ahead = Lookahead(self, enabled=lookahead)

        def ahead_stats(self) -> torch.Tensor:
            return self.ahead.stats()

    server = LookaheadServer()
    ttp_rank = comm.get().get_ttp_rank()
    sending: list = []  # the last batch's chunks in flight
    while True:
        message = comm.get().recv_obj(0, server.ttp_group)
        for work, _ in sending:  # party 0 has used them all before it asks again; frees them
            work.wait()
        sending = []
        if message == "terminate":
            _logger.info("dealer look-ahead: %d hits, %d misses, %d batches made ahead in %.2f s",
                         server.ahead.hits, server.ahead.misses, server.ahead.made, server.ahead.seconds)
            return
        function, args, kwargs = message["function"], message["args"], message["kwargs"]
        server.device = message["device"]
        result = server.ahead.take(function, args, kwargs)
        if batch_key(function, args, kwargs) is not None:  # party 0's batch: streamed
            sending = preprocessing.stream_batch(server, args[0], result)
        else:
            if result is None:
                result = getattr(server, function)(*args, **kwargs)
            comm.get().send_obj(result.size(), 0, server.ttp_group)
            comm.get().broadcast(result, ttp_rank, server.comm_group)
        del result  # sent, or still sending: held until the next request, beside the one made ahead
        server.ahead.served(function, args, kwargs)


def dealer_stats() -> dict[str, float]:
    """Party 0: the dealer's look-ahead counters so far (one round trip, no randomness drawn).

    Only between planned blocks, and only with this project's dealer loop (:func:`serve`, with
    look-ahead on or off: the counters then stay at zero); CrypTen's own ``TTPServer`` has no
    such request and would stop."""
    from crypten.mpc.provider.ttp_provider import TTPClient

    from mpc import preprocessing

    if preprocessing.in_block():
        raise RuntimeError("dealer_stats() inside a planned block would take the block's place in the plan")
    hits, misses, made, micros = (int(v) for v in TTPClient.get().ttp_request("ahead_stats", None))
    return {"hits": hits, "misses": misses, "made": made, "seconds": micros / 1e6}
