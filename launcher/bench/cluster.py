"""``mpirun -np P+1 python -m launcher bench cluster --rows N --dim m --k K --iters T``

SecPC's secure k-means against the naive CrypTen Lloyd loop (:mod:`mpc.naive`), both run in
the same process on the same shared data, plus the full SecPC round (clustering + aggregation)
for the fixed k and for the adaptive candidates ``--k-min..--k-max`` (default 2..6; ``--no-adaptive``
skips it). Data: Gaussian blobs from ``--seed`` (public), rows normalised, dealt round-robin to
the clients. Rank 0 prints one JSON object.

Rounds: CrypTen's communication-round counter of **client rank 1** (a client other than party 0)
for the phase: one round = one party-to-party exchange (reveal, gather, share conversion).
Party 0 additionally counts 3 per request it sends to the TTP dealer (send, reply size, reply);
that count is reported as ``*_rounds_party0``. ``mb_per_party_per_iter``: megabytes sent by
rank 1 per iteration (CrypTen's byte counter), ``seconds``: wall time at rank 0.
``rounds_per_iter`` = rounds of (T Lloyd iterations + the final labelling) / T, for both loops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from mpc.dealer import DEALERS


def _blobs(n: int, m: int, k: int, seed: int, spread: float):
    """``bench secpc``'s public blobs with 32-number prompts, and the true labels."""
    from launcher.bench.secpc import blobs

    X, P = blobs(n, m, 32, k, seed, spread)
    return X, P, torch.arange(n) % k


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m launcher bench cluster")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, default=0.6, help="blob noise std before normalising")
    ap.add_argument("--dealer", choices=tuple(DEALERS), default="ttp")
    ap.add_argument("--allow-insecure", action="store_true", help="needed for --dealer tfp (party 0 makes the triples)")
    ap.add_argument("--k-min", type=int, default=2)
    ap.add_argument("--k-max", type=int, default=6)
    ap.add_argument("--restarts", type=int, default=4, help="Forgy draws per candidate k (adaptive round)")
    ap.add_argument("--no-adaptive", action="store_true")
    ap.add_argument("--no-naive", action="store_true")
    return ap.parse_args(argv)


def _sum_phases(stats: dict, names) -> tuple[float, int, int]:
    s = sum(stats[n]["seconds"] for n in names if n in stats)
    r = sum(stats[n]["rounds"] for n in names if n in stats)
    b = sum(stats[n]["bytes"] for n in names if n in stats)
    return s, int(r), int(b)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from mpi4py import MPI

    from mpc import reference as ref
    from mpc import secure_ops as so
    from mpc.layout import round_robin, rows_of
    from mpc.secpc import SecPCConfig, secpc_round
    from mpc.clustering import secure_kmeans
    from mpc.compat import import_crypten
    from mpc.naive import naive_kmeans
    from mpc.runtime import PartySpec, init_from_mpi, shutdown
    from mpc.stats import CommLog
    from mpc import wire

    world = MPI.COMM_WORLD
    size = world.Get_size()
    n_clients = size - int(DEALERS[args.dealer].needs_process)
    spec = PartySpec(n_clients=n_clients, dealer=args.dealer, allow_insecure=args.allow_insecure)
    # clients-only communicator for gathering stats (the dealer never joins it); collective, so
    # it must be created before the dealer disappears into its serving loop
    clients = world.Split(1 if world.Get_rank() == spec.dealer_rank else 0, world.Get_rank())
    party = init_from_mpi(spec)
    if party.is_dealer:
        return 0
    ct = import_crypten()
    comm = ct.communicator.get()
    rank = party.rank
    X, P, true_labels = _blobs(args.rows, args.dim, args.k, args.seed, args.spread)
    owners = round_robin(args.rows, n_clients)
    mine = rows_of(rank, owners)
    T = args.iters
    out: dict = {}

    # -------- SecPC secure k-means (fixed k)
    comm.barrier()
    log = CommLog()
    t0 = time.perf_counter()
    km = secure_kmeans(X[mine], owners, rank, [args.k], T, args.seed, log=log)
    sec_seconds = time.perf_counter() - t0
    labels = so.matmul_public_int(km.A, torch.arange(args.k)).get_plain_text().round().long()  # benchmark only
    r_ = ref.secpc_reference(X, None, SecPCConfig(args.k, args.k, T, args.seed, restarts=1))
    agreement = float((labels == r_.labels).double().mean())
    sec_stats = log.as_dict()

    # -------- naive loop, same process, same data
    naive = {}
    if not args.no_naive:
        comm.barrier()
        nlog = CommLog()
        Xf = so.share_rows(X[mine], owners, rank, None)
        C0 = ref.initial_centres(args.k, X, args.seed)
        t0 = time.perf_counter()
        An, _ = naive_kmeans(Xf, C0, T, log=nlog)
        naive_seconds = time.perf_counter() - t0
        nl = (An * torch.arange(args.k).float()).sum(1).get_plain_text().round().long()
        from sklearn.cluster import KMeans

        sk = KMeans(args.k, init=C0.numpy(), n_init=1, max_iter=T, tol=0, algorithm="lloyd").fit(X.double().numpy())
        naive = dict(naive_seconds=naive_seconds, stats=nlog.as_dict(), agreement=float((nl.numpy() == sk.labels_).mean()),
                     sk_agreement=float((labels.numpy() == sk.labels_).mean()))

    # -------- full SecPC round, fixed k and adaptive
    comm.barrier()
    t0 = time.perf_counter()
    res_fixed = secpc_round(party, X[mine], P[mine], owners, SecPCConfig(args.k, args.k, T, args.seed, restarts=1))
    fixed_seconds = time.perf_counter() - t0
    adaptive = None
    if not args.no_adaptive:
        comm.barrier()
        t0 = time.perf_counter()
        res_ad = secpc_round(party, X[mine], P[mine], owners, SecPCConfig(args.k_min, args.k_max, T, args.seed, restarts=args.restarts))
        adaptive = dict(seconds=time.perf_counter() - t0, k=res_ad.k, stats=res_ad.stats)
        r_ad = ref.secpc_reference(X, P, SecPCConfig(args.k_min, args.k_max, T, args.seed, restarts=args.restarts))
        adaptive["reference_k"] = r_ad.k
    payload = dict(sec=sec_stats, naive=naive.get("stats"), fixed=res_fixed.stats, adaptive=adaptive and adaptive["stats"])
    gathered = wire.gather(clients, payload, root=0)
    shutdown(party)
    if rank != 0:
        return 0
    r1 = gathered[1]
    r0 = gathered[0]
    lloyd = ["lloyd", "assign_final"]
    s_sec, rr_sec, b_sec = _sum_phases(r1["sec"], lloyd)
    result = {
        "bench": "cluster",
        "parties": n_clients,
        "dealer": args.dealer,
        "insecure_dealer": DEALERS[args.dealer].insecure,
        "rows": args.rows,
        "dim": args.dim,
        "k": args.k,
        "iters": T,
        "seed": args.seed,
        "seconds": round(sec_seconds, 4),
        "rounds_per_iter": round(rr_sec / T, 2),
        "rounds_per_iter_party0": round(_sum_phases(r0["sec"], lloyd)[1] / T, 2),
        "mb_per_party_per_iter": round(b_sec / T / 1e6, 4),
        "agreement": agreement,
        "rounds_by_phase": {k: v["rounds"] for k, v in r1["sec"].items()},
    }
    if naive:
        nph = ["naive_lloyd", "naive_assign_final"]
        _, rr_n, b_n = _sum_phases(r1["naive"], nph)
        result.update(
            naive_seconds=round(naive["naive_seconds"], 4),
            naive_rounds_per_iter=round(rr_n / T, 2),
            naive_rounds_per_iter_party0=round(_sum_phases(r0["naive"], nph)[1] / T, 2),
            naive_mb_per_party_per_iter=round(b_n / T / 1e6, 4),
            naive_agreement_with_sklearn=naive["agreement"],
            agreement_with_sklearn=naive["sk_agreement"],
            speedup=round(naive["naive_seconds"] / sec_seconds, 2),
        )
    result.update(
        round_seconds=round(fixed_seconds, 4),
        round_rounds=r1["fixed"]["total"]["rounds"],
        round_rounds_by_phase={k: v["rounds"] for k, v in r1["fixed"].items()},
        round_mb_per_party=round(r1["fixed"]["total"]["bytes"] / 1e6, 3),
    )
    if adaptive:
        ad1 = r1["adaptive"]
        result.update(
            k_min=args.k_min,
            k_max=args.k_max,
            adaptive_seconds=round(adaptive["seconds"], 4),
            adaptive_rounds=ad1["total"]["rounds"],
            adaptive_rounds_per_iter=round(ad1["total"]["rounds"] / T, 2),
            adaptive_lloyd_rounds_per_iter=round(_sum_phases(ad1, ["lloyd"])[1] / T, 2),
            adaptive_rounds_by_phase={k: v["rounds"] for k, v in ad1.items()},
            adaptive_mb_per_party=round(ad1["total"]["bytes"] / 1e6, 3),
            chosen_k=adaptive["k"],
            reference_chosen_k=adaptive["reference_k"],
        )
    result["rounds_definition"] = (
        "CrypTen round counter of client rank 1 (party-to-party exchanges); party 0 additionally "
        "counts 3 per TTP request (see *_party0). rounds_per_iter = (T Lloyd iterations + final "
        "labelling) / T. adaptive_rounds_per_iter = whole adaptive SecPC round (share, T iterations "
        "for all candidates, criterion, k selection, aggregation, reveal) / T."
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
