"""Party functions for the security tests (module level so run_parties can pickle them).

The leaky variants are *deliberate* protocol bugs, injected by patching one function inside
the party process, so the tests can show that each detector fires on a real leak.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mpc import secure_ops as so
from mpc.secpc import SecPCConfig, secpc_round


def _mine(owners, rank):
    return [i for i, o in enumerate(owners) if o == rank]


# ----------------------------------------------------------------- randomness


def randomness(party):
    """Types of every generator this party draws from, plus values that depend on them."""
    from crypten.mpc.provider.ttp_provider import TTPClient

    from mpc.compat import import_crypten
    from mpc.prg import generate_random_ring_element

    ct = import_crypten()
    kinds = sorted({type(g).__name__ for gens in ct.generators.values() for g in gens.values()})
    kinds.append(type(TTPClient.get().generator).__name__)
    refused = False
    try:
        generate_random_ring_element((2,), generator=torch.Generator().manual_seed(0))
    except TypeError:
        refused = True
    provider = ct.mpc.get_default_provider()
    a, b, c = provider.generate_additive_triple((64,), (64,), "mul")
    zero_share = ct.cryptensor(torch.zeros(64)).share.clone()
    return dict(kinds=sorted(set(kinds)), refused=refused, triple_a=a.share.clone(), zero=zero_share)


# ----------------------------------------------------------------- network


def _listening_sockets() -> list[str]:
    """Local addresses of the TCP sockets this process listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in inodes:  # LISTEN
                out.append(_addr(local.split(":")[0], width))
    return out


def _addr(hexaddr: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hexaddr)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc prints IPv6 as four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped or addr)


def listening(party):
    """What this party listens on, after a multiplication (every pair connected)."""
    from mpc.compat import import_crypten

    ct = import_crypten()
    x = ct.cryptensor(torch.ones(3))
    (x * x).get_plain_text()
    return _listening_sockets()


# ----------------------------------------------------------------- ||x||^2 tampering


def tampered_k(party, X, P, owners, cfg, attacker, shift):
    """The chosen k when ``attacker`` adds ``shift`` to column 0 of its fixed-point shared
    input (where the old protocol put the client-supplied ||x_i||^2)."""
    honest = secpc_round(party, X[_mine(owners, party.rank)], P[_mine(owners, party.rank)], owners, cfg).k
    original = so.share_rows

    def share_rows(x_local, owners_, rank, precision):
        if precision is None and rank == attacker:
            x_local = x_local.clone()
            x_local[:, 0] += shift
        return original(x_local, owners_, rank, precision)

    so.share_rows = share_rows
    try:
        attacked = secpc_round(party, X[_mine(owners, party.rank)], P[_mine(owners, party.rank)], owners, cfg).k
    finally:
        so.share_rows = original
    return honest, attacked


# ----------------------------------------------------------------- transcripts


def _reduce_reveal(x, owners, rank):
    """The old, leaky reveal: CrypTen's get_plain_text(dst=p), a gloo reduce."""
    out = None
    for p in sorted(set(owners)):
        idx = torch.tensor([i for i, o in enumerate(owners) if o == p])
        val = x[idx].get_plain_text(dst=p)
        if p == party_rank(x):
            out = val
    return out


def party_rank(_x) -> int:
    from mpc.compat import import_crypten

    return import_crypten().communicator.get().get_rank()


@contextlib.contextmanager
def leak(variant: str, rank: int, X_own: torch.Tensor):
    """Install one deliberate leak (or none) for the duration of a round."""
    import mpc.clustering as clustering
    import mpc.secpc as secpc

    saved = []

    def patch(mod, name, value):
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)

    if variant == "reduce_reveal":
        patch(so, "reveal_to_owners", _reduce_reveal)
    elif variant == "open_distance":
        kmeans = secpc.kmeans_on_shares

        def leaky_kmeans(*a, **k):
            out = kmeans(*a, **k)
            out.Xi.matmul(out.state.SN.t()).get_plain_text()  # x_i . S_j opened to everyone
            return out

        patch(secpc, "kmeans_on_shares", leaky_kmeans)
    elif variant == "labels_every_iter":
        assign = clustering._assign

        def leaky_assign(*a, **k):
            A = assign(*a, **k)
            A.get_plain_text()  # every party learns every label, every iteration
            return A

        patch(clustering, "_assign", leaky_assign)
    elif variant == "plaintext_row":
        check = secpc.check_inputs

        def leaky_check(rank_, x_local, p_local, owners):
            import torch.distributed as dist

            from mpc import layout as lay

            check(rank_, x_local, p_local, owners)
            buf = lay.quantize(X_own[:1], 16)
            if rank_ == 0:
                dist.send(buf, dst=1)
            elif rank_ == 1:
                dist.recv(buf, src=0)

        patch(secpc, "check_inputs", leaky_check)
    elif variant == "unmasked_comparison":
        from mpc import comparison

        def unmasked(x, also_open=(), group_products=False):  # comparisons open x itself: r = 0, not an edaBit
            from crypten.mpc.primitives import BinarySharedTensor

            from mpc.compat import import_crypten

            opened = import_crypten().communicator.get().all_reduce([x.share.clone(), *also_open], batched=True)
            zero = BinarySharedTensor.from_shares(torch.zeros_like(x.share))
            if not group_products:
                return opened[0], zero, opened[1:]
            W = comparison.group_products(torch.zeros(x.share.numel(), dtype=torch.long))  # r = 0: all zero
            return opened[0], zero, opened[1:], W

        patch(comparison, "open_masked", unmasked)
    elif variant != "real":
        raise ValueError(variant)
    try:
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)


def transcripts(party, inputs, owners, cfg, variants, watch):
    """For each variant and each (X, P) in ``inputs``: the watcher's messages, and every
    party's own encoded inputs/outputs (the victim's are the plaintext the watcher must not see)."""
    from mpc.transcript import Recorder

    mine = _mine(owners, party.rank)
    out = {}
    for variant in variants:
        runs = []
        for X, P in inputs:
            rec = Recorder()
            with leak(variant, party.rank, X[mine]):
                ctx = rec.active() if party.rank == watch else contextlib.nullcontext()
                with ctx:
                    res = secpc_round(party, X[mine], P[mine], owners, cfg)
            secrets = np.concatenate([
                torch.round(X[mine].double() * 2**16).long().numpy().ravel(),
                torch.round(P[mine].double() * 2**16).long().numpy().ravel(),
                torch.round(res.own_rows.double() * 2**16).long().numpy().ravel(),
            ])
            runs.append(dict(k=res.k, messages=rec.messages() if party.rank == watch else None, secrets=secrets))
        out[variant] = runs
    return out


def config(**kw) -> SecPCConfig:
    base = dict(k_min=2, k_max=3, iters=3, seed=0, restarts=1)
    base.update(kw)
    return SecPCConfig(**base)
