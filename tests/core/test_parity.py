#!/usr/bin/python3
"""Parity of `semid encode` with an independent float64 numpy reference.

The test writes random models itself, as safetensors files built by hand
(u64 little-endian header length, JSON header, raw little-endian F32 data) in
the profile of proto/model-format.md: several shapes, K differing between
levels, relu / gelu / silu, with and without l2 input norm, with and without
bias, item and user towers.  It computes the expected codes in float64 from
the float32 values that are in the file (l2 norm as x / max(||x||, 1e-12),
the MLP, greedy residual quantisation with ties to the lowest k), writes the
inputs as float32 and float64 .npy, runs

    $SEMID_BIN/semid encode --model M --tower T --input X.npy --output out.npy
    $SEMID_BIN/semid encode --model M --tower T --input X.npy --output -

and asserts every code is equal.

Near-ties are impossible by construction, not tolerated by loosening: a
candidate input row is kept only if, at every level of the float64 greedy
search, the gap between the best and the second-best squared distance is at
least MARGIN * (||r||^2 + max_k ||C[k]||^2).  The C encoder works in
float32; its latent differs from the float64 one by a relative ~1e-6 (a few
ulps per layer), which moves any squared distance by far less than that
margin (MARGIN = 1e-3 leaves a factor of >100).  So the float32 argmin is
provably the float64 argmin on every kept row, at every level (the residual
errors stay of the same order through the levels).  Rows are drawn until
enough pass; the test fails if too few do (it would mean a broken generator,
not a loosened check).

Run with Debian's python3 (numpy); SEMID_BIN names the directory holding the
semid binary (default "bin").
"""
import json
import math
import os
import struct
import subprocess
import tempfile
import unittest

import numpy as np

SEMID_BIN = os.environ.get("SEMID_BIN", "bin")
SEMID = os.path.join(SEMID_BIN, "semid")
MARGIN = 1e-3
ROWS = 300

_erf = np.vectorize(math.erf)


def act_ref(name, v):
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "gelu":
        return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))
    if name == "silu":
        return v / (1.0 + np.exp(-v))
    if name == "tanh":
        return np.tanh(v)
    return v


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 array); metadata: dict of str -> str."""
    header = {"__metadata__": metadata}
    blobs, off = [], 0
    for name, arr in tensors:
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class Tower:
    """A random tower: float32 parameters (as written) and a float64 reference."""

    def __init__(self, rng, D, hidden, E, K, act, norm, bias):
        self.D, self.E, self.K, self.act, self.norm = D, E, list(K), act, norm
        widths = [D] + list(hidden) + [E]
        self.layers = []
        for i in range(len(widths) - 1):
            lim = 1.0 / math.sqrt(widths[i])
            w = rng.uniform(-lim, lim, (widths[i + 1], widths[i])).astype(np.float32)
            b = rng.uniform(-lim, lim, widths[i + 1]).astype(np.float32) if bias else None
            self.layers.append((w, b))
        # Codebooks on the scale of the latents (and of the residuals after).
        z = self.latent(rng.standard_normal((512, D)))
        r, self.codebooks = z, []
        for k in self.K:
            c = (r[rng.choice(len(r), k, replace=len(r) < k)] +
                 0.1 * r.std() * rng.standard_normal((k, E)))
            c = c.astype(np.float32)
            self.codebooks.append(c)
            d = ((r[:, None, :] - c.astype(np.float64)[None, :, :]) ** 2).sum(-1)
            r = r - c.astype(np.float64)[d.argmin(1)]

    def tensors(self, name):
        out = []
        for i, (w, b) in enumerate(self.layers):
            out.append((f"{name}.encoder.{i}.weight", w))
            if b is not None:
                out.append((f"{name}.encoder.{i}.bias", b))
        for l, c in enumerate(self.codebooks):
            out.append((f"{name}.codebook.{l}", c))
        return out

    def latent(self, x):
        h = np.asarray(x, dtype=np.float64)
        if self.norm == "l2":
            n = np.sqrt((h * h).sum(1, keepdims=True))
            h = h / np.maximum(n, 1e-12)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.astype(np.float64).T
            if b is not None:
                h = h + b.astype(np.float64)
            if i < len(self.layers) - 1:
                h = act_ref(self.act, h)
        return h

    def codes(self, x):
        """Greedy codes (N, L) and a mask of rows clear of near-ties."""
        r = self.latent(x)
        n = len(r)
        codes = np.zeros((n, len(self.K)), dtype=np.int64)
        ok = np.ones(n, dtype=bool)
        idx = np.arange(n)
        for l, c in enumerate(self.codebooks):
            c = c.astype(np.float64)
            d = ((r[:, None, :] - c[None, :, :]) ** 2).sum(-1)
            order = np.argsort(d, axis=1, kind="stable")
            best = order[:, 0]
            if c.shape[0] > 1:
                gap = d[idx, order[:, 1]] - d[idx, best]
                scale = (r * r).sum(1) + (c * c).sum(1).max()
                ok &= gap >= MARGIN * scale
            codes[:, l] = best
            r = r - c[best]
        return codes, ok

    def ranked_tuples(self, x, top):
        """Every code tuple by exact float64 distance ||z - q||^2: per row, the
        first @top tuples (N, top, L) and a mask of rows whose first top + 1
        distances are pairwise separated by the margin (so their order, and
        which tuples make the cut, cannot flip in float32)."""
        z = self.latent(x)
        q = np.zeros((1, self.E))
        for c in self.codebooks:  # lexicographic order: level 0 most significant
            q = (q[:, None, :] + c.astype(np.float64)[None, :, :]).reshape(-1, self.E)
        codes = np.indices(self.K).reshape(len(self.K), -1).T
        d = ((z[:, None, :] - q[None, :, :]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")
        ds = np.take_along_axis(d, order, axis=1)[:, :top + 1]
        scale = (z * z).sum(1) + max((c.astype(np.float64) ** 2).sum(1).max()
                                     for c in self.codebooks)
        ok = (np.diff(ds, axis=1) >= MARGIN * scale[:, None]).all(1)
        return codes[order[:, :top]], ok

    def inputs(self, rng, rows, zero_row=False, top=0):
        """float32 rows clear of near-ties (by the construction above)."""
        keep = []
        if zero_row:
            z = np.zeros((1, self.D), dtype=np.float32)
            if self.codes(z)[1][0]:
                keep.append(z)
        have = sum(len(k) for k in keep)
        for _ in range(20):
            if have >= rows:
                break
            cand = (rng.standard_normal((rows, self.D)) *
                    rng.uniform(0.2, 3.0, (rows, 1))).astype(np.float32)
            ok = self.codes(cand)[1]
            if top:
                ok &= self.ranked_tuples(cand, top)[1]
            keep.append(cand[ok])
            have += int(ok.sum())
        x = np.concatenate(keep)[:rows]
        if len(x) < rows:
            raise AssertionError(f"only {len(x)} of {rows} rows clear of near-ties")
        return x


CASES = [
    # name, {tower: (D, hidden, E, K, act, norm, bias)}
    ("relu_l2_bias+gelu_user", {
        "item": (24, [32, 16], 8, [16, 9, 31], "relu", "l2", True),
        "user": (10, [], 8, [5, 40], "gelu", "none", False)}),
    ("gelu_l2_bias_4levels", {
        "item": (50, [40], 12, [64, 7, 3, 20], "gelu", "l2", True)}),
    ("silu_none_bias_deep", {
        "item": (33, [48, 24, 16], 6, [100, 50], "silu", "none", True)}),
    ("relu_none_nobias_wide", {
        "item": (96, [64, 32], 16, [256, 128, 256], "relu", "none", False)}),
    ("gelu_l2_nobias_single_level", {
        "item": (40, [24], 5, [37], "gelu", "l2", False)}),
]


@unittest.skipUnless(os.access(SEMID, os.X_OK),
                     f"{SEMID} not built (set SEMID_BIN to the directory holding semid)")
class ParityTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="semid-parity-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def encode(self, model, tower, inp, output):
        p = subprocess.run([SEMID, "encode", "--model", model, "--tower", tower,
                            "--input", inp, "--output", output],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        return p.stdout.decode("utf-8")

    def check_case(self, name, spec, seed):
        rng = np.random.default_rng(seed)
        towers = {t: Tower(rng, *args) for t, args in spec.items()}
        tensors = []
        for t, tw in towers.items():
            tensors += tw.tensors(t)
        semid = {"format_version": 1, "model_version": f"parity-{name}",
                 "towers": {t: {"activation": tw.act, "input_norm": tw.norm}
                            for t, tw in towers.items()}}
        model = os.path.join(self.dir, f"{name}.safetensors")
        write_safetensors(model, tensors, {"semid": json.dumps(semid)})
        for t, tw in towers.items():
            x = tw.inputs(rng, ROWS, zero_row=(tw.norm == "l2"))
            want, ok = tw.codes(x)
            self.assertTrue(ok.all())
            for dtype in ("float32", "float64"):
                inp = os.path.join(self.dir, f"{name}-{t}-{dtype}.npy")
                np.save(inp, x.astype(dtype))
                out = os.path.join(self.dir, f"{name}-{t}-{dtype}-codes.npy")
                self.encode(model, t, inp, out)
                got = np.load(out)
                self.assertEqual(got.dtype, np.int32)
                self.assertEqual(got.shape, want.shape)
                bad = np.nonzero((got != want).any(1))[0]
                self.assertEqual(len(bad), 0,
                                 f"{name}/{t}/{dtype}: {len(bad)} rows differ, first row "
                                 f"{bad[:1]}: got {got[bad[:1]]} want {want[bad[:1]]}")
            # TSV on stdout: "row<TAB>c0-c1-c2".
            text = self.encode(model, t, inp, "-")
            lines = text.splitlines()
            self.assertEqual(len(lines), ROWS)
            for i, line in enumerate(lines):
                row, _, codes = line.partition("\t")
                self.assertEqual(int(row), i)
                self.assertEqual(codes, "-".join(str(int(c)) for c in want[i]),
                                 f"{name}/{t} TSV row {i}")

    def test_cases(self):
        for i, (name, spec) in enumerate(CASES):
            with self.subTest(case=name):
                self.check_case(name, spec, 1000 + i)

    def test_alternatives_vs_brute_force(self):
        """--top-k 6 on a 3 x 4 x 3 code space: the beam (width 12) holds
        every prefix, so its alternatives must be exactly the next best tuples
        of an exhaustive float64 ranking, in order, in .npy and TSV output
        (rows whose first 7 tuple distances are not all separated by the
        margin are not used)."""
        top = 6
        rng = np.random.default_rng(77)
        tw = Tower(rng, 20, [24], 6, [3, 4, 3], "relu", "l2", True)
        semid = {"format_version": 1, "model_version": "parity-topk",
                 "towers": {"item": {"activation": "relu", "input_norm": "l2"}}}
        model = os.path.join(self.dir, "topk.safetensors")
        write_safetensors(model, tw.tensors("item"), {"semid": json.dumps(semid)})
        rows = 150
        x = tw.inputs(rng, rows, top=top)
        greedy, ok = tw.codes(x)
        ranked, ok2 = tw.ranked_tuples(x, top)
        self.assertTrue(ok.all() and ok2.all())
        want = np.zeros((rows, top * 3), dtype=np.int64)
        for i in range(rows):
            alts = [t for t in ranked[i] if not (t == greedy[i]).all()][:top - 1]
            want[i] = np.concatenate([greedy[i]] + alts)
        inp = os.path.join(self.dir, "topk.npy")
        np.save(inp, x)
        out = os.path.join(self.dir, "topk-codes.npy")
        p = subprocess.run([SEMID, "encode", "--model", model, "--input", inp, "--output", out,
                            "--top-k", str(top)], stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        got = np.load(out)
        self.assertEqual(got.shape, want.shape)
        bad = np.nonzero((got != want).any(1))[0]
        self.assertEqual(len(bad), 0, f"{len(bad)} rows differ, first {bad[:1]}: "
                         f"got {got[bad[:1]]} want {want[bad[:1]]}")
        p = subprocess.run([SEMID, "encode", "--model", model, "--input", inp, "--output", "-",
                            "--top-k", str(top)], stdout=subprocess.PIPE, timeout=120)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(len(p.stdout.decode("utf-8").splitlines()), len(want))
        for i, line in enumerate(p.stdout.decode("utf-8").splitlines()):
            fields = line.split("\t")
            self.assertEqual(int(fields[0]), i)
            self.assertEqual(fields[1:], ["-".join(str(int(c)) for c in want[i, 3 * j:3 * j + 3])
                                          for j in range(top)])

    def test_reference_is_not_trivial(self):
        """The reference must spread codes over the codebooks, or parity
        would be cheap; and the margin must leave most rows usable."""
        rng = np.random.default_rng(5)
        tw = Tower(rng, 24, [32, 16], 8, [16, 9, 31], "relu", "l2", True)
        x = (rng.standard_normal((2000, 24))).astype(np.float32)
        codes, ok = tw.codes(x)
        self.assertGreater(ok.mean(), 0.5)
        for l, k in enumerate(tw.K):
            self.assertGreater(len(np.unique(codes[:, l])), k // 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
