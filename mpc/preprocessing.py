"""An offline phase for the TTP dealer: party 0 makes no online request to it.

CrypTen's TTP provider has party 0 ask the dealer for its share of every triple, square,
binary triple, wraps and B2A bit in one synchronous round trip (``TTPClient.ttp_request``),
while the other parties draw theirs from their dealer-keyed ChaCha20 streams and wait for
party 0 at the next opening: party 0's round counter is about 4x the others'.

SecPC is data-oblivious: inside a *block* of the protocol (everything between two openings
that steer the control flow, such as the revealed k) the sequence of dealer requests (kind,
shapes, operation) depends only on public sizes. So a block runs in two steps:

1. **Offline.** Party 0 runs the block once as a *dry run*: same code, but on a null
   communicator (every collective returns its input, nothing is sent), with throwaway
   ChaCha20 keys in place of the real PRZS / local / global streams, and with a recording
   provider that answers every request with zero shares of the right shape and writes the
   request down. Nothing of the dry run is kept but that list of requests: the *plan*.
   Party 0 sends the plan to the other parties (one broadcast: public shapes only) and to the
   dealer, one request for the whole block (:meth:`_dealer_batch`; split only past
   :data:`MAX_BATCH_WORDS`). The dealer runs CrypTen's
   own generation code for every planned request in order (so it consumes every party's
   ChaCha20 stream exactly as the online requests would) and returns party 0's shares as one
   tensor.
2. **Online.** Every party runs the block for real. The provider checks each request against
   the plan (kind, sizes, operation, position); party 0 draws its ``a``, ``b`` from its
   dealer-keyed stream as before and pops its dealer-made share from the local store instead
   of asking the dealer. A request that differs from the plan, or a plan left half used,
   raises :class:`PlanMismatch` at every party at the same point, before the request's
   randomness is drawn: the parties stop, they never compute on mismatched material.

If the dry run itself raises (a block that rejects its inputs, say), every party is told and
runs that block on CrypTen's online path, where the same error arises at every party with its
own type; nothing has been drawn from any shared stream at that point.

Key model and what anyone learns: unchanged. The dealer still only ever sees request shapes
(CrypTen's requests carried the same shapes, one at a time) and never a share of the data;
the other parties learn the plan, which is a function of the public sizes they already know;
party 0 receives exactly the shares it received before, only earlier.

Costs are reported per phase in :class:`mpc.stats.PhaseStats`: ``offline_seconds`` (dry run,
plan broadcast, dealer batch), ``offline_rounds``/``offline_bytes``; ``seconds``, ``rounds``
and ``bytes`` stay the totals. Blocks are marked by :func:`planned` (SecPC: the input check,
the clustering up to the revealed k, the aggregation after it). With another provider (TFP),
one party, or :func:`set_enabled` off, :func:`planned` just runs the block (CrypTen's path).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

from mpc import comparison
from mpc.compat import import_crypten

T = TypeVar("T")
_logger = logging.getLogger(__name__)

KINDS = ("additive", "square", "binary", "wraps", "B2A", "edabits", "edabits4", "bitprods", "bitand")
#: Beaver operations the dealer accepts in a batch (CrypTen's ``__beaver_protocol`` set)
BEAVER_OPS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
#: Most int64 words of party-0 material one dealer batch may carry (2 GiB); a block that needs
#: more is split into several batches.
MAX_BATCH_WORDS = 2**28
#: A batch arrives in chunks (cut at request boundaries) that party 0 uses as they come: the
#: first is small, so the block starts after a short wait, and each next one doubles, up to
#: :data:`STREAM_MAX_WORDS` (8 MB), so a 37 MB batch is about ten messages, not one.
STREAM_FIRST_WORDS = 2**15
STREAM_MAX_WORDS = 2**20
#: gloo tag of the dealer's chunks to party 0 (only these two ever use it)
STREAM_TAG = 0x5EC

_ENABLED = True
#: Off by default: a kept plan is reused on the strength of its key alone, so code that changes
#: between rounds (a test's monkeypatch, a hot fix) would end the run with PlanMismatch. A
#: caller whose blocks are fixed turns it on for its party world (``PartySpec.reuse_plans``:
#: the launcher's ``mpc.reuse_plans``, on by default, and ``bench secpc``).
_PLAN_CACHE = False


class PlanMismatch(RuntimeError):
    """The requests of a block disagree with its plan: the run must stop."""


def set_enabled(flag: bool) -> None:
    """Turn the offline phase on or off (every party must make the same choice)."""
    global _ENABLED
    _ENABLED = bool(flag)


def set_plan_cache(flag: bool) -> None:
    """Keep plans of keyed blocks for later rounds (off by default; every party must make the
    same choice). Only for code that does not change between rounds: see :data:`_PLAN_CACHE`."""
    global _PLAN_CACHE
    _PLAN_CACHE = bool(flag)


@contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Run a block of code with the offline phase on or off (at every party alike)."""
    old = _ENABLED
    set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(old)


# ------------------------------------------------------------------ requests


def _size(s: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in s)


def request_of(kind: str, *args: Any, **kwargs: Any) -> tuple:
    """The canonical, picklable form of one provider request (what is planned and checked)."""
    if kind == "additive":
        size0, size1, op, *extra = args
        return (kind, _size(size0), _size(size1), str(op), tuple(extra), tuple(sorted(kwargs.items())))
    if kind == "binary":
        return (kind, _size(args[0]), _size(args[1]))
    if kind == "bitand":
        return (kind, _size(args[0]), int(args[1]), tuple(int(t) for t in args[2]))
    return (kind, _size(args[0]))


def output_shape(req: tuple) -> tuple[int, ...]:
    """Shape of party 0's dealer-made share for ``req``."""
    kind = req[0]
    if kind == "additive":
        _, size0, size1, op, extra, kw = req
        if op not in BEAVER_OPS:
            raise PlanMismatch(f"a Beaver request for {op!r} is not a CrypTen Beaver operation")
        if op == "mul" and not extra and not kw:
            return _broadcast(size0, size1)
        if op == "matmul" and not extra and not kw:
            return _matmul_shape(size0, size1)
        a = torch.empty(size0, dtype=torch.long, device="meta")  # conv: let torch say (slow first call)
        b = torch.empty(size1, dtype=torch.long, device="meta")
        return _size(getattr(torch, op)(a, b, *extra, **dict(kw)).shape)
    if kind == "binary":
        return _broadcast(req[1], req[2])
    if kind == "bitand":  # one word per subset product (the V mask words come from the streams)
        _, size, V, subsets = req
        if not subsets or any(not 0 < t < (1 << V) for t in subsets):
            raise PlanMismatch(f"a bitand request with subsets {list(subsets)} of {V} variables")
        return tuple(size) + (len(subsets),)
    if kind == "edabits4":  # r's additive share, then the XOR shares of its 4-bit groups' products
        if any(v < 0 for v in req[1]):
            raise PlanMismatch(f"an edabits4 request of negative size {list(req[1])}")
        return (_edabits4_words(req[1]),)
    if kind == "bitprods":  # D bits per group -> 2^D subset products
        try:
            from mpc.bitprods import check_width

            check_width(req[1])
        except ValueError as err:
            raise PlanMismatch(str(err)) from None
        return req[1][:-1] + (1 << req[1][-1],)
    if kind in KINDS:
        return req[1]
    raise PlanMismatch(f"unknown dealer request kind {kind!r}")


def _edabits4_words(size: tuple[int, ...]) -> int:
    """Party 0's words of an ``edabits4`` request: ``n`` additive shares of ``r``, then the
    products of each 4-bit group of its bits (:func:`mpc.comparison.group_products`)."""
    from mpc.comparison import GROUP_SUBSETS

    n = math.prod(size)
    return n + len(GROUP_SUBSETS) * math.ceil(n / 4)


def _broadcast(s0: tuple[int, ...], s1: tuple[int, ...]) -> tuple[int, ...]:
    """``torch.broadcast_shapes`` in plain Python (torch's first call imports sympy: ~0.2 s)."""
    n = max(len(s0), len(s1))
    a, b = (1,) * (n - len(s0)) + tuple(s0), (1,) * (n - len(s1)) + tuple(s1)
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            raise PlanMismatch(f"shapes {list(s0)} and {list(s1)} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _matmul_shape(s0: tuple[int, ...], s1: tuple[int, ...]) -> tuple[int, ...]:
    """``torch.matmul``'s result shape, without running it."""
    if not s0 or not s1:
        raise PlanMismatch("matmul of a 0-d tensor")
    if len(s0) == 1 and len(s1) == 1:
        return ()
    if len(s1) == 1:
        return s0[:-1]
    if len(s0) == 1:
        return s1[:-2] + s1[-1:]
    return _broadcast(s0[:-2], s1[:-2]) + (s0[-2], s1[-1])


def _describe(req: tuple | None) -> str:
    if req is None:
        return "nothing (the plan was used up)"
    if req[0] == "additive":
        return f"{req[3]} triple {list(req[1])} x {list(req[2])}"
    if req[0] == "binary":
        return f"binary triple {list(req[1])} & {list(req[2])}"
    return f"{req[0]} {list(req[1])}"


# ------------------------------------------------------------------ state


class _State:
    def __init__(self) -> None:
        self.mode: str | None = None  # None: CrypTen's online requests; "record"; "replay"
        self.block = ""
        self.phase = ""
        self.recorded: list = []  # (phase, request) during a dry run
        self.plan: list = []  # requests of the block being replayed
        self.pos = 0
        self.store: Incoming | None = None  # party 0's dealer-made shares, in plan order
        self.pending: torch.Tensor | None = None  # the share the next ttp_request returns (party 0)
        self.poisoned: str | None = None  # set by a mismatch: no request is served afterwards
        self.plans: dict = {}  # planned(key=...) -> [(phase, request)], the same at every party


_state = _State()


def reset() -> None:
    """Forget any plan or mismatch: called when a party receives a fresh dealer key."""
    global _state
    _state = _State()
    _ORPHANED.clear()


def _fail(message: str) -> PlanMismatch:
    """After a mismatch the dealer's streams are ahead of the parties': every later request
    of this party world fails too (the world must be started again)."""
    _state.poisoned = message
    return PlanMismatch(message)


def _check_poisoned() -> None:
    if _state.poisoned is not None:
        raise PlanMismatch(f"an earlier offline dealer plan mismatch left the dealer's streams unusable "
                           f"({_state.poisoned}); start the party world again")


def _check(req: tuple) -> None:
    """Online: ``req`` must be the next planned request (every party checks)."""
    s = _state
    expected = s.plan[s.pos] if s.pos < len(s.plan) else None
    if expected != req:
        raise _fail(
            f"offline dealer plan mismatch in block {s.block!r} at request {s.pos + 1} of {len(s.plan)}: "
            f"planned {_describe(expected)}, the protocol asked for {_describe(req)}; stopping "
            "(continuing would compute on mismatched correlated randomness)"
        )
    if s.store is not None:
        s.pending = s.store.take(s.pos)
    s.pos += 1


def _zeros(shape: tuple[int, ...], binary: bool = False):
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    t = torch.zeros(shape, dtype=torch.long)
    if binary:
        return BinarySharedTensor.from_shares(t)
    return ArithmeticSharedTensor.from_shares(t, precision=0)


def _record(req: tuple):
    """Dry run: note the request and hand back zero shares of the right shapes (a valid
    "triple" 0 * 0 = 0; the dry run's values are garbage anyway, only shapes matter)."""
    _state.recorded.append((_state.phase or _state.block, req))
    kind = req[0]
    if kind == "additive":
        return _zeros(req[1]), _zeros(req[2]), _zeros(output_shape(req))
    if kind == "binary":
        return _zeros(req[1], True), _zeros(req[2], True), _zeros(output_shape(req), True)
    if kind in ("B2A", "edabits"):
        return _zeros(req[1]), _zeros(req[1], True)
    if kind == "edabits4":
        n = math.prod(req[1])
        return _zeros(req[1]), _zeros(req[1], True), torch.zeros(_edabits4_words(req[1]) - n, dtype=torch.long)
    if kind == "bitprods":
        return _zeros(output_shape(req)), _zeros(req[1], True)
    if kind == "bitand":
        return _zeros(output_shape(req), True), _zeros(tuple(req[1]) + (req[2],), True)
    return _zeros(req[1]), _zeros(req[1])


# ------------------------------------------------------------------ installation


def _intercept(req: tuple) -> tuple | None:
    """What every provider request does first: refuse after a mismatch; in a dry run, record
    it and answer with zero shares; in a replay, check it against the plan (and stage party
    0's stored share). None: the request goes on to CrypTen's code."""
    _check_poisoned()
    if _state.mode == "record":
        return _record(req)
    if _state.mode == "replay":
        _check(req)
    return None


_INSTALLED = False


def install() -> None:
    """Put the planning provider in place of CrypTen's TTP provider, teach party 0's
    ``ttp_request`` to read from the store, and give the dealer its batch request.
    Called by :func:`mpc.compat.apply`; without a planned block everything behaves as CrypTen."""
    global _INSTALLED
    if _INSTALLED:
        return
    import crypten.mpc as cmpc
    from crypten.mpc.provider import ttp_provider

    class PlannedTTP(ttp_provider.TrustedThirdParty):
        NAME = "TTP"

        def generate_additive_triple(self, size0, size1, op, device=None, *args, **kwargs):  # noqa: ANN001
            done = _intercept(request_of("additive", size0, size1, op, *args, **kwargs))
            return done or super().generate_additive_triple(size0, size1, op, device, *args, **kwargs)

        def square(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("square", size)) or super().square(size, device=device)

        def generate_binary_triple(self, size0, size1, device=None):  # noqa: ANN001
            done = _intercept(request_of("binary", size0, size1))
            return done or super().generate_binary_triple(size0, size1, device=device)

        def wrap_rng(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("wraps", size)) or super().wrap_rng(size, device=device)

        def B2A_rng(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("B2A", size)) or super().B2A_rng(size, device=device)

        def edabits_rng(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("edabits", size)) or _ttp_edabits_rng(size, device)

        def edabits4_rng(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("edabits4", size)) or _ttp_edabits4_rng(size, device)

        def bitprods_rng(self, size, device=None):  # noqa: ANN001
            return _intercept(request_of("bitprods", size)) or _ttp_bitprods_rng(size, device)

        def bitand_rng(self, size, V, subsets, device=None):  # noqa: ANN001
            return _intercept(request_of("bitand", size, V, subsets)) or _ttp_bitand_rng(size, V, subsets, device)

    vars(cmpc)["__SUPPORTED_PROVIDERS"]["TTP"] = PlannedTTP()

    client_cls = ttp_provider.TTPClient._TTPClient__TTPClient
    online_request = client_cls.ttp_request

    def ttp_request(self, func_name, device, *args, **kwargs):  # noqa: ANN001
        if _state.mode == "replay":
            share, _state.pending = _state.pending, None
            if share is None:
                raise PlanMismatch(f"party 0 asked the dealer for {func_name!r} during block {_state.block!r} "
                                   "without a planned request")
            return share
        if _state.mode == "record":
            raise PlanMismatch("a dry run must not reach the dealer")
        return online_request(self, func_name, device, *args, **kwargs)

    client_cls.ttp_request = ttp_request
    ttp_provider.TTPServer.batch = _dealer_batch
    ttp_provider.TTPServer.edabits = _dealer_edabits
    ttp_provider.TTPServer.edabits4 = _dealer_edabits4
    ttp_provider.TTPServer.bitprods = _dealer_bitprods
    ttp_provider.TTPServer.bitand = _dealer_bitand
    from crypten.mpc.provider import tfp_provider

    tfp_provider.TrustedFirstParty.edabits_rng = _tfp_edabits_rng
    tfp_provider.TrustedFirstParty.edabits4_rng = _tfp_edabits4_rng
    tfp_provider.TrustedFirstParty.bitprods_rng = _tfp_bitprods_rng
    tfp_provider.TrustedFirstParty.bitand_rng = _tfp_bitand_rng
    _INSTALLED = True


def _dealt(kind: str, args: tuple, mask_size, bitlength, share_size, binary: bool, device):  # noqa: ANN001
    """Every party's XOR shares of fresh masks (``mask_size``, ``bitlength`` bits) from its
    dealer-keyed stream, and its share of the material that depends on them: party 0's from the
    dealer (request ``kind`` with ``args``), the others' from the same stream (XOR shares if
    ``binary``, else additive). The pattern of CrypTen's ``B2A_rng``."""
    from crypten.common.rng import generate_kbit_random_tensor, generate_random_ring_element
    from crypten.mpc.provider.ttp_provider import TTPClient

    generator = TTPClient.get().get_generator(device=device)
    rB = generate_kbit_random_tensor(mask_size, bitlength=bitlength, generator=generator, device=device)
    if import_crypten().communicator.get().get_rank() == 0:
        share = TTPClient.get().ttp_request(kind, device, *args)
    elif binary:
        share = generate_kbit_random_tensor(share_size, generator=generator, device=device)
    else:
        share = generate_random_ring_element(share_size, generator=generator, device=device)
    return share, rB


def _ttp_edabits_rng(size, device=None):  # noqa: ANN001
    """A uniform ring element ``r`` shared arithmetically and bitwise (:mod:`mpc.comparison`).

    As CrypTen's ``B2A_rng``, with 64 bits instead of one: every party draws its XOR share of
    ``r`` from its dealer-keyed stream, parties 1.. their additive share too, and party 0's
    additive share comes from the dealer (:func:`_dealer_edabits`), who alone can add them up.
    """
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    rA, rB = _dealt("edabits", (size,), size, None, size, False, device)
    return ArithmeticSharedTensor.from_shares(rA, precision=0), BinarySharedTensor.from_shares(rB)


def _dealer_edabits(self, size):  # noqa: ANN001 - a TTPServer method
    """Party 0's additive share of ``r``, the XOR of every party's bitwise share."""
    r = self._get_binary_PRSS(size)
    return r - self._get_additive_PRSS(size, remove_rank=True)


def _ttp_edabits4_rng(size, device=None):  # noqa: ANN001
    """An edaBit (:func:`_ttp_edabits_rng`) and XOR shares of the products of each 4-bit group
    of its bits (:func:`mpc.comparison.group_products`): the carry tree's first level without
    an opening. Every party draws its XOR share of ``r`` from its dealer-keyed stream, parties
    1.. their additive share of ``r`` and their product shares too (one draw, uniform words
    either way); party 0's come from the dealer (:func:`_dealer_edabits4`)."""
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    size = torch.Size(size)
    n = size.numel()
    share, rB = _dealt("edabits4", (size,), size, None, (_edabits4_words(size),), False, device)
    return (ArithmeticSharedTensor.from_shares(share[:n].view(size), precision=0),
            BinarySharedTensor.from_shares(rB), share[n:])


def _dealer_edabits4(self, size):  # noqa: ANN001 - a TTPServer method
    """Party 0's additive share of ``r`` (the XOR of every party's bitwise share) and its XOR
    shares of ``r``'s group products, drawn in the parties' order (:func:`_ttp_edabits4_rng`)."""
    from crypten.common.rng import generate_random_ring_element

    from mpc.comparison import group_products

    size = torch.Size(size)
    n = size.numel()
    r = self._get_binary_PRSS(size).reshape(-1)
    rA, W = r.clone(), group_products(r).reshape(-1)
    for g in self._get_generators(device=self.device)[1:]:
        o = generate_random_ring_element((_edabits4_words(size),), generator=g, device=g.device)
        rA -= o[:n]
        W ^= o[n:]
    return torch.cat([rA, W])


def _tfp_edabits4_rng(self, size, device=None):  # noqa: ANN001 - a TrustedFirstParty method
    """The insecure TFP dealer's edaBits with group products: party 0 knows ``r``."""
    from crypten.common.rng import generate_random_ring_element
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    from mpc.comparison import group_products

    r = generate_random_ring_element(size, device=device)
    W = group_products(r.reshape(-1)).reshape(-1)
    W = W if import_crypten().communicator.get().get_rank() == 0 else torch.zeros_like(W)
    return ArithmeticSharedTensor(r, precision=0, src=0), BinarySharedTensor(r, src=0), W


def _ttp_bitprods_rng(size, device=None):  # noqa: ANN001
    """Random bits ``r`` (``..., D``) shared bitwise, with arithmetic shares of the products of
    every subset of each group's bits (``..., 2^D``; :mod:`mpc.bitprods`). As ``B2A_rng``:
    every party draws its XOR shares from its dealer-keyed stream, parties 1.. their additive
    shares too, and party 0's additive shares come from the dealer (:func:`_dealer_bitprods`)."""
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    from mpc.bitprods import check_width

    check_width(size)
    out = torch.Size(tuple(size)[:-1] + (1 << int(size[-1]),))
    R, rB = _dealt("bitprods", (size,), size, 1, out, False, device)
    return ArithmeticSharedTensor.from_shares(R, precision=0), BinarySharedTensor.from_shares(rB)


def _dealer_bitprods(self, size):  # noqa: ANN001 - a TTPServer method
    """Party 0's additive shares of every subset product of the XOR of the parties' bits."""
    from mpc.bitprods import check_width, subset_expand

    check_width(size)
    r = self._get_binary_PRSS(size, bitlength=1)
    R = subset_expand(torch.ones_like(r), r)
    return R - self._get_additive_PRSS(R.size(), remove_rank=True)


def _tfp_bitprods_rng(self, size, device=None):  # noqa: ANN001 - a TrustedFirstParty method
    """The insecure TFP dealer's bit-product tuples: party 0 knows ``r`` (as all its material)."""
    from crypten.common.rng import generate_kbit_random_tensor
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    from mpc.bitprods import check_width, subset_expand

    check_width(size)
    r = generate_kbit_random_tensor(size, bitlength=1, device=device)
    R = subset_expand(torch.ones_like(r), r)
    return ArithmeticSharedTensor(R, precision=0, src=0), BinarySharedTensor(r, src=0)


def _ttp_bitand_rng(size, V, subsets, device=None):  # noqa: ANN001
    """Binary bit-product tuples (:func:`mpc.bitprods.monomials`): ``V`` random mask words per
    element, XOR-shared, and XOR shares of the AND of every listed subset of them. Every party
    draws its mask shares, parties 1.. their product shares too, from their dealer-keyed
    streams; party 0's product shares come from the dealer (:func:`_dealer_bitand`)."""
    from crypten.mpc.primitives import BinarySharedTensor

    size, V, subsets = torch.Size(size), int(V), tuple(int(t) for t in subsets)
    output_shape(request_of("bitand", size, V, subsets))  # refuses malformed subsets
    R, rB = _dealt("bitand", (size, V, subsets), size + (V,), None, size + (len(subsets),), True, device)
    return BinarySharedTensor.from_shares(R), BinarySharedTensor.from_shares(rB)


def _dealer_bitand(self, size, V, subsets):  # noqa: ANN001 - a TTPServer method
    """Party 0's XOR shares of the subset ANDs of the XOR of the parties' mask words."""
    from mpc.bitprods import and_words

    size, V, subsets = torch.Size(size), int(V), tuple(int(t) for t in subsets)
    output_shape(request_of("bitand", size, V, subsets))
    r = self._get_binary_PRSS(size + (V,))
    R = and_words(r, subsets)
    return R ^ self._get_binary_PRSS(R.size(), remove_rank=True)


def _tfp_bitand_rng(self, size, V, subsets, device=None):  # noqa: ANN001 - a TrustedFirstParty method
    """The insecure TFP dealer's binary bit-product tuples: party 0 knows the masks."""
    from crypten.common.rng import generate_kbit_random_tensor
    from crypten.mpc.primitives import BinarySharedTensor

    from mpc.bitprods import and_words

    output_shape(request_of("bitand", size, V, subsets))  # refuses malformed subsets
    r = generate_kbit_random_tensor(torch.Size(size) + (int(V),), device=device)
    R = and_words(r, tuple(int(t) for t in subsets))
    return BinarySharedTensor(R, src=0), BinarySharedTensor(r, src=0)


def _tfp_edabits_rng(self, size, device=None):  # noqa: ANN001 - a TrustedFirstParty method
    """The insecure TFP dealer's edaBits: party 0 knows ``r`` (as with all its material)."""
    from crypten.common.rng import generate_random_ring_element
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    r = generate_random_ring_element(size, device=device)
    return ArithmeticSharedTensor(r, precision=0, src=0), BinarySharedTensor(r, src=0)


def validate_batch(requests: Any) -> tuple[list[tuple], list[int]]:
    """The dealer's check of a batch request, before it draws anything: a list of requests of
    known kinds and shapes, at most :data:`MAX_BATCH_WORDS` words in all. Returns the requests
    and the words of party 0's share of each."""
    if not isinstance(requests, (list, tuple)):
        raise ValueError("a dealer batch is a list of requests")
    reqs = [tuple(r) for r in requests]
    sizes = []
    for r in reqs:
        if not r or r[0] not in KINDS:
            raise ValueError(f"unknown dealer request {r!r}")
        sizes.append(math.prod(output_shape(r)))
    if len(reqs) > 1 and sum(sizes) > MAX_BATCH_WORDS:  # party 0 splits bigger blocks (one huge request: as CrypTen)
        raise ValueError(f"a dealer batch of {sum(sizes)} words is over the cap of {MAX_BATCH_WORDS}")
    return reqs, sizes


def _make(server, reqs: list[tuple]) -> torch.Tensor:  # noqa: ANN001 - a TTPServer
    """Party 0's shares of ``reqs``, in order, as one flat tensor (CrypTen's own per-request
    methods: every party's stream is consumed exactly as one request at a time would consume it)."""
    out = []
    for r in reqs:
        kind = r[0]
        if kind == "additive":
            _, size0, size1, op, extra, kw = r
            share = server.additive(torch.Size(size0), torch.Size(size1), op, *extra, **dict(kw))
        elif kind == "binary":
            share = server.binary(torch.Size(r[1]), torch.Size(r[2]))
        elif kind == "bitand":
            share = server.bitand(torch.Size(r[1]), r[2], r[3])
        else:
            share = getattr(server, kind)(torch.Size(r[1]))
        out.append(share.reshape(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _dealer_batch(self, requests):  # noqa: ANN001 - a TTPServer method
    """The dealer's side of the offline phase: party 0's shares of every planned request, in
    plan order, as one flat tensor (what :func:`stream_batch` sends)."""
    reqs, _ = validate_batch(requests)
    return _make(self, reqs)


def stream_chunks(words: list[int]) -> list[tuple[int, int]]:
    """How a batch of requests with these word counts travels: ``(first, end)`` request indices
    per chunk, the same at the dealer and party 0. Chunks end at request boundaries, once they
    hold :data:`STREAM_FIRST_WORDS` words, then twice that, ... up to :data:`STREAM_MAX_WORDS`."""
    chunks: list[tuple[int, int]] = []
    lo, total, target = 0, 0, STREAM_FIRST_WORDS
    for i, n in enumerate(words):
        total += n
        if total >= target:
            chunks.append((lo, i + 1))
            lo, total, target = i + 1, 0, min(2 * target, STREAM_MAX_WORDS)
    if lo < len(words):
        chunks.append((lo, len(words)))
    return chunks


def stream_batch(server, requests: Any, made: torch.Tensor | None = None) -> list:  # noqa: ANN001
    """The dealer answers party 0's batch request in :func:`stream_chunks`, each sent as soon as
    it is made (or all at once from ``made``, the whole batch made ahead by
    :mod:`mpc.lookahead`): party 0 starts the block when the first chunk is in and the rest
    arrives while it computes. Everything is checked before anything is drawn. Returns the sends
    in flight (with their tensors); wait for them before the next request is served."""
    import torch.distributed as dist

    reqs, words = validate_batch(requests)
    if made is not None and made.numel() != sum(words):
        raise RuntimeError(f"the batch made ahead has {made.numel()} words, the request needs {sum(words)}")
    sends, at = [], 0
    for lo, hi in stream_chunks(words):
        n = sum(words[lo:hi])
        part = made[at : at + n] if made is not None else _make(server, reqs[lo:hi])
        if part.numel() != n or part.dtype != torch.long:  # party 0 receives exactly n int64 words
            raise RuntimeError(f"the dealer made {part.numel()} {part.dtype} words for a chunk of {n} int64 words")
        at += n
        if n:
            sends.append((dist.isend(part, dst=0, group=server.comm_group, tag=STREAM_TAG), part))
    return sends


# ------------------------------------------------------------------ dry run


class _NullCommunicator:
    """Party 0's communicator during a dry run: right shapes, no messages, no counts."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.rank = 0

    def get_world_size(self) -> int:
        return self.world_size

    def get_rank(self) -> int:
        return 0

    def get_ttp_rank(self) -> int:
        return self.world_size

    def get_communication_stats(self) -> dict:
        return {"rounds": 0, "bytes": 0, "time": 0.0}

    def _log_communication(self, nelement) -> None:  # noqa: ANN001
        pass

    def all_reduce(self, input, op=None, batched=False):  # noqa: ANN001, A002
        return [x.clone() for x in input] if batched else input.clone()

    def reduce(self, input, dst, op=None, batched=False):  # noqa: ANN001, A002
        if dst != 0:
            return None
        return [x.clone() for x in input] if batched else input.clone()

    def broadcast(self, input, src, group=None, batched=False):  # noqa: ANN001, A002
        return input

    def gather(self, tensor, dst):  # noqa: ANN001
        return [tensor.clone() for _ in range(self.world_size)] if dst == 0 else [None]

    def all_gather(self, tensor):  # noqa: ANN001
        return [tensor.clone() for _ in range(self.world_size)]

    def barrier(self) -> None:
        pass

    def broadcast_obj(self, obj, src, group=None):  # noqa: ANN001
        if src != 0:
            raise PlanMismatch("a planned block receives an object from another party; it cannot be dry-run")
        return obj

    def _no_point_to_point(self, *args, **kwargs):  # noqa: ANN002, ANN003
        raise PlanMismatch("a planned block uses point-to-point messages; it cannot be dry-run")

    send = recv = isend = irecv = scatter = send_obj = recv_obj = _no_point_to_point


@contextmanager
def _dry_world() -> Iterator[None]:
    """Party 0 alone, with throwaway streams: nothing it does here reaches a peer, the dealer,
    or any stream it shares with them."""
    ct = import_crypten()
    from crypten.communicator import DistributedCommunicator

    from mpc import prg, stats
    from mpc.compat import _AnyDevice

    real = DistributedCommunicator.instance
    saved = dict(ct.generators)
    listeners = list(stats.phase_listeners)
    DistributedCommunicator.instance = _NullCommunicator(real.get_world_size())
    for name in saved:
        ct.generators[name] = _AnyDevice({torch.device("cpu"): prg.ChaChaGenerator()})
    stats.phase_listeners.clear()  # fault injection and failure reports follow the online run
    _state.mode, _state.recorded = "record", []
    try:
        yield
    finally:
        _state.mode, _state.phase = None, ""
        DistributedCommunicator.instance = real
        ct.generators.update(saved)
        stats.phase_listeners[:] = listeners


def _recording_log():
    from mpc.stats import CommLog

    class RecordingLog(CommLog):
        @contextmanager
        def phase(self, name: str):
            outer, _state.phase = _state.phase, name
            try:
                with super().phase(name) as current:
                    yield current
            finally:
                _state.phase = outer

    return RecordingLog()


# ------------------------------------------------------------------ blocks


def in_block() -> bool:
    """True inside a planned block (its dry run or its replay), where every dealer request is
    the plan's."""
    return _state.mode is not None


def _active() -> bool:
    if not _ENABLED or in_block():  # nested blocks run inside the outer one
        return False
    ct = import_crypten()
    if ct.cfg.mpc.provider != "TTP" or not ct.communicator.is_initialized():
        return False
    return ct.communicator.get().get_world_size() >= 2


def _counters() -> tuple[int, int]:
    s = import_crypten().communicator.get().get_communication_stats()
    return int(s["rounds"]), int(s["bytes"])


def planned(block: str, fn: Callable[[Any], T], log, key: Any = None) -> T:  # noqa: ANN001
    """Run ``fn(log)`` (a data-oblivious block of the protocol, at every party alike) with the
    dealer's material for it made offline; see the module docstring. The offline cost is added
    to ``log``'s phases as ``offline_seconds`` / ``offline_rounds`` / ``offline_bytes``.

    ``key``: optional hashable description of everything public the block's requests depend on
    (shapes, candidates, iteration count, ...). With :func:`set_plan_cache` on, every party keeps
    the plan under it, and a later block with the same key skips the dry run and the plan
    broadcast; only the dealer's batch is fetched again. A key that misses something (or code
    that changed since) is caught like any other mismatch, and ends the party world.
    """
    if not _active():
        return fn(log)
    ct = import_crypten()
    comm = ct.communicator.get()
    rank = comm.get_rank()
    # the comparison protocol is module state, not an argument: it is part of every key
    cache_key = None if key is None or not _PLAN_CACHE else (block, comm.get_world_size(), comparison.method(), key)
    # phase -> [seconds, rounds, bytes, seconds inside the block's own timing (waits for chunks)]
    offline: dict[str, list[float]] = {}

    def charge(phase: str, seconds: float, rounds: int = 0, nbytes: int = 0, inside: bool = False) -> None:
        row = offline.setdefault(phase, [0.0, 0, 0, 0.0])
        row[3 if inside else 0] += seconds
        row[1] += rounds
        row[2] += nbytes

    tagged = _state.plans.get(cache_key) if cache_key is not None else None
    if tagged is None:
        tagged = _make_plan(block, fn, comm, rank, charge)
        if tagged is None:  # the dry run failed: nothing was drawn yet, run the block as CrypTen does
            _charge_log(log, offline)
            return fn(log)
        if cache_key is not None:
            _state.plans[cache_key] = tagged
    plan = [r for _, r in tagged]
    store = _fetch(tagged, charge) if rank == 0 else None
    _state.mode, _state.block, _state.plan, _state.pos, _state.store = "replay", block, plan, 0, store
    try:
        out = fn(log)
        if _state.pos != len(plan):
            raise _fail(
                f"offline dealer plan mismatch in block {block!r}: the protocol made {_state.pos} of the "
                f"{len(plan)} planned requests; stopping"
            )
    except BaseException as err:
        if _state.poisoned is None:  # the dealer drew the whole block, the parties only part of it
            _fail(f"block {block!r} stopped half-way ({type(err).__name__}: {err}), so the dealer's streams "
                  "are ahead of the parties'")
        raise
    finally:
        if store is not None:
            _ORPHANED.extend(store.in_flight())  # none unless the block failed
        _state.mode, _state.block, _state.plan, _state.pos = None, "", [], 0
        _state.store, _state.pending = None, None
    _charge_log(log, offline)
    return out


def _make_plan(block: str, fn, comm, rank: int, charge) -> list[tuple[str, tuple]] | None:  # noqa: ANN001
    """Party 0 dry-runs the block; every party receives its plan as ``[(phase, request)]``.

    None at every party when the dry run raised (a block that checks its inputs, say): the
    block then runs on CrypTen's online path, where the same error (or none) arises at every
    party with its own type and message; no stream has been touched."""
    message: Any = None
    if rank == 0:
        rec = _recording_log()
        t0 = time.perf_counter()
        try:
            with _dry_world():
                fn(rec)
            message = ("plan", [list(p) for p in _state.recorded])
        except Exception as err:  # noqa: BLE001 - every party must hear why
            message = ("error", f"the dry run of block {block!r} failed: {type(err).__name__}: {err}")
        finally:
            recorded_phases = {p.name: p.seconds for p in rec.phases.values()}
            _state.recorded = []
        dry = time.perf_counter() - t0
        for name, seconds in recorded_phases.items():
            charge(name, seconds)
        charge(block, max(0.0, dry - sum(recorded_phases.values())))
    r0, b0, t0 = *_counters(), time.perf_counter()
    message = comm.broadcast_obj(message, 0)  # public shapes only (or why there are none)
    if message[0] != "plan":
        _logger.warning("%s; running it on CrypTen's online dealer path", message[1])
        return None
    tagged = [(str(p), tuple(r)) for p, r in message[1]]
    first = tagged[0][0] if tagged else block
    r1, b1 = _counters()
    charge(first, time.perf_counter() - t0, r1 - r0, b1 - b0)
    return tagged


class Incoming:
    """Party 0's dealer-made shares of one block, in plan order, as they arrive.

    The dealer streams a batch in chunks (:func:`stream_batch`); each share is a view into its
    chunk's receive buffer, and :meth:`take` waits for that chunk only when the block needs
    it, so the transfer overlaps the block's online phase instead of preceding it. Time spent
    waiting is charged to the phase of the request that waited (offline seconds, inside the
    phase's wall time)."""

    def __init__(self, phases: list[str], charge) -> None:  # noqa: ANN001
        self._phases = phases
        self._charge = charge
        self._shares: list[torch.Tensor | None] = []
        self._chunk: list[int] = []
        self._works: list = []

    def add_chunk(self, buffer: torch.Tensor, shapes: list[tuple[int, ...]], work) -> None:  # noqa: ANN001
        """One chunk's receive buffer (``work``: its receive in flight) and its shares' shapes."""
        self._works.append(work)
        at = 0
        for shape in shapes:
            n = math.prod(shape)
            self._shares.append(buffer[at : at + n].view(shape))
            self._chunk.append(len(self._works) - 1)
            at += n

    def take(self, i: int) -> torch.Tensor:
        """Share ``i`` (each is handed out once), after its chunk has arrived."""
        c = self._chunk[i]
        if self._works[c] is not None:
            t0 = time.perf_counter()
            self._works[c].wait()
            self._works[c] = None
            self._charge(self._phases[i], time.perf_counter() - t0, inside=True)
        share, self._shares[i] = self._shares[i], None
        if share is None:
            raise PlanMismatch(f"the dealer's share {i + 1} of this block was used twice")
        return share

    def in_flight(self) -> list:
        return [w for w in self._works if w is not None]


#: receives left in flight by a block that failed (kept alive with their buffers until
#: :func:`reset`; the failure poisoned the party world: see :func:`_fail`)
_ORPHANED: list = []


def _fetch(tagged: list[tuple[str, tuple]], charge) -> Incoming:  # noqa: ANN001
    """Party 0: ask the dealer for the whole plan in one batch request (split only when it
    needs more than :data:`MAX_BATCH_WORDS`) and post the receives of its chunks
    (:func:`stream_chunks`); returns at once, the shares arrive while the block runs. Each
    request's rounds and bytes (the request, then its chunks as one round) are charged to the
    phase of its first share, where the block starts."""
    import torch.distributed as dist
    from crypten.mpc.provider.ttp_provider import TTPClient

    ct = import_crypten()
    comm = ct.communicator.get()
    client = TTPClient.get()
    ttp_rank = comm.get_ttp_rank()
    shapes = [output_shape(r) for _, r in tagged]
    words = [math.prod(s) for s in shapes]
    batches: list[tuple[int, int]] = []  # start, end
    start, total = 0, 0
    for i in range(len(tagged)):
        if i > start and total + words[i] > MAX_BATCH_WORDS:
            batches.append((start, i))
            start, total = i, 0
        total += words[i]
    if tagged:
        batches.append((start, len(tagged)))
    store = Incoming([p for p, _ in tagged], charge)
    for lo, hi in batches:
        r0, b0, t0 = *_counters(), time.perf_counter()
        message = {"function": "batch", "device": None, "args": ([r for _, r in tagged[lo:hi]],), "kwargs": {}}
        comm.send_obj(message, ttp_rank, client.ttp_group)
        for clo, chi in stream_chunks(words[lo:hi]):
            n = sum(words[lo + clo : lo + chi])
            buffer = torch.empty(n, dtype=torch.long)
            work = dist.irecv(buffer, src=ttp_rank, group=client.comm_group, tag=STREAM_TAG) if n else None
            store.add_chunk(buffer, shapes[lo + clo : lo + chi], work)
        if ct.cfg.communicator.verbose:
            comm._log_communication(sum(words[lo:hi]))  # the chunks: one round, party 0 receives
        r1, b1 = _counters()
        charge(tagged[lo][0], time.perf_counter() - t0, r1 - r0, b1 - b0)
    return store


def _charge_log(log, offline: dict[str, list[float]]) -> None:  # noqa: ANN001
    from mpc.stats import PhaseStats

    for name, (seconds, rounds, nbytes, inside) in offline.items():
        # waits inside the block are already in the phase's wall time: offline, not added again
        extra = PhaseStats(name, seconds=seconds, rounds=int(rounds), bytes=int(nbytes),
                           offline_seconds=seconds + inside, offline_rounds=int(rounds), offline_bytes=int(nbytes))
        log.phases.setdefault(name, PhaseStats(name)).add(extra)
