#!/usr/bin/python3
"""The alternatives of the encode routes (top_k > 1) against an
independent float64 reference of the documented beam search
(tests/rq_ref.py, from proto/model-format.md section 4; it never calls the C
code), and against brute force over every code tuple.

For random inputs the primary tuple and every alternative must equal the
reference's, codes exactly and distances to float32 rounding; rows whose
float64 decisions are near-ties (rq_ref.MARGIN) are left out, and each case
fails unless enough rows remain.

What brute force can hold the beam to (W = 2 top_k):
- When W is at least the number of prefixes of L - 1 levels (the product of
  every K but the last), nothing is pruned before the last level, so the
  alternatives are exactly the top_k - 1 closest tuples other than the greedy
  one, in order.
- Otherwise the beam is a heuristic and may miss closer tuples; all that is
  guaranteed is that the j-th alternative is a real tuple at its reported
  distance, so never closer than the j-th closest tuple other than the greedy
  one.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_alternatives.py
"""
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rq_ref as R  # noqa: E402

ROWS = 120  # drawn per case
KEPT = 30  # of them at least this many must be free of near-ties


def setUpModule():
    global WORK, ITEM, TINY
    WORK = tempfile.mkdtemp(prefix="semid-alt-test-")
    rng = np.random.default_rng(31)
    # The item tower: a real MLP, and 64 codewords at level 0 alone, more
    # than the widest beam (W = 32) keeps: the beam prunes at every top_k.
    ITEM = T.random_tower(rng, 24, [16], 8, [64, 32, 16], act="gelu", norm="l2")
    # The user tower: 2 x 3 x 2 = 12 tuples, fewer than top_k 16 asks for;
    # level 1's codewords 0 and 2 are twins, so ties are decided by the codes.
    TINY = T.random_tower(rng, 6, [], 4, [2, 3, 2], act="relu", norm="none")
    TINY.codebooks[1][2] = TINY.codebooks[1][0]
    T.write_model(os.path.join(WORK, "model.safetensors"), {"item": ITEM, "user": TINY},
                  "alt-1")


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


class TestAlternatives(unittest.TestCase):
    def encode(self, srv, route, x, top_k):
        st, _, body = srv.json("POST", route, {
            "inputs": [{"embedding_b64": T.b64_row(r)} for r in x], "top_k": top_k})
        self.assertEqual(st, 200, body)
        return body["results"]

    def assert_dist(self, got, want, s, what):
        """Equal but for float32 rounding: 1e-5 relative or 1e-6 of the row's
        scale @s (measured errors are below 1e-8 of it)."""
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * s, err_msg=what)

    def check(self, srv, route, tower, top_k, exhaustive, seed):
        """@ROWS random rows at @top_k: the server equals the beam reference,
        and brute force as the docstring says (@exhaustive: W covers every
        prefix)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((ROWS, tower.D)).astype(np.float32)
        z = T.reference_latent(tower, x)
        cbs = [c.astype(np.float64) for c in tower.codebooks]
        results = self.encode(srv, route, x, top_k)
        tuples = R.all_tuples(cbs)
        space = len(tuples[0])
        kept = 0
        for i, res in enumerate(results):
            g, gd, _ = R.greedy(z[i], cbs)
            alts, margin = R.beam(z[i], cbs, top_k)
            codes, dist, bmargin = R.brute_force(z[i], cbs, tuples, top_k)
            if min(margin, bmargin) < R.MARGIN:
                continue
            kept += 1
            s, what = R.scale(z[i], cbs), "row %d top_k %d" % (i, top_k)
            self.assertEqual(tuple(res["codes"]), g, what)
            self.assert_dist(res["distance"], gd, s, what)
            got = res["alternatives"]
            self.assertEqual(len(got), min(top_k - 1, space - 1), what)
            self.assertEqual([tuple(a["codes"]) for a in got], [a[0] for a in alts], what)
            self.assert_dist([a["distance"] for a in got], [a[1] for a in alts], s, what)
            # brute force, without the greedy tuple
            other = np.any(codes != np.array(g), axis=1)
            codes, dist = codes[other][:len(got)], dist[other][:len(got)]
            if exhaustive:
                self.assertEqual([tuple(a["codes"]) for a in got],
                                 [tuple(int(v) for v in c) for c in codes], what)
                self.assert_dist([a["distance"] for a in got], dist, s, what)
            else:
                self.assertTrue(all(a["distance"] >= d - 1e-6 * s for a, d in zip(got, dist)),
                                what)
        self.assertGreaterEqual(kept, KEPT, "top_k %d: too few rows free of near-ties" % top_k)

    def test_pruning_beam(self):
        # W = 4, 10, 32 < 64 codewords at level 0 already.
        srv = T.Server(["--model", os.path.join(WORK, "model.safetensors")], WORK)
        try:
            for seed, top_k in enumerate((2, 5, 16)):
                self.check(srv, "/v1/items:encode", ITEM, top_k, False, 100 + seed)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_tiny_code_space(self):
        # 12 tuples, 6 prefixes of two levels: top_k 16 (W = 32) and 4 (W = 8)
        # are exhaustive, and top_k 16 gets 11 alternatives; top_k 2 (W = 4)
        # prunes.
        srv = T.Server(["--model", os.path.join(WORK, "model.safetensors")], WORK)
        try:
            for seed, (top_k, exhaustive) in enumerate(((16, True), (4, True), (2, False))):
                self.check(srv, "/v1/users:encode", TINY, top_k, exhaustive, 200 + seed)
            # The twins tie exactly: all 12 tuples are listed (W = 32), and
            # each (a, 2, c) comes right after (a, 0, c) at the same distance,
            # or (a, 0, c) is the greedy tuple (the lowest k of a tie).
            res = self.encode(srv, "/v1/users:encode",
                              np.random.default_rng(9).standard_normal((20, TINY.D)), 16)
            for r in res:
                alts = [(tuple(a["codes"]), a["distance"]) for a in r["alternatives"]]
                codes = [a[0] for a in alts]
                self.assertNotEqual(r["codes"][1], 2)
                for j, (t, d) in enumerate(alts):
                    if t[1] != 2:
                        continue
                    twin = (t[0], 0, t[2])
                    if twin == tuple(r["codes"]):
                        self.assertEqual(d, r["distance"])
                    else:
                        self.assertEqual(codes.index(twin), j - 1)
                        self.assertEqual(alts[j - 1][1], d)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_codebook_over_one_score_block(self):
        # 4096 codewords: two score blocks of 2048, and at top_k 16 the beam
        # runs 16 rows per pass, so one request spans several passes.
        rng = np.random.default_rng(41)
        big = T.random_tower(rng, 24, [16], 8, [4096, 8], act="silu", norm="l2")
        path = os.path.join(WORK, "big.safetensors")
        T.write_model(path, {"item": big}, "alt-big-1")
        srv = T.Server(["--model", path], WORK)
        try:
            for seed, top_k in enumerate((3, 16)):
                self.check(srv, "/v1/items:encode", big, top_k, False, 300 + seed)
        finally:
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
