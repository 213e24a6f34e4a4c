"""Residual quantisation of one latent in float64 numpy, written from
proto/model-format.md section 4 ("Encoding semantics", items 4 to 6), not
from core/: the greedy code tuple, the alternatives of the beam search, and
every tuple by brute force.  Shared by tests/server/test_alternatives.py and
tests/cli/test_cli.py; the latent z comes from the caller.

The beam search as documented: width W = 2 top_k.  The beam starts as the
empty tuple with residual z.  At each level every kept (tuple, k) extension
is scored by ||r - C_l[k]||^2 and the best W are kept, ties broken by the
lexicographic order of the codes.  The kept full tuples are ranked by
||r_L||^2 (ties: lexicographic codes), the greedy tuple is dropped, and the
first top_k - 1 are the alternatives (fewer when the code space is smaller).

The encoder computes in float32, so it agrees with this float64 reference
only on rows whose decisions are not near-ties.  greedy, beam and brute_force
also return a margin: the smallest gap between two values whose order decides
the result (best and runner-up at each greedy level; the W-th and (W+1)-th
candidate at each beam level; neighbours in the final and the brute-force
ranking up to the entry after the first top_k), divided by the row's scale(),
which bounds every term of every score.  Float32 moves a score by at most
about E 2^-24 of the scale (E <= 16 in these tests), and the float32 latent
of a small MLP by as little again: a few 1e-6 of the scale at worst, below
1e-8 as measured.  So rows with a margin of at least MARGIN = 1e-5 are decided
alike by both.  Exact ties come only from twin codewords, which the float32
code computes operand for operand alike too; the codes decide them, so a tie
does not count against the margin, the gaps around its group do.
"""
import numpy as np

MARGIN = 1e-5


def scale(z, cbs):
    """(||z|| + sum_l max_k ||C_l[k]||)^2: bounds ||r||^2, ||C[k]||^2 and
    |2 r.C[k]| for every residual r of every tuple."""
    return float((np.linalg.norm(z) + sum(np.linalg.norm(c, axis=1).max() for c in cbs)) ** 2)


def _cut_gap(d, n):
    """How far the values of ascending @d must move to change which rows are
    its first @n: the gap at the cut; when the cut splits a group of equal
    values (twins, ordered by their codes), the gaps on both sides of the
    group.  inf when nothing is cut."""
    d = np.asarray(d, np.float64)
    if n >= len(d):
        return float("inf")
    v, lo, hi, gaps = d[n - 1], n - 1, n, []
    while lo > 0 and d[lo - 1] == v:
        lo -= 1
    while hi < len(d) and d[hi] == v:
        hi += 1
    if hi < len(d):
        gaps.append(d[hi] - v)
    if hi > n and lo > 0:
        gaps.append(v - d[lo - 1])
    return float(min(gaps)) if gaps else float("inf")


def _head_gap(d, n):
    """How far the values of ascending @d must move to change its first @n
    rows or their order: every gap between distinct neighbours up to the
    first value past them that differs."""
    d = np.asarray(d, np.float64)
    m = min(n, len(d))
    while m < len(d) and d[m] == d[m - 1]:
        m += 1
    g = np.diff(d[:m + 1])
    g = g[g > 0]
    return float(g.min()) if len(g) else float("inf")


def _rank(d, codes):
    """Indices ordering rows by (d, codes lexicographically)."""
    keys = [codes[:, j] for j in range(codes.shape[1] - 1, -1, -1)]
    return np.lexsort(keys + [d])


def greedy(z, cbs):
    """(codes tuple, ||r_L||^2, margin): c_l = argmin_k ||r_l - C_l[k]||^2,
    ties to the lowest k."""
    z = np.asarray(z, np.float64)
    r, codes, gap = z.copy(), [], float("inf")
    for c in cbs:
        c = np.asarray(c, np.float64)
        d = ((r[None, :] - c) ** 2).sum(1)
        k = int(np.argmin(d))  # the first of equal minima
        gap = min(gap, _cut_gap(np.sort(d), 1))
        codes.append(k)
        r = r - c[k]
    return tuple(codes), float((r * r).sum()), gap / scale(z, cbs)


def beam(z, cbs, top_k):
    """(alternatives [(codes tuple, ||r_L||^2)], margin) for one latent @z."""
    z = np.asarray(z, np.float64)
    W = 2 * top_k
    g, _, margin = greedy(z, cbs)
    codes, r, gap = np.zeros((1, 0), np.int64), z[None, :].copy(), float("inf")
    for c in cbs:
        c = np.asarray(c, np.float64)
        d = ((r[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (beam, K)
        nb, K = d.shape
        par, ks = np.repeat(np.arange(nb), K), np.tile(np.arange(K), nb)
        cand = np.concatenate([codes[par], ks[:, None]], 1)
        order = _rank(d.ravel(), cand)
        gap = min(gap, _cut_gap(d.ravel()[order], W))
        keep = order[:W]
        codes, r = cand[keep], r[par[keep]] - c[ks[keep]]
    dist = (r * r).sum(1)
    order = _rank(dist, codes)
    gap = min(gap, _head_gap(dist[order], top_k))
    alts = [(tuple(int(v) for v in codes[i]), float(dist[i])) for i in order
            if tuple(codes[i]) != g][:top_k - 1]
    return alts, min(margin, gap / scale(z, cbs))


def all_tuples(cbs):
    """Every code tuple of codebooks @cbs in lexicographic order, and the sum
    of its codewords: (codes (T, L), q (T, E)), for brute_force."""
    ks = [len(c) for c in cbs]
    codes = np.indices(ks).reshape(len(ks), -1).T
    return codes, sum(np.asarray(c, np.float64)[codes[:, l]] for l, c in enumerate(cbs))


def brute_force(z, cbs, tuples, top_k):
    """The closest 4 top_k + 4 tuples of all_tuples(@cbs) = @tuples, ranked by
    (||z - sum_l C_l[c_l]||^2, codes): (codes (n, L), distances (n), margin of
    the first top_k)."""
    z = np.asarray(z, np.float64)
    codes, q = tuples
    dist = ((z[None, :] - q) ** 2).sum(1)
    n = min(len(dist), 4 * top_k + 4)
    head = np.sort(np.argpartition(dist, n - 1)[:n])  # lexicographic, as codes
    order = head[np.argsort(dist[head], kind="stable")]
    return codes[order], dist[order], _head_gap(dist[order], top_k) / scale(z, cbs)
