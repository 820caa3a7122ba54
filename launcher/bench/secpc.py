"""``mpirun -np W python -m launcher bench secpc --clients N --topology servers|peer``

One full adaptive SecPC round (share, Lloyd for every candidate k with restarts, silhouette,
k, aggregation, output) on public Gaussian blobs, in either topology, checked against the
plaintext reference (:func:`mpc.reference.secpc_reference`) on the same inputs. World size:

* ``peer``: ``N + 1`` (every client a CrypTen party, plus the TTP dealer);
* ``servers``: ``R + S + 1`` (R client ranks that host the N clients round-robin, ``--servers S``
  compute parties, the dealer; see :class:`mpc.servers.ServerLayout`).

World rank 0 (a client rank) prints one JSON object: ``seconds`` (the slowest client's wall time from sharing
to holding its output), ``rounds`` (CrypTen's round counter at a compute party other than
party 0, plus the two client message rounds in ``servers``), ``rounds_party0`` (party 0 also
counts its dealer requests: 3 per online request on CrypTen's path, 2 per streamed batch), ``rounds_per_lloyd_iter``, ``mb_per_compute_party`` (bytes a
compute party sends: to the other parties, and in ``servers`` to the clients),
``mb_per_client`` (bytes one client sends), ``offline_seconds`` / ``offline_rounds_party0`` (the
dealer's offline phase at compute party 0, :mod:`mpc.preprocessing`: dry runs, plan broadcast,
batch requests, waits for their chunks; it runs inline, so it is part of ``seconds``), ``online_seconds`` (``seconds``
minus it), ``online_rounds_party0``, ``agreement`` (share of labels
equal to the reference's after relabelling, see :func:`_agreement` for why), ``max_abs_error`` (aggregates vs the reference), ``k`` and
``reference_k``.

``--baseline`` runs the round a second time in the same party world, on the same inputs, on
CrypTen's path: the online dealer (party 0 asks the dealer once per triple, square, binary
triple, wraps and B2A bit) and CrypTen's comparisons (A2B with a tree of adders, rounds
growing with log P), and adds ``baseline_seconds``, ``baseline_rounds_party0``, ... beside the
offline-dealer figures, plus ``same_k`` and ``same_partition`` between the two runs. The
offline-dealer run goes first, so any warm-up cost of the process falls on it, not on the
baseline. ``--no-offline`` runs only CrypTen's path. ``--comparison crypten`` keeps CrypTen's
comparisons in the new path and ``--ring`` CrypTen's ring all-reduce for openings (to tell apart
the gains of the offline dealer, the edaBits comparisons, :mod:`mpc.comparison`, and the
one-hop openings, :mod:`mpc.transport`). ``--repeat N`` runs the round N times: ``seconds``,
``offline_seconds`` are then medians over the warm runs (all but the first; ``online_seconds``
their difference; ``first_*``: the first run, ``seconds_all``: every run), the counters and per-phase breakdowns the last run's; the
later runs reuse the offline dealer's plans (no dry run), as the launcher's later rounds do,
unless ``--no-reuse-plans``. ``--baseline-repeat B`` runs the baseline B times after them
(``baseline_seconds``: the median, ``baseline_seconds_all``: every run): on a shared, noisy
machine a ratio of two single runs moves by a quarter either way, medians by much less. The dealer makes its
next batch while the parties compute (:mod:`mpc.lookahead`) unless ``--no-lookahead``;
``dealer_lookahead`` gives its counters so far (hits, misses, batches made ahead, its seconds
on them), asked for by compute party 0 after the reported run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import torch


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m launcher bench secpc")
    ap.add_argument("--clients", type=int, required=True, help="N clients (rows)")
    ap.add_argument("--topology", choices=("servers", "peer"), default="servers")
    ap.add_argument("--servers", type=int, default=3, help="compute parties (servers topology)")
    ap.add_argument("--dim", type=int, default=64, help="reduced row dimension m")
    ap.add_argument("--prompt-dim", type=int, default=256, help="flattened domain prompt size d")
    ap.add_argument("--true-k", type=int, default=4, help="blobs in the data")
    ap.add_argument("--k-min", type=int, default=2)
    ap.add_argument("--k-max", type=int, default=6)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, default=0.6)
    ap.add_argument("--wait-s", type=float, default=600, help="longest wait for a message from a peer")
    ap.add_argument("--baseline", action="store_true",
                    help="also run CrypTen's online dealer path (one request per triple at party 0) in the same "
                         "process on the same inputs, after the offline-dealer run, and print both")
    ap.add_argument("--no-offline", action="store_true",
                    help="run only CrypTen's path (online dealer, CrypTen's comparisons)")
    ap.add_argument("--ring", action="store_true",
                    help="open with gloo's ring all-reduce in the new path too (mpc.transport), as CrypTen does")
    ap.add_argument("--comparison", choices=("edabits", "crypten"), default="edabits",
                    help="comparison protocol of the new path (mpc.comparison); the baseline always uses CrypTen's")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the round this many times (same inputs, same party world) before the baseline; the "
                         "times are medians over the runs after the first, the counters the last run's, "
                         "first_seconds / first_offline_seconds the first run's")
    ap.add_argument("--baseline-repeat", type=int, default=1,
                    help="with --baseline: run the baseline this many times; baseline_seconds is their median")
    ap.add_argument("--reuse-plans", action=argparse.BooleanOptionalAction, default=True,
                    help="keep the offline dealer's plans between runs, as the launcher does (mpc.reuse_plans): "
                         "with --repeat, later runs make no dry run (default: on)")
    ap.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=True,
                    help="the dealer makes its next batch while the parties compute (mpc.lookahead; default: on)")
    return ap.parse_args(argv)


def blobs(n: int, m: int, d: int, k: int, seed: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Public test data: unit rows around ``k`` centres and small prompts."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, m, generator=g, dtype=torch.float64)
    X = centres[torch.arange(n) % k] + spread * torch.randn(n, m, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True)
    P = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.1
    return X.float(), P.float()


def main(argv: list[str]) -> int:
    args = parse(argv)
    from mpi4py import MPI

    from mpc import wire
    from mpc.layout import SecPCConfig, quant_bits
    from mpc.reference import secpc_reference

    world = MPI.COMM_WORLD
    X, P = blobs(args.clients, args.dim, args.prompt_dim, args.true_k, args.seed, args.spread)
    config = SecPCConfig(args.k_min, args.k_max, args.iters, args.seed, restarts=args.restarts,
                         reveal_own_assignment=True)
    run = _servers if args.topology == "servers" else _peer
    if args.repeat < 1 or args.baseline_repeat < 1:
        raise SystemExit("--repeat and --baseline-repeat must be at least 1")
    if args.baseline_repeat > 1 and not args.baseline:
        raise SystemExit("--baseline-repeat needs --baseline")
    modes = [not args.no_offline] * args.repeat + [False] * (args.baseline_repeat if args.baseline else 0)
    try:
        mine = run(args, world, X, P, config, modes)  # per mode: this rank's labels, rows, stats, seconds
    except BaseException:  # a rank that fails must end the job now, not hang in MPI_Finalize
        import traceback

        traceback.print_exc()
        world.Abort(1)
    parts = wire.gather(world, mine, root=0)
    if world.Get_rank() != 0:
        return 0
    ref = secpc_reference(X.double(), P.double(), config, bits=quant_bits(args.clients))
    runs = [_summary(args, world, [p[r] for p in parts], ref) for r in range(len(modes))]
    new, baseline = runs[: args.repeat], runs[args.repeat :]
    out = dict(new[-1])
    warm = new[1:] or new
    for key in ("seconds", "offline_seconds"):
        out[key] = _median([r[key] for r in warm])
    out["online_seconds"] = round(out["seconds"] - out["offline_seconds"], 3)
    out["offline_dealer"] = modes[0]
    out["comparison"] = args.comparison if modes[0] else "crypten"
    out["direct_openings"] = bool(modes[0] and not args.ring)
    if args.repeat > 1:
        first = new[0]
        out.update(repeat=args.repeat, seconds_all=[r["seconds"] for r in new], first_seconds=first["seconds"],
                   first_offline_seconds=first["offline_seconds"], first_rounds_party0=first["rounds_party0"],
                   first_k=first["k"], first_agreement=first["agreement"])
    if args.baseline:
        base = baseline[-1]
        for key in ("rounds", "rounds_party0", "rounds_per_lloyd_iter", "rounds_per_lloyd_iter_party0",
                    "agreement", "max_abs_error", "k", "mb_per_compute_party"):
            out["baseline_" + key] = base[key]
        out["baseline_seconds"] = _median([r["seconds"] for r in baseline])
        out["baseline_seconds_all"] = [r["seconds"] for r in baseline]
        out["speedup"] = round(out["baseline_seconds"] / out["seconds"], 2) if out["seconds"] else None
        out["ratio"] = round(out["seconds"] / out["baseline_seconds"], 3) if out["baseline_seconds"] else None
        out["same_k"] = all(r["k"] == out["k"] for r in baseline)
        out["same_partition"] = all(_same_partition(parts, args.repeat - 1, r) for r in range(args.repeat, len(modes)))
    print(json.dumps(out), flush=True)
    return 0


@contextmanager
def _path(new: bool, comparison_method: str, direct: bool = True) -> Iterator[None]:
    """The new path (offline dealer, ``comparison_method``, openings in one hop if ``direct``)
    or CrypTen's (online dealer, its own comparisons, gloo's ring all-reduce), at every party
    alike."""
    from mpc import comparison, preprocessing, transport

    with preprocessing.enabled(new), comparison.using(comparison_method if new else "crypten"), \
            transport.using(new and direct):
        yield


def _same_partition(parts: list, a: int, b: int) -> bool:
    """Do runs ``a`` and ``b`` split the clients the same way (label names aside)?"""
    pairs = {(p[a]["labels"][c], p[b]["labels"].get(c, -1)) for p in parts for c in p[a]["labels"]}
    return len({x for x, _ in pairs}) == len({y for _, y in pairs}) == len(pairs)


def _median(values: list[float]) -> float:
    import statistics

    return round(statistics.median(values), 3)


def _summary(args, world, parts: list, ref) -> dict:
    """The JSON figures of one run (``parts``: every rank's report of that run)."""
    labels, rows, stats, seconds, client_bytes = {}, {}, [], [], []
    for part in parts:
        labels.update({int(c): v for c, v in part["labels"].items()})
        rows.update({int(c): torch.tensor(v) for c, v in part["rows"].items()})
        stats.append(part["stats"])
        if part["seconds"] is not None:
            seconds.append(part["seconds"])
        client_bytes += part["client_bytes"]
    secure = [labels.get(i, -1) for i in range(args.clients)]
    agree, exact = _agreement(secure, ref.labels.tolist(), ref.k)
    err = max(float((rows[i].double() - ref.rows[i]).abs().max()) for i in rows) if rows else float("nan")
    first = world.Get_size() - (args.servers + 1) if args.topology == "servers" else 0
    s0, s1 = stats[first], stats[first + 1]  # compute party 0 and another compute party
    extra = 2 if args.topology == "servers" else 0  # clients' share message and output message
    p0 = s0["total"]
    out = {
        "bench": "secpc",
        "topology": args.topology,
        "clients": args.clients,
        "compute_parties": args.servers if args.topology == "servers" else args.clients,
        "client_ranks": first if args.topology == "servers" else args.clients,
        "dim": args.dim,
        "prompt_dim": args.prompt_dim,
        "k_range": [args.k_min, args.k_max],
        "restarts": args.restarts,
        "iters": args.iters,
        "seconds": round(max(seconds), 3),
        "offline_seconds": round(p0.get("offline_seconds", 0.0), 3),
        "online_seconds": round(max(seconds) - p0.get("offline_seconds", 0.0), 3),
        "rounds": int(s1["total"]["rounds"]) + extra,
        "rounds_party0": int(s0["total"]["rounds"]) + extra,
        "offline_rounds_party0": int(p0.get("offline_rounds", 0)),
        "online_rounds_party0": int(p0["rounds"]) - int(p0.get("offline_rounds", 0)) + extra,
        "offline_mb_party0": round(p0.get("offline_bytes", 0) / 1e6, 3),
        "rounds_per_lloyd_iter": round(_lloyd_rounds(s1) / args.iters, 2),
        "rounds_per_lloyd_iter_party0": round(_lloyd_rounds(s0) / args.iters, 2),
        "rounds_by_phase": {k: int(v["rounds"]) for k, v in s1.items() if isinstance(v, dict) and "rounds" in v},
        "seconds_by_phase": {k: round(float(v["seconds"]), 3) for k, v in s1.items()
                             if isinstance(v, dict) and "seconds" in v},
        "mb_per_compute_party": round(_sent(s1) / 1e6, 3),
        "mb_per_client": round(sum(client_bytes) / len(client_bytes) / 1e6, 4),
        "agreement": agree,
        "agreement_without_relabelling": exact,
        "max_abs_error": err,
        "k": _k(parts),
        "reference_k": ref.k,
        "offline_seconds_by_phase": {k: round(v.get("offline_seconds", 0.0), 3) for k, v in s0.items()
                                     if isinstance(v, dict) and "rounds" in v},
        "dealer_lookahead": parts[first].get("dealer_ahead"),
    }
    return out


def _agreement(secure: list[int], reference: list[int], k: int) -> tuple[float, float]:
    """Share of rows whose label equals the reference's, after the best relabelling, and before.

    Ties: restarts that reach the same partition (in another label order) have exactly equal
    silhouettes; the reference takes the first, the secure comparison of the fixed-point scores
    may take another. The partition and every aggregate are then the same and only the label
    names differ, so labels are matched first (Hungarian, :func:`scipy.optimize.linear_sum_assignment`).
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    n = len(reference)
    size = max(k, max(secure) + 1, 1)
    overlap = np.zeros((size, size))
    for s_, r_ in zip(secure, reference):
        if s_ >= 0:
            overlap[s_, r_] += 1
    rows, cols = linear_sum_assignment(-overlap)
    matched = overlap[rows, cols].sum()
    exact = sum(int(s_ == r_) for s_, r_ in zip(secure, reference))
    return float(matched / n), float(exact / n)


def _lloyd_rounds(stats: dict) -> int:
    return int(stats.get("lloyd", {}).get("rounds", 0) + stats.get("assign_final", {}).get("rounds", 0))


def _sent(stats: dict) -> int:
    return int(stats["total"]["bytes"]) + int(stats.get("clients", {}).get("bytes_sent", 0))


def _k(parts: list) -> int:
    ks = {p["k"] for p in parts if p["k"] is not None}
    if len(ks) != 1:
        raise RuntimeError(f"parties disagree on k: {ks}")
    return ks.pop()


def _no_part() -> dict:
    """What a rank that holds no client reports (a compute party adds its stats and k)."""
    return {"labels": {}, "rows": {}, "stats": {"total": {"rounds": 0, "bytes": 0}}, "seconds": None,
            "client_bytes": [], "k": None, "dealer_ahead": None}


def _servers(args, world, X, P, config, modes: list[bool]) -> list[dict]:
    from mpc.compat import import_crypten
    from mpc.runtime import init_from_mpi, shutdown
    from mpc.servers import Inbox, ServerLayout, client_round, serve_round

    size, rank = world.Get_size(), world.Get_rank()
    lay = ServerLayout(args.servers, size - args.servers - 1, args.clients)
    if size != lay.world_size or lay.n_client_ranks < 1:
        raise SystemExit(f"servers topology needs mpirun -np {args.servers}+1+R (R >= 1 client ranks), got {size}")
    is_mpc = not lay.is_client_rank(rank)
    sub = world.Split(0 if is_mpc else 1, rank)
    parts = [_no_part() for _ in modes]
    world.Barrier()
    if is_mpc:
        party = init_from_mpi(_spec(args, args.servers), comm=sub)
        if not party.is_dealer:
            inbox = Inbox(world, lay, (X.shape[1], P.shape[1]))
            for r, offline in enumerate(modes):
                import_crypten().communicator.get().barrier()
                with _path(offline, args.comparison, not args.ring):
                    res = serve_round(world, lay, r, config, None, deadline_s=args.wait_s, wait_s=args.wait_s,
                                      inbox=inbox)
                parts[r].update(stats=res.stats, k=res.k, dealer_ahead=_dealer_ahead(args, party))
            shutdown(party)
        return parts
    ids = lay.clients_of(rank)
    for r in range(len(modes)):
        res = client_round(world, lay, r, ids, X[ids], P[ids], wait_s=args.wait_s)
        parts[r].update(
            labels=res.labels,
            rows={c: r_.tolist() for c, r_ in res.rows.items()},
            seconds=res.seconds,
            client_bytes=[res.bytes_sent / len(ids)] * len(ids),
            k=res.k,
        )
    return parts


def _spec(args: argparse.Namespace, n_parties: int):  # noqa: ANN202 - mpc.runtime.PartySpec, imported late
    from mpc.runtime import PartySpec

    return PartySpec(n_parties, reuse_plans=args.reuse_plans, dealer_lookahead=args.lookahead)


def _dealer_ahead(args: argparse.Namespace, party) -> dict | None:  # noqa: ANN001
    """Compute party 0, between runs: the dealer's look-ahead counters so far (a request that draws nothing)."""
    from mpc.lookahead import dealer_stats

    return dealer_stats() if args.lookahead and party.rank == 0 else None


def _peer(args, world, X, P, config, modes: list[bool]) -> list[dict]:
    from mpc.layout import round_robin, rows_of
    from mpc.runtime import init_from_mpi, shutdown
    from mpc.compat import import_crypten
    from mpc.secpc import secpc_round

    size = world.Get_size()
    if size != args.clients + 1:
        raise SystemExit(f"peer topology needs mpirun -np {args.clients + 1} (clients + dealer), got {size}")
    party = init_from_mpi(_spec(args, args.clients))
    parts = [_no_part() for _ in modes]
    if party.is_dealer:
        return parts
    owners = round_robin(args.clients, args.clients)
    mine = rows_of(party.rank, owners)
    for part, offline in zip(parts, modes):
        import_crypten().communicator.get().barrier()
        t0 = time.perf_counter()
        with _path(offline, args.comparison, not args.ring):
            res = secpc_round(party, X[mine], P[mine], owners, config)
        seconds = time.perf_counter() - t0
        part.update(
            labels={c: int(res.own_assignment[j]) for j, c in enumerate(mine)},
            rows={c: res.own_rows[j].tolist() for j, c in enumerate(mine)},
            stats=res.stats,
            seconds=seconds,
            client_bytes=[res.stats["total"]["bytes"]],
            k=res.k,
            dealer_ahead=_dealer_ahead(args, party),
        )
    shutdown(party)
    return parts


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
