"""SecPC: secure Lloyd k-means and adaptive k on CrypTen encrypted tensors.

The maths is exactly :mod:`mpc.reference` (read its docstring for the conventions). Under
encryption:

* rows are quantised by their owners (``s = quant_bits(N)`` fractional bits) and shared as
  integers; the Lloyd loop is exact integer arithmetic on shares: nothing is approximated inside the
  loop, so labels equal the reference bit for bit (ties included);
* one Lloyd iteration for all candidate k side by side costs 8 party-to-party rounds (edaBits,
  :mod:`mpc.comparison`; any number of parties). The assignment: 1 mul (cross-multiplied pair
  operands ``e_J n_L^2``, ``e_L n_J^2`` with ``e = ||S||^2 - 2 n X.S``, whose parts come with
  the centres) + 3 for the batched comparison of all pairs of all candidates + 1 for the
  one-hot (the comparison bits of each centre's ``k - 1`` pairs ANDed at once,
  :func:`mpc.comparison.onehot_wins`). The update (:func:`_update`): 1 (``A^T [X | 1]`` = sums
  and counts, with the counts' masked opening) + 1 (the empty-cluster flag ``z_j = [n_j == 0]``
  as one AND over the count's bits, with the products ``n_j S_j``, ``n_j^2``, ``||S_j||^2``)
  + 1 (empty clusters keep their centre; the next ``X (n S)^T``). CrypTen's primitives
  (``bench secpc --baseline``) compute the same values step by step;
* the adaptive criterion runs once after the loop (see :func:`secure_silhouette_choice`);
* with restarts (several groups of the same k, :func:`mpc.layout.candidate_groups`) every
  group runs in the same batched operations (more bytes, no more rounds); the winner among the
  groups of the revealed k is picked by an encrypted one-hot multiplexer (:func:`select_group`,
  1 mul round), so which restart won is never revealed.

Nothing is revealed inside the loop (fixed iteration count, no "changed?" bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mpc import bitprods, comparison, transport
from mpc import layout as lay
from mpc import secure_ops as so
from mpc.compat import import_crypten
from mpc.layout import INV_BITS
from mpc.stats import CommLog


@dataclass
class SecureState:
    """Encrypted centres of all candidates as ``[S | n]`` (``K x (m+1)`` int shares), reusable
    as a warm start in the next round (same candidates, same N and m)."""

    SN: object
    ks: tuple[int, ...]
    bits: int

    def state_dict(self) -> dict:
        """This party's *shares* as plain tensors and ints: useless alone, restored on resume,
        and loadable with ``torch.load(weights_only=True)`` (no CrypTen class is pickled)."""
        return {
            "share": self.SN.share.clone(),
            "precision": int(self.SN.encoder._precision_bits),
            "ks": list(self.ks),
            "bits": int(self.bits),
        }

    @classmethod
    def from_state(cls, state: dict) -> "SecureState":
        MPCTensor = import_crypten().mpc.MPCTensor
        SN = MPCTensor.from_shares(state["share"], precision=state["precision"])
        return cls(SN, tuple(state["ks"]), state["bits"])


@dataclass
class KMeansOutput:
    A: object  # N x K one-hot int shares, all candidate groups side by side
    state: SecureState
    Xi: object  # N x (m+1) int shares [xq | 1]
    log: CommLog = field(default_factory=CommLog)


def _assign(G, Q, ks: list[int], J, L):
    """Encrypted one-hot labels for every candidate group (see module docstring for rounds).

    ``G = xq Q_S^T`` (``n_j x_i.S_j``, ``N x K``) and ``Q = [n_j S_j | n_j^2 | ||S_j||^2]``
    (:func:`_centre_products`) come with the centres from :func:`_update`, so
    ``e_ij = ||S_j||^2 - 2 n_j x_i.S_j`` costs nothing here."""
    ct = import_crypten()
    N = G.shape[0]
    m = Q.shape[1] - 2
    n2, SS = Q[:, m], Q[:, m + 1]
    e = SS.unsqueeze(0) - G * 2
    if len(J) == 0:
        return comparison.onehot_wins(None, N, ks, J, L)
    P = len(J)
    left_ops = ct.cat([e[:, J], e[:, L]], dim=1)
    right_ops = ct.cat([n2[L], n2[J]], dim=0).unsqueeze(0)  # 1 x 2P: one masked opening per pair, not per row
    prod = left_ops * right_ops  # Beaver with a broadcast triple (c = a * b, b of 1 x 2P)
    f = prod[:, :P] - prod[:, P:]  # sign(d_J - d_L)
    return comparison.onehot_wins(f, N, ks, J, L)  # [f <= 0]: J beats L, ties to the lower index


def _inner(Xi, Q):
    """``G = xq Q_S^T``: every row's inner product with every ``n_j S_j`` (one matmul)."""
    m = Xi.shape[1] - 1
    return Xi[:, :m].matmul(Q[:, :m].t())


def _product_operands(SN):
    """The two operands whose product gives :func:`_centre_products` (one multiplication)."""
    ct = import_crypten()
    K, m1 = SN.shape
    m = m1 - 1
    S, n = SN[:, :m], SN[:, m:]
    return ct.cat([S, n, S], 1), ct.cat([n.expand(K, m), n, S], 1)


def _from_products(p, m: int):
    return import_crypten().cat([p[:, : m + 1], p[:, m + 1 :].sum(1, keepdim=True)], 1)


def _centre_products(SN):
    """``Q = [n_j S_j | n_j^2 | ||S_j||^2]`` (``K x (m + 2)`` int shares): what the next
    assignment needs of the centres besides ``S`` itself, one multiplication round."""
    x, y = _product_operands(SN)
    return _from_products(x * y, SN.shape[1] - 1)


def _update(A, Xi, SN, Q, G):
    """New ``[S | n]`` = ``A^T [xq | 1]``, its ``Q`` and the next assignment's ``G``; a cluster
    that received no row keeps its old ``[S | n]`` and ``Q`` (``z_j = [n_j == 0]``; its new sums
    are all zero, so adding ``z_j`` times the old values is the whole selection), and so its
    ``G`` column: ``G' = xq Q'_S^T = xq Q_new,S^T + z * G`` (``G = xq Q_old,S^T``, the one the
    assignment used; exact integers, so carrying it loses nothing).

    edaBits, 3 rounds: (1) the sums' Beaver operands open with the masked counts; (2) one
    :func:`mpc.bitprods.and_all` over the count's ``ceil(log2(N + 1))`` bits, with the new
    centres' products opened in it; (3) the multiplications by ``z`` with
    ``xq Q_new,S^T``. CrypTen's path computes the same values one step after another.
    """
    ct = import_crypten()
    K, m1 = SN.shape
    N, m = A.shape[0], m1 - 1
    old = ct.cat([SN, Q], 1)
    if not comparison.uses_edabits():
        z = comparison.none_of(A, 0)  # 1 where the cluster received no row
        SN_new = A.t().matmul(Xi)
        new = ct.cat([SN_new, _centre_products(SN_new)], 1)
        out = new + old * z.unsqueeze(1).expand(K, old.shape[1])
        SN, Q = out[:, :m1], out[:, m1:]
        return SN, Q, _inner(Xi, Q)
    Xq = Xi[:, :m]
    sums = so.Beaver(A.t(), Xi, "matmul")  # [A^T xq | A^T 1]
    c, rB, opened = comparison.open_masked(A.sum(0), also_open=sums.masked)
    SN_new = sums.finish(*opened)
    prods = so.Beaver(*_product_operands(SN_new), "mul")
    bits = max(1, math.ceil(math.log2(N + 1)))
    z, opened = bitprods.and_all(comparison.zero_bits(c, rB.share, bits), also_open=prods.masked)
    Q_new = _from_products(prods.finish(*opened), m)
    keep = so.Beaver(z.unsqueeze(1), old, "mul")  # z_j * [S | n | Q]_old
    keep_g = so.Beaver(z.unsqueeze(0), G, "mul")  # z_j * G_old[:, j]: G is xq Q_old,S^T
    g_new = so.Beaver(Xq, Q_new[:, :m].t(), "matmul")
    opened = transport.open_all([(t, "sum") for t in keep.masked + keep_g.masked + g_new.masked])
    out = ct.cat([SN_new, Q_new], 1) + keep.finish(*opened[:2])
    G = g_new.finish(*opened[4:]) + keep_g.finish(*opened[2:4])
    return out[:, :m1], out[:, m1:], G


def secure_kmeans(
    x_local: torch.Tensor,
    owners: list[int],
    rank: int,
    ks: list[int],
    iters: int,
    seed: int,
    warm: SecureState | None = None,
    log: CommLog | None = None,
) -> KMeansOutput:
    """Secure Lloyd k-means for all candidates ``ks`` side by side (peer topology: the parties
    own the rows and share them here).

    ``x_local``: this party's rows (``n_local x m``, norm <= 1) in global order of ``owners``.
    Returns encrypted final labels (after ``iters`` updates, recomputed with the final centres)
    and the encrypted state. Nothing is revealed.
    """
    log = log if log is not None else CommLog()
    bits = lay.quant_bits(len(owners))
    with log.phase("share"):
        Xi = with_counts(so.share_rows(lay.quantize(x_local, bits), owners, rank, 0))
    return kmeans_on_shares(Xi, ks, iters, seed, bits, warm=warm, log=log)


def with_counts(Xq):
    """``[xq | 1]`` from the shared ``xq``: the member-count column is a public constant added
    *after* sharing (party 0's share is 1, the others' 0). Were it part of a client's input, a
    client could share -5 there and move every centre's count and the chosen k for everyone."""
    return import_crypten().cat([Xq, so.public_int(torch.ones(Xq.shape[0], 1, dtype=torch.long))], 1)


def kmeans_on_shares(
    Xi,
    ks: list[int],
    iters: int,
    seed: int,
    bits: int,
    warm: SecureState | None = None,
    log: CommLog | None = None,
) -> KMeansOutput:
    """Secure Lloyd k-means on already shared rows ``Xi = [xq | 1]`` (``N x (m+1)`` int shares,
    :func:`with_counts` of the rows quantised at ``bits``), however they were shared (by their owners, or sent by
    input-only clients to the compute parties: :mod:`mpc.servers`)."""
    log = log if log is not None else CommLog()
    N, m = Xi.shape[0], Xi.shape[1] - 1
    ks = list(ks)
    J, L = lay.pair_layout(ks)
    with log.phase("share"):
        if warm is not None:
            if tuple(warm.ks) != tuple(ks) or warm.bits != bits or warm.SN.shape[1] != m + 1:
                raise ValueError("warm-start state does not match candidates / N / m")
            SN = warm.SN
        else:
            SN = Xi[lay.initial_rows(ks, N, seed)]  # Forgy, public indices: [x_r | 1] = (S, n=1)
        Q = _centre_products(SN)
        G = _inner(Xi, Q)
    for _ in range(iters):
        with log.phase("lloyd"):
            A = _assign(G, Q, ks, J, L)
            SN, Q, G = _update(A, Xi, SN, Q, G)
    with log.phase("assign_final"):
        A = _assign(G, Q, ks, J, L)
    return KMeansOutput(A=A, state=SecureState(SN, tuple(ks), bits), Xi=Xi, log=log)


def inverse_table(n_max: int, min_size: int = 1, bits: int = INV_BITS) -> torch.Tensor:
    """Public table ``h(v) = round(2^bits / v)`` for v >= min_size, else 0 (v = 1..n_max)."""
    v = torch.arange(1, n_max + 1, dtype=torch.float64)
    h = torch.round(2.0**bits / v).long()
    h[v < min_size] = 0
    return h


def secure_silhouette_choice(out: KMeansOutput, ks: list[int], N: int, log: CommLog):
    """Simplified silhouette of every group under encryption; reveals only the chosen k.

    ``||x_i||^2`` is computed from the shared rows themselves (batched into the multiplication
    that scales the centres, so it costs no extra round): were it a separate input, a client
    could shift it and push every distance, and so the chosen k, wherever it liked. The count
    bits of the final labels (``[n_f_j >= v]``, needed for the singleton rule) come out of the
    same batched comparison as the centres' counts and are returned for the aggregation.
    Returns (chosen k, encrypted ``1 x G`` one-hot of the winning group, ``K x N`` count bits).
    """
    ct = import_crypten()
    bits = out.state.bits
    SN = out.state.SN
    K, m1 = SN.shape
    with log.phase("criterion"):
        counts = SN[:, m1 - 1]
        A = out.A
        cb = so.count_bits(ct.cat([counts, A.sum(0)]), N)
        inv = so.lookup(cb[:K], inverse_table(N))  # round(2^20 / n), int
        m = m1 - 1
        S, Xq = SN[:, :m], out.Xi[:, :m]
        # one mul round: S_j * round(2^20/n_j) (centres) and xq_i * xq_i (squared norms)
        prod = ct.cat([S, Xq], 0) * ct.cat([inv.unsqueeze(1).expand(K, m), Xq], 0)
        # ||xq||^2 has scale 2^(2 bits); lift it to 2^(FIXED_BITS + INV_BITS) so that one batched
        # truncation by 2^INV_BITS gives centres at scale 2^bits and norms at 2^FIXED_BITS
        x2 = so.mul_public_int(prod[K:].sum(1), torch.tensor(2 ** (so.FIXED_BITS + INV_BITS - 2 * bits)))
        scaled = so.truncate(ct.cat([prod[:K].flatten(), x2], 0), 2**INV_BITS)
        C, x2_fixed = scaled[: K * m].view(K, m), so.as_fixed(scaled[K * m :])
        up = 2 ** (so.FIXED_BITS - bits)
        Cf = so.as_fixed(so.mul_public_int(C, torch.tensor(up)))
        Xf = so.as_fixed(so.mul_public_int(Xq, torch.tensor(up)))
        H = ct.cat([Xf, Cf], 0).matmul(Cf.t())  # fixed point, truncated
        Nr = Xf.shape[0]
        cc = so.mul_public_int(so.as_int(H[Nr:]), torch.eye(K, dtype=torch.long)).sum(0)
        cc = so.as_fixed(cc)
        D = x2_fixed.unsqueeze(1) - H[:Nr] * 2 + cc.unsqueeze(0)  # squared distances, N x K
        Dm = D + so.as_fixed(so.mul_public_int(A, torch.tensor(8 << so.FIXED_BITS)))  # own centre masked
        J, L = lay.pair_layout(ks)
        Bm = comparison.onehot_wins(Dm[:, J] - Dm[:, L], Nr, ks, J, L)  # second-nearest (nearest other) centre
        As = A * cb[K:, 1].unsqueeze(0).expand(Nr, K)  # A_ij [n_f_j >= 2]: singletons drop out
        both = ct.cat([As, Bm], 0) * ct.cat([D, Dm], 0)
        gm = torch.zeros(K, len(ks), dtype=torch.long)
        for g, (off, k) in enumerate(lay.group_layout(ks)):
            gm[off : off + k, g] = 1
        ab = so.matmul_public_int(both, gm)  # 2N x G
        a, b = ab[:Nr], ab[Nr:]  # a_i is 0 for a row alone in its cluster
        shared = so.matmul_public_int(As, gm).sum(0)  # rows not alone, per group (int)
        # b + eps lies in [2^-8, 8): b is a squared distance between points of the unit ball
        # (>= -1e-4 after fixed-point error), eps = 2^-8
        r = so.reciprocal_bounded(b + lay.EPS_SIL, int(math.log2(lay.EPS_SIL)), 3)
        # N * score = sum_i shared_i (1 - a_i / (b_i + eps)); s = -N * score
        s = (a * r).sum(0) - so.as_fixed(so.mul_public_int(shared, torch.tensor(1 << so.FIXED_BITS)))
    with log.phase("select_k"):
        G = len(ks)
        Jg, Lg = lay.pair_layout([G])
        # argmax of score = argmin of s: J beats L iff s_J <= s_L, ties to the first group
        onehot = comparison.onehot_wins((s[Jg] - s[Lg]).unsqueeze(0), 1, [G], Jg, Lg)
        k_enc = so.matmul_public_int(onehot, torch.tensor(ks, dtype=torch.long))
        k = int(k_enc.get_plain_text().round().item())
    return k, onehot, cb[K:]


def select_group(A_all, cbits, onehot, ks: list[int], k: int, log: CommLog):
    """The winning group's labels (``N x k``) and count bits (``k x n``), still encrypted.

    ``A_all``: ``N x K`` labels of all groups; ``cbits``: ``K x n`` count bits of all columns;
    ``onehot``: encrypted ``1 x G`` winner among the groups (only groups of the revealed ``k``
    can be hot). When a single group has that k its index is public (slicing is local);
    otherwise ``sum_g onehot_g * block_g`` over the groups of size k, one multiplication round.
    """
    layout = lay.group_layout(ks)
    cand = [g for g, kk in enumerate(ks) if kk == k]
    if len(cand) == 1:
        off = layout[cand[0]][0]
        return A_all[:, off : off + k], cbits[off : off + k]
    ct = import_crypten()
    N = A_all.shape[0]
    cols = torch.cat([torch.arange(layout[g][0], layout[g][0] + k) for g in cand])  # R*k columns
    with log.phase("select_group"):
        blocks = ct.cat([A_all[:, cols], cbits[cols].t()], 0)  # (N + n) x R*k
        spread = torch.zeros(len(ks), len(cols), dtype=torch.long)
        for r, g in enumerate(cand):
            spread[g, r * k : (r + 1) * k] = 1
        w = so.matmul_public_int(onehot, spread)  # 1 x R*k: onehot of the block's group
        picked = blocks * w.expand(blocks.shape[0], len(cols))
        fold = torch.eye(k, dtype=torch.long).repeat(len(cand), 1)  # R*k x k: sum the blocks
        out = so.matmul_public_int(picked, fold)
    return out[:N], out[N:].t()
