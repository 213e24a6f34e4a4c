#!/usr/bin/python3
"""Integration tests for bin/semid-train (gen, train, eval) with Debian's
python3 + numpy.  Programs come from $SEMID_BIN (default "bin").

- gen: the lastfm layout, its invariants, determinism;
- every malformed input: exit status 2 and a message naming the file and
  line (or row);
- config file + flags (flags win, unknown key named);
- atomic publish: the trainer is killed with SIGKILL at random moments while
  it publishes the model and its checkpoint to the same paths over and over,
  and a reader polling those paths never sees a partial file;
- resume: a run stopped (cleanly, and by SIGKILL) and resumed gives the same
  tensor bytes as an uninterrupted one;
- one run per --out: a second one (--resume too) is refused at once, exit 75,
  while the first holds OUT.lock;
- SIGTERM and SIGINT: the trainer stops at the next step (while loading the
  data and in the codebooks' k-means too), exits 128 + the signal, publishes nothing, leaves no temp
  file, and names the epoch its checkpoint holds, which --resume then continues from; gen stopped so, or
  killed with SIGKILL, leaves the directory's earlier files byte for byte
  and no temp file;
- end to end: `semid inspect` accepts the model, and `semid encode` codes
  equal an independent numpy encoder of the file and the figures the
  trainer's evaluation put into the metadata.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/trainer/test_train.py
"""
import filecmp
import gzip
import hashlib
import json
import os
import pty
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from semid_files import writing_into  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import semid_testlib as T  # noqa: E402  (as_nobody)

BIN = os.environ.get("SEMID_BIN", "bin")
TRAIN = os.path.join(BIN, "semid-train")
SEMID = os.path.join(BIN, "semid")
# small and fast: a couple of seconds per run on a shared 2-core machine
SMALL = ["--epochs", "2", "--batch-size", "128", "--hidden", "32", "--latent-dim", "8",
         "--codebook-size", "16", "--levels", "2", "--threads", "1", "--no-progress",
         "--kmeans-iters", "5"]


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def dir_files(d):
    """{name: bytes} of every file in @d."""
    out = {}
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            out[f] = fh.read()
    return out


def lock_signed(lock, pid):
    """The lock file @lock names process @pid ("PID HOST\\n")."""
    try:
        with open(lock) as f:
            return re.match(r"%d \S+\n\Z" % pid, f.read()) is not None
    except FileNotFoundError:
        return False


def parse_safetensors(buf):
    """Full structural check of a safetensors file; returns (header, data)."""
    if len(buf) < 8:
        raise ValueError("shorter than 8 bytes")
    n = struct.unpack("<Q", buf[:8])[0]
    if 8 + n > len(buf):
        raise ValueError("header runs past the end")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = buf[8 + n:]
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    pos = 0
    for b, e in spans:
        if b != pos or e < b:
            raise ValueError("hole or overlap in the data section")
        pos = e
    if pos != len(data):
        raise ValueError(f"data section {len(data)} bytes, tensors end at {pos}")
    return header, data


DT = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "F64": np.float64}


def rewrite_metadata(path, key, change):
    """Replace the text of metadata entry KEY of safetensors file PATH by
    change(text); the tensors stay as they are."""
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    header["__metadata__"][key] = change(header["__metadata__"][key])
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + buf[8 + n:])


def load_tensors(path):
    with open(path, "rb") as f:
        header, data = parse_safetensors(f.read())
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[b:e], dtype=DT[v["dtype"]]).reshape(v["shape"])
    return out, header.get("__metadata__", {})


ACT = {
    "relu": lambda x: np.maximum(x, 0),
    "identity": lambda x: x,
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
}


def ref_encode(t, meta, tower, x):
    """Independent numpy (float64) encoder of a model-profile file: returns
    codes and, per row and level, the gap between the best and second-best
    squared distance (to tell genuine near-ties from disagreements)."""
    info = meta["towers"][tower]
    h = x.astype(np.float64)
    if info["input_norm"] == "l2":
        h = h / np.linalg.norm(h, axis=1, keepdims=True)
    n = 0
    while f"{tower}.encoder.{n}.weight" in t:
        n += 1
    for i in range(n):
        w = t[f"{tower}.encoder.{i}.weight"].astype(np.float64)
        b = t.get(f"{tower}.encoder.{i}.bias")
        h = h @ w.T + (b.astype(np.float64) if b is not None else 0)
        if i < n - 1:
            h = ACT[info["activation"]](h)
    r = h
    codes, gaps = [], []
    lvl = 0
    while f"{tower}.codebook.{lvl}" in t:
        c = t[f"{tower}.codebook.{lvl}"].astype(np.float64)
        d = (r * r).sum(1)[:, None] - 2 * r @ c.T + (c * c).sum(1)[None, :]
        k = np.argmin(d, axis=1)
        s = np.sort(d, axis=1)
        gaps.append(s[:, 1] - s[:, 0])
        codes.append(k)
        r = r - c[k]
        lvl += 1
    return np.stack(codes, 1), np.stack(gaps, 1)


class HelpTest(unittest.TestCase):
    def test_help_names_every_config_key(self):
        """README says `semid-train --help` lists every key: each key of the
        "Model defaults" it prints has its flag in the list above it (the
        two input widths come from the data; "views" is --view1 .. view6)."""
        p = run(TRAIN, "--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout
        defaults = json.loads(text.split("Model defaults: ", 1)[1].splitlines()[0])
        flags = text.split("Model defaults: ", 1)[0]
        for key in defaults:
            if key in ("D_user", "D_item"):
                continue
            name = "view1" if key == "views" else key.replace("_", "-")
            self.assertRegex(flags, r"(--|/ )%s\b" % re.escape(name), key)

    def test_help_defaults_are_a_config_file(self):
        """The "Model defaults" --help prints are a --config file as they
        stand (D_user and D_item printed as 0 were refused: "config key
        D_user: "0" is not an integer"), in short floats ("lr": 0.001, not
        0.00100000005); the input widths, which a model's config names, are
        taken as a key and a flag (TrainerTest checks them against the
        data), in their range; the aliases and "views" are listed."""
        text = run(TRAIN, "--help").stdout
        line = text.split("Model defaults: ", 1)[1].splitlines()[0]
        defaults = json.loads(line)
        self.assertNotIn("D_user", defaults)
        self.assertNotIn("D_item", defaults)
        self.assertIn('"lr": 0.001,', line)
        self.assertNotRegex(line, r"\d{8}")
        for alias, key in (("E", "--latent-dim"), ("L", "--levels"), ("K", "--codebook-size")):
            self.assertRegex(text, r"\n  %s .*\balias %s\)" % (key, alias))
        self.assertRegex(text, r"\n  --views ")
        with tempfile.TemporaryDirectory(prefix="test_train.") as tmp:
            cfg = os.path.join(tmp, "defaults.json")
            with open(cfg, "w") as f:
                f.write(line)
            p = run(TRAIN, "--config", cfg)  # read, then the data is missing
            self.assertEqual((p.returncode, p.stderr), (2, "semid-train: --items, --users, "
                                                           "--train and --out are required\n"))
            required = "semid-train: --items, --users, --train and --out are required\n"
            for key, flag in (("D_user", "--D-user"), ("D_item", "--D_item")):
                with open(cfg, "w") as f:
                    json.dump({key: 24}, f)
                p = run(TRAIN, "--config", cfg)
                self.assertEqual((p.returncode, p.stderr), (2, required))
                p = run(TRAIN, flag, "24")
                self.assertEqual((p.returncode, p.stderr), (2, required))
                p = run(TRAIN, flag, "65537")
                self.assertEqual((p.returncode, p.stderr), (
                    2, "semid-train: %s: config key %s: \"65537\" is not an integer in [1, "
                    "65536]\n" % (flag, key)))

    def test_version_and_flags_without_value(self):
        """--version answers as the other two programs do; a flag given no
        value is named as unknown when no key has that name (it used to say
        "needs a value" for --version and --foo), and as needing a value for
        every key the trainer has (each key of the printed model defaults)."""
        p = run(TRAIN, "--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^semid-train \d+\.\d+\.\d+ \(model format \d+\)\n$")
        for argv in (["--foo"], ["--foo", "1"], ["--out", "m", "--foo"]):
            p = run(TRAIN, *argv)
            self.assertEqual(p.returncode, 2, argv)
            self.assertIn("unknown option --foo", p.stderr, argv)
        text = run(TRAIN, "--help").stdout
        defaults = json.loads(text.split("Model defaults: ", 1)[1].splitlines()[0])
        for key in list(defaults) + ["out", "items", "view6", "latent-dim"]:
            flag = "--" + key.replace("_", "-")
            p = run(TRAIN, flag)
            self.assertEqual(p.returncode, 2, flag)
            self.assertIn("%s needs a value" % flag, p.stderr, flag)


class MessageTest(unittest.TestCase):
    """Messages of arguments refused before any data is read: each names
    its fault once, and the program once."""

    def test_a_switch_given_a_value_is_told_it_takes_none(self):
        """--resume=1 (a script's --resume=$RESUME), --help=1 and --version=1
        were "unknown option --resume (did you mean --resume?)": the flag
        is known, and takes no value.  Exit 2, nothing read or written."""
        with tempfile.TemporaryDirectory(prefix="test_train.") as tmp:
            out = os.path.join(tmp, "m.st")
            for argv, prog, flag in (
                    (["--out", out, "--resume=1"], "semid-train", "--resume=1"),
                    (["--resume=true", "--out", out], "semid-train", "--resume=true"),
                    (["--help=1"], "semid-train", "--help=1"),
                    (["--version=yes"], "semid-train", "--version=yes"),
                    (["gen", "--out", tmp, "--help=1"], "semid-train gen", "--help=1"),
                    (["eval", "--help=1"], "semid-train eval", "--help=1"),
                    (["profile", "--help=1"], "semid-train profile", "--help=1")):
                with self.subTest(argv=argv):
                    p = run(TRAIN, *argv)
                    name = flag.split("=")[0]
                    self.assertEqual((p.returncode, p.stderr, p.stdout),
                                     (2, "%s: %s takes no value, not %s\n" % (prog, name, flag),
                                      ""))
            self.assertEqual(os.listdir(tmp), [])

    def test_gen_names_the_count_at_fault(self):
        """gen's range checks said "semid-train gen: gen: need 2 <= items, 1 <=
        users ..." for every count: the prefix twice and the fault among five."""
        with tempfile.TemporaryDirectory(prefix="test_train.") as tmp:
            g = [TRAIN, "gen", "--out", os.path.join(tmp, "g"), "--items", 20, "--users", 10,
                 "--interactions", 50, "--dim", 4]
            for flag, value, msg in (
                    ("--items", 0, "items 0 is not in [3, 2^31-1] (a cold item, and warm "
                     "ones for a train and a test click)"),
                    # 2 items were taken, and always refused once written:
                    # "test.tsv would be empty ... raise the fraction"
                    ("--items", 2, "items 2 is not in [3, 2^31-1] (a cold item, and warm "
                     "ones for a train and a test click)"),
                    ("--users", 0, "users 0 is not in [1, 2^31-1]"),
                    ("--interactions", 9, "interactions 9 is fewer than the 10 users (each "
                     "user gets a click at least)"),
                    ("--dim", 0, "dim 0 is not in [1, 65536]"),
                    ("--user-dim", 70000, "user_dim 70000 is not in [1, 65536]"),
                    ("--cold-frac", 1, "cold_frac 1 and test_frac 0.15 must both be in "
                     "[0, 1)")):
                p = run(*g + [flag, value])
                self.assertEqual((p.returncode, p.stderr), (2, "semid-train gen: %s\n" % msg))
            self.assertFalse(os.path.exists(os.path.join(tmp, "g")))

    def test_hidden_names_the_width_at_fault(self):
        """--hidden 100000,100000 said it "is not a list of up to 8 widths like
        256,128": it is one, of widths above 65536."""
        for value, msg in (("100000,100000", ': width 100000 is not in [1, 65536]'),
                           ("64, 0", ": width 0 is not in [1, 65536]"),
                           ("64,-3", ": width -3 is not in [1, 65536]"),
                           ("1,2,3,4,5,6,7,8,9", ": more than 8 widths"),
                           ("64,x", " is not a list of up to 8 widths like 256,128")):
            p = run(TRAIN, "--hidden", value)
            self.assertEqual((p.returncode, p.stderr),
                             (2, 'semid-train: --hidden: config key hidden: "%s"%s\n'
                              % (value, msg)))

    def test_hidden_fraction_is_no_separator(self):
        """A fractional width ("hidden": [32.5] in a config file, or
        --hidden 256,1e2) was refused as "bad separator": the width is at
        fault, and named."""
        for value, msg in (("32.5", ": width 32.5 is not an integer"),
                           ("256,1e2", ": width 1e2 is not an integer")):
            p = run(TRAIN, "--hidden", value)
            self.assertEqual((p.returncode, p.stderr),
                             (2, 'semid-train: --hidden: config key hidden: "%s"%s\n'
                              % (value, msg)))


    def test_unknown_flags_and_keys_get_a_hint(self):
        """A misspelt flag or config key was "unknown" and no more, where the
        server names the one key near it: so do training (its run keys, model
        keys, --no- switches, --config and --resume), a config file, eval,
        gen and profile; nothing is guessed when no one key is near."""
        for argv, msg in (
                (["--hiden", "32"], "unknown option --hiden (did you mean --hidden?)"),
                (["--latent_dimm", "8"], "unknown option --latent_dimm (did you mean "
                 "--latent-dim?)"),
                (["--progres-every", "1"], "unknown option --progres-every (did you mean "
                 "--progress-every?)"),
                (["--no-evl"], "unknown option --no-evl (did you mean --no-eval?)"),
                (["--resum"], "unknown option --resum (did you mean --resume?)"),
                (["--viewss", "1"], "unknown option --viewss (did you mean --views?)"),
                (["--codebook", "8"], "unknown option --codebook (did you mean "
                 "--codebook-size?)"),
                # nothing near: where to look (it said "unknown option --foo"
                # and no more, where eval, gen and the server say it)
                (["--view7", "1"], "unknown option --view7 (try --help)"),  # six views
                (["--foo"], "unknown option --foo (try --help)"),
                (["--valid", "v.tsv"], "unknown option --valid (try --help)"),
                (["eval", "--modle", "m"], 'eval: unknown option "--modle" (did you mean '
                 '--model?)'),
                (["eval", "--foo", "m"], 'eval: unknown option "--foo" (try --help)'),
                (["gen", "--itemz", "3"], "gen: unknown option --itemz (did you mean "
                 "--items?)"),
                (["gen", "--cold-frc", "0"], "gen: unknown option --cold-frc "
                 "(did you mean --cold-frac?)"),
                (["profile", "--n-user", "3"], "profile: unknown option --n-user (did you "
                 "mean --n-users?)")):
            p = run(TRAIN, *argv)
            self.assertEqual((p.returncode, p.stderr), (2, "semid-train%s %s\n"
                                                        % ("" if argv[0] in ("eval", "gen",
                                                                             "profile")
                                                           else ":", msg)), argv)
        with tempfile.TemporaryDirectory(prefix="test_train.") as tmp:
            cfg = os.path.join(tmp, "c.json")
            for key, near in (("codebook_sise", "codebook_size"),
                              ("progres_every", "progress_every"),
                              ("batch-sise", "batch_size"), ("levls", "levels")):
                with open(cfg, "w") as f:
                    json.dump({key: 1}, f)
                p = run(TRAIN, "--config", cfg)
                self.assertEqual((p.returncode, p.stderr),
                                 (2, 'semid-train: %s: config key "%s": unknown (did you mean '
                                  '"%s"?)\n' % (cfg, key, near)))


class TrainerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="test_train.")
        cls.data = os.path.join(cls.tmp, "data")
        p = run(TRAIN, "gen", "--out", cls.data, "--items", 600, "--users", 300,
                "--interactions", 6000, "--dim", 24, "--seed", 5)
        assert p.returncode == 0, p.stderr
        cls.gen_summary = json.loads(p.stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def d(self, name):
        return os.path.join(self.data, name)

    def base_args(self, out, train=None, items=None):
        return [TRAIN, "--items", items or self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", train or self.d("train.tsv"), "--cold-items",
                self.d("cold_items.txt"), "--out", out] + SMALL

    def eval_args(self, model):
        """semid-train eval of @model on the shared data's warm test set."""
        return [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", self.d("train.tsv"), "--test",
                self.d("test.tsv")]

    # ---- gen ----

    def test_gen_layout_and_determinism(self):
        items = np.load(self.d("items.npy"))
        users = np.load(self.d("users.npy"))
        self.assertEqual(items.shape, (600, 24))
        self.assertEqual(users.shape, (300, 24))
        self.assertEqual(items.dtype, np.float32)
        np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
        tr = np.loadtxt(self.d("train.tsv"), dtype=np.int64, ndmin=2)
        te = np.loadtxt(self.d("test.tsv"), dtype=np.int64, ndmin=2)
        ct = np.loadtxt(self.d("cold_test.tsv"), dtype=np.int64, ndmin=2)
        cold = set(np.loadtxt(self.d("cold_items.txt"), dtype=np.int64).tolist())
        self.assertEqual(len(cold), 60)
        self.assertFalse(cold & set(tr[:, 1].tolist()), "cold item in train")
        self.assertFalse(cold & set(te[:, 1].tolist()), "cold item in warm test")
        self.assertTrue(set(ct[:, 1].tolist()) <= cold)
        self.assertEqual(set(tr[:, 0].tolist()), set(range(300)), "a user without train")
        pairs = np.concatenate([tr, te, ct])
        self.assertEqual(len({tuple(p) for p in pairs.tolist()}), len(pairs), "repeated pair")
        # about the requested number of clicks, with popularity skew
        self.assertGreater(len(pairs), 5400)
        self.assertLessEqual(len(pairs), 6300)
        pop = np.bincount(tr[:, 1], minlength=600)
        self.assertGreater(pop.max(), 4 * np.median(pop[pop > 0]))
        self.assertEqual(self.gen_summary["train"], len(tr))
        # the same seed gives the same bytes, another seed other bytes
        again = os.path.join(self.tmp, "nested", "again")  # gen makes missing parents
        other = os.path.join(self.tmp, "other")
        for out, seed in ((again, 5), (other, 6)):
            p = run(TRAIN, "gen", "--out", out, "--items", 600, "--users", 300,
                    "--interactions", 6000, "--dim", 24, "--seed", seed)
            self.assertEqual(p.returncode, 0, p.stderr)
        for f in ("items.npy", "users.npy", "train.tsv", "test.tsv", "cold_items.txt"):
            with open(self.d(f), "rb") as a, open(os.path.join(again, f), "rb") as b:
                self.assertEqual(a.read(), b.read(), f)
        with open(self.d("train.tsv"), "rb") as a, open(os.path.join(other, "train.tsv"),
                                                        "rb") as b:
            self.assertNotEqual(a.read(), b.read())
        p = run(TRAIN, "gen", "--out", other, "--items", "x")
        self.assertEqual(p.returncode, 2)

    # ---- malformed inputs ----

    def test_malformed_inputs(self):
        bad = os.path.join(self.tmp, "bad")
        os.makedirs(bad, exist_ok=True)
        with open(self.d("train.tsv")) as f:
            good = f.read().splitlines()
        with open(self.d("cold_items.txt")) as f:
            cold = sorted(int(x) for x in f.read().split())
        cases = [
            ("ragged", good[:3] + ["17"] + good[3:], ":4:", "ragged"),
            ("nonint", good[:5] + ["3\tx7"], ":6:", "not a non-negative integer"),
            ("float", good[:1] + ["3\t7.0"], ":2:", "not a non-negative integer"),
            ("negative", ["-3\t1"], ":1:", "not a non-negative integer"),
            ("user_range", good[:2] + ["300\t1"], ":3:", "user 300 out of range"),
            ("item_range", good[:7] + ["1\t600"], ":8:", "item 600 out of range"),
            ("cold_in_train", good[:4] + [f"1\t{cold[0]}"], ":5:", "cold-item list"),
            ("blank_line", good[:2] + [""] + good[2:], ":3:", "empty line"),
        ]
        for name, lines, where, what in cases:
            path = os.path.join(bad, name + ".tsv")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            p = run(*self.base_args(os.path.join(bad, "m.st"), train=path))
            self.assertEqual(p.returncode, 2, f"{name}: {p.stderr}")
            self.assertIn(path + where, p.stderr, name)
            self.assertIn(what, p.stderr, name)
            self.assertFalse(os.path.exists(os.path.join(bad, "m.st")))
        empty = os.path.join(bad, "empty.tsv")
        open(empty, "w").close()
        p = run(*self.base_args(os.path.join(bad, "m.st"), train=empty))
        self.assertEqual(p.returncode, 2)
        self.assertIn(empty, p.stderr)
        self.assertIn("empty file", p.stderr)
        # a compressed copy given by mistake: quoted as binary garbage ("not
        # a non-negative integer", "bad magic"); an embedding file as the
        # interactions: "a ragged line"
        with open(self.d("train.tsv"), "rb") as f:
            tsv = f.read()
        with open(self.d("items.npy"), "rb") as f:
            npy = f.read()
        for name, body, flag, what in (
                ("train.tsv.gz", tsv, "train", "not a text file: it looks like "
                 "gzip-compressed data (decompress it first)"),
                ("cold.txt.gz", b"61\n62\n", "cold-items", "not a text file: it looks "
                 "like gzip-compressed data"),
                ("items.npy.gz", npy, "items", "not a .npy file (bad magic): it looks "
                 "like gzip-compressed data (decompress it first)"),
                ("items.npy", npy, "train", "not a text file: it looks like a .npy array")):
            path = os.path.join(bad, name)
            with open(path, "wb") as f:
                f.write(gzip.compress(body) if name.endswith(".gz") else body)
            args = self.base_args(os.path.join(bad, "m.st"))
            args[args.index("--" + flag) + 1] = path
            p = run(*args)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("%s: %s" % (path, what), p.stderr)
        # a non-finite value in an embedding file: file and row named
        x = np.load(self.d("items.npy"))
        x[123, 4] = np.inf
        nan_path = os.path.join(bad, "items_inf.npy")
        np.save(nan_path, x)
        p = run(*self.base_args(os.path.join(bad, "m.st"), items=nan_path))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(nan_path, p.stderr)
        self.assertIn("row 123", p.stderr)
        # a width past the trainer's bound: "too large" named neither the
        # bound nor which of the two it was
        wide = os.path.join(bad, "wide.npy")
        np.save(wide, np.zeros((2, 65537), np.float32))
        p = run(*self.base_args(os.path.join(bad, "m.st"), items=wide))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("%s: shape (2, 65537) too large (at most 2147483647 rows of 65536 "
                      "columns)" % wide, p.stderr)
        # a 1-D array and a missing file
        one_d = os.path.join(bad, "one_d.npy")
        np.save(one_d, np.zeros(10, np.float32))
        for path in (one_d, os.path.join(bad, "missing.npy")):
            p = run(*self.base_args(os.path.join(bad, "m.st"), items=path))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(path, p.stderr)
        # eval reads its test files the same way
        tpath = os.path.join(bad, "test_bad.tsv")
        with open(tpath, "w") as f:
            f.write("1\t2\n1\t2\t3\n4\n")
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        p = run(TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", self.d("train.tsv"), "--test", tpath)
        self.assertEqual(p.returncode, 2)
        self.assertIn(tpath + ":3:", p.stderr)

    def test_test_files_on_their_side_of_the_cold_split(self):
        """The evaluation ranks cold items apart, so a test file on the
        wrong side of the split gave figures that looked real: the warm
        test passed as --test-cold without --cold-items made its trained
        items "cold".  Refused (exit 2) with the file and line, before any
        training."""
        out = os.path.join(self.tmp, "split.st")
        with open(self.d("cold_test.tsv")) as f:
            first_cold = f.readline().split("\t")[1].strip()
        with open(self.d("test.tsv")) as f:
            first_warm = f.readline().split("\t")[1].strip()
        p = run(*self.base_args(out) + ["--test", self.d("cold_test.tsv")])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("%s:1: item %s is in the cold-item list" % (self.d("cold_test.tsv"),
                                                                   first_cold), p.stderr)
        p = run(*self.base_args(out) + ["--test-cold", self.d("test.tsv")])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("%s:1: item %s is not in the cold-item list" % (self.d("test.tsv"),
                                                                       first_warm), p.stderr)
        self.assertFalse(os.path.exists(out))
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv")]
        p = run(*ev + ["--test-cold", self.d("test.tsv")])  # no cold list
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"%s:1: item %s has \d+ train clicks, so is not cold" %
                         (re.escape(self.d("test.tsv")), first_warm))
        p = run(*ev + ["--test", self.d("test.tsv"), "--test-cold", self.d("cold_test.tsv")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("cold", json.loads(p.stdout)["item_side"])

    def _warm_test_with(self, name, line, at):
        """A new directory @name, and in it a copy of the shared test.tsv
        with @line as its line @at."""
        split = os.path.join(self.tmp, name)
        os.makedirs(split, exist_ok=True)
        with open(self.d("test.tsv")) as f:
            lines = f.read().splitlines()
        warm = os.path.join(split, "test.tsv")
        with open(warm, "w") as f:
            f.write("\n".join(lines[:at - 1] + [line] + lines[at - 1:]) + "\n")
        return split, warm

    def test_warm_test_item_of_the_cold_test_refused(self):
        """Without --cold-items the cold set is the items of --test-cold,
        and those are no warm candidates: a --test line with one of them
        (a split that leaked a cold item into the warm test) could never
        be a hit, and lowered the warm figures without a word, where
        --cold-items refuses that line.  Refused so too (exit 2), naming
        both files' lines, by eval and by training before it trains."""
        with open(self.d("cold_test.tsv")) as f:
            cold_lines = f.read().splitlines()
        item = cold_lines[2].split("\t")[1]
        first = next(k for k, ln in enumerate(cold_lines) if ln.split("\t")[1] == item) + 1
        split, warm = self._warm_test_with("split2", "0\t" + item, 5)
        want = "%s:5: item %s is in the cold test %s (line %d)" % (warm, item,
                                                                   self.d("cold_test.tsv"), first)
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        p = run(TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", self.d("train.tsv"), "--test", warm,
                "--test-cold", self.d("cold_test.tsv"))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(want, p.stderr)
        self.assertEqual(p.stdout, "")
        out = os.path.join(split, "m.st")
        args = self.base_args(out) + ["--test", warm, "--test-cold", self.d("cold_test.tsv")]
        i = args.index("--cold-items")
        del args[i:i + 2]
        p = run(*args)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(want, p.stderr)
        self.assertNotIn("epoch 1/", p.stderr)
        self.assertFalse(os.path.exists(out))
        # the files as they are: no line of one in the other
        args[args.index(warm)] = self.d("test.tsv")
        p = run(*args)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_warm_test_pair_of_the_train_file_refused(self):
        """The warm ranking leaves each user's --train items out, so a
        --test line repeating a --train pair (a split of a log with repeat
        clicks) could never be a hit: it counted in the user's test items
        and lowered Recall and NDCG without a word.  Refused (exit 2),
        naming the test line and the train line, by eval and by training
        before it trains."""
        with open(self.d("train.tsv")) as f:
            pair = f.read().splitlines()[6]  # line 7; the file has no repeated pair
        split, warm = self._warm_test_with("split3", pair, 3)
        u, i = pair.split("\t")
        want = "%s:3: user %s clicked item %s in %s too (line 7)" % (warm, u, i,
                                                                    self.d("train.tsv"))
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        p = run(*self.eval_args(model)[:-1] + [warm])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(want, p.stderr)
        self.assertEqual(p.stdout, "")
        out = os.path.join(split, "m.st")
        p = run(*self.base_args(out) + ["--test", warm])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(want, p.stderr)
        self.assertNotIn("epoch 1/", p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_eval_without_a_cold_set_says_what_it_ranks(self):
        """`semid-train eval --test` alone (a team checking its validation
        split) ranked the held-out cold items among the warm candidates and
        printed lower warm figures than its training run had, with nothing
        saying why.  A line on stderr now counts the items without a train
        click that it ranks so; with --cold-items (or --test-cold) there
        is none."""
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        tr = np.loadtxt(self.d("train.tsv"), dtype=np.int64, ndmin=2)
        unclicked = 600 - len(set(tr[:, 1].tolist()))
        self.assertGreater(unclicked, 0)
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv"), "--test", self.d("test.tsv")]
        p = run(*ev)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("evaluating: no cold set (--cold-items, --test-cold): the %d items with "
                      "no --train click are ranked as warm candidates too; give the "
                      "--cold-items of the training run to compare with its figures\n"
                      % unclicked, p.stderr)
        for more in (["--cold-items", self.d("cold_items.txt")],
                     ["--test-cold", self.d("cold_test.tsv")]):
            p = run(*ev + more)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertNotIn("no cold set", p.stderr)

    def test_eval_usage_brackets_what_it_runs_without(self):
        """--help's eval usage: a flag out of brackets is one eval refuses to
        run without, a bracketed one it runs without (alone, and all of them
        left out).  It showed --test out of brackets, and said --eval
        evaluates "when --test is given", while eval, and a training run's
        evaluation, run with --test-cold alone too, and eval with neither
        (the code statistics only)."""
        text = run(TRAIN, "--help").stdout
        usage = re.search(r"\n {7}semid-train eval (.*?)\n {7}semid-train ", text, re.S).group(1)
        bracketed = re.findall(r"\[(--[\w-]+)", usage)
        required = re.findall(r"--[\w-]+", re.sub(r"\[[^]]*\]", "", usage))
        self.assertEqual(sorted(required), ["--items", "--model", "--train", "--users"], usage)
        self.assertEqual(sorted(bracketed), ["--cold-items", "--progress-every", "--test",
                                             "--test-cold"], usage)
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        given = {"--model": model, "--items": self.d("items.npy"),
                 "--users": self.d("users.npy"), "--train": self.d("train.tsv"),
                 "--test": self.d("test.tsv"), "--test-cold": self.d("cold_test.tsv"),
                 "--cold-items": self.d("cold_items.txt"), "--progress-every": "30"}

        def ev(leave_out):
            args = [TRAIN, "eval"]
            for flag, value in given.items():
                if flag not in leave_out:
                    args += [flag, value]
            return run(*args)
        for flag in required:
            p = ev([flag])
            self.assertEqual(p.returncode, 2, flag)
            self.assertIn("are required", p.stderr)
        for leave_out in [[f] for f in bracketed] + [bracketed]:
            with self.subTest(without=leave_out):
                p = ev(leave_out)
                self.assertEqual(p.returncode, 0, p.stderr)
                figures = json.loads(p.stdout)
                self.assertEqual("warm" in figures["item_side"] if "item_side" in figures
                                 else False, "--test" not in leave_out)
        p = ev(["--test"])
        self.assertIn("cold", json.loads(p.stdout)["item_side"])
        self.assertRegex(text, r"\n  --eval +evaluate at the end when --test or --test-cold is "
                               r"given \[true\]\n")

    def test_config_file_and_flags(self):
        cfgdir = os.path.join(self.tmp, "cfg")
        os.makedirs(cfgdir, exist_ok=True)
        cfg = os.path.join(cfgdir, "c.json")
        out = os.path.join(cfgdir, "m.st")
        with open(cfg, "w") as f:
            # keys spelt as their flags are keys too, the run keys
            # (model-version, progress-every) as much as the model's (batch-size)
            json.dump({"codebook_size": 8, "levels": 3, "hidden": [16], "lr": 0.002,
                       "epochs": 1, "model-version": "from-file", "progress-every": 7,
                       "batch-size": 64}, f)
        # no SMALL here: its flags would override the file
        args = [TRAIN, "--items", self.d("items.npy"), "--users", self.d("users.npy"),
                "--train", self.d("train.tsv"), "--out", out, "--threads", "1",
                "--no-progress", "--batch-size", "128", "--latent-dim", "8", "--config", cfg,
                "--levels", "2"]
        p = run(*args)
        self.assertEqual(p.returncode, 0, p.stderr)
        t, meta = load_tensors(out)
        semid = json.loads(meta["semid"])
        self.assertEqual(semid["model_version"], "from-file")
        self.assertEqual(semid["run"]["progress_every"], 7)
        self.assertEqual(semid["config"]["batch_size"], 128)  # the flag beat the file
        self.assertEqual(t["item.codebook.0"].shape, (8, 8))  # K from the file, E flag
        self.assertNotIn("item.codebook.2", t)  # --levels 2 beat the file's 3
        self.assertIn("item.codebook.1", t)
        self.assertEqual(t["item.encoder.0.weight"].shape, (16, 24))
        self.assertAlmostEqual(semid["config"]["lr"], 0.002, places=6)
        # an unknown key in the file, a bad value, an unknown flag: exit 2, key named
        with open(cfg, "w") as f:
            json.dump({"levels": 2, "codebook_sise": 8}, f)
        p = run(*self.base_args(out) + ["--config", cfg])
        self.assertEqual(p.returncode, 2)
        self.assertIn("codebook_sise", p.stderr)
        self.assertIn(cfg, p.stderr)
        # two keys for one setting: which one won hung on their order
        # ("views" and one "viewN": the order decided the weight used)
        for keys in ('"batch_size": 64, "batch-size": 128', '"codebook_size": 8, "K": 4',
                     '"stop-after": 1, "stop_after": 2',
                     '"views": [1, 1, 1, 1, 0.25, 0.25], "view6": 2',
                     '"view1": 0, "views": [1, 1, 1, 1, 1, 1]'):
            with open(cfg, "w") as f:
                f.write("{%s}" % keys)
            p = run(*self.base_args(out) + ["--config", cfg])
            self.assertEqual(p.returncode, 2, keys)
            a, b = re.findall(r'"([^"]+)":', keys)
            self.assertIn('%s: keys "%s" and "%s" set the same setting' % (cfg, a, b),
                          p.stderr)
        # a path or name key given a boolean or a number: {"out": false}
        # published ./false
        for key, val, kind in (("out", "false", "a boolean"), ("model_version", "true",
                                                                 "a boolean"),
                               ("items", "12", "a number")):
            with open(cfg, "w") as f:
                f.write('{"%s": %s}' % (key, val))
            p = run(*self.base_args(out) + ["--config", cfg])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn('%s: key "%s": value must be a string, not %s' % (cfg, key, kind),
                          p.stderr)
            self.assertFalse(os.path.exists(val))
        with open(cfg, "w") as f:
            f.write('{"levels": 2,}')
        p = run(*self.base_args(out) + ["--config", cfg])
        self.assertEqual(p.returncode, 2)
        self.assertIn(cfg, p.stderr)
        p = run(*self.base_args(out) + ["--latent-dimm", "8"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("latent_dimm", p.stderr.replace("-", "_"))
        p = run(*self.base_args(out) + ["--levels", "many"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("levels", p.stderr)

    def test_outputs_refused_before_training(self):
        """--out that could only fail after training, or that would publish
        over an input (the model or its OUT.ckpt), is refused at once with
        exit 2 and the inputs intact."""
        odir = os.path.join(self.tmp, "outs")
        os.makedirs(odir, exist_ok=True)
        items = os.path.join(odir, "items.npy")
        train = os.path.join(odir, "t.tsv.ckpt")  # what --out t.tsv checkpoints to
        shutil.copy(self.d("items.npy"), items)
        shutil.copy(self.d("train.tsv"), train)
        before = {}
        for f in (items, train):
            with open(f, "rb") as fh:
                before[f] = fh.read()
        for out, what in (
                (items, "is the --items input"),  # used to train, then publish over it
                (os.path.join(odir, "t.tsv"), "is the --train input"),
                (os.path.join(odir, "missing", "m.st"), "No such file or directory"),
                (odir, "not a regular file")):
            p = run(*self.base_args(out, train=train, items=items))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(what, p.stderr)
            self.assertIn("--out " + out, p.stderr)
            self.assertNotIn("epoch 1/", p.stderr)  # refused before training
        for f, b in before.items():
            with open(f, "rb") as fh:
                self.assertEqual(fh.read(), b, f)
        # the --config file as --out; a name whose checkpoint name (5 bytes
        # longer) the directory cannot hold: both used to fail only after the
        # first epoch, or to overwrite the config with the model
        cfg = os.path.join(odir, "c.json")
        with open(cfg, "w") as f:
            json.dump({"epochs": 1}, f)
        long_name = os.path.join(odir, "m" * 252)
        for out, extra, what in ((cfg, ["--config", cfg], "is the --config input"),
                                 (long_name, [], "longer than the 255 this directory")):
            p = run(*self.base_args(out) + extra)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(what, p.stderr)
            self.assertNotIn("epoch 1/", p.stderr)
        with open(cfg) as f:
            self.assertEqual(json.load(f), {"epochs": 1})
        os.remove(cfg)
        # a flag where a value belongs is not taken as the value
        args = self.base_args("x")
        k = args.index("--out")
        p = run(*args[:k] + ["--out", "--resume"] + args[k + 2:], cwd=odir)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--out needs a value", p.stderr)
        self.assertEqual(sorted(os.listdir(odir)), ["items.npy", "t.tsv.ckpt"])

    def test_existing_file_of_another_kind_refused(self):
        """--out (or its OUT.ckpt) naming an existing file that is no
        safetensors file (notes, an eval.json, a TSV not given as an input)
        was replaced by the model without a word; it is refused at once,
        exit 2, the file as it was.  An empty file, and a model, are
        replaced as before."""
        odir = os.path.join(self.tmp, "other_kind")
        os.makedirs(odir, exist_ok=True)
        notes, model = os.path.join(odir, "notes.txt"), os.path.join(odir, "m.st")
        for path, body, out in ((notes, b"hello\n", notes),
                                (notes, b'{"recall@10": 0.1}\n' * 40, notes),
                                (model + ".ckpt", b"{}", model)):
            with open(path, "wb") as f:
                f.write(body)
            p = run(*self.base_args(out))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--out %s: %s: " % (out, path), p.stderr)
            self.assertIn("an existing file, not a safetensors one", p.stderr)
            self.assertNotIn("epoch 1/", p.stderr)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), body)
            os.unlink(path)
        open(model, "wb").close()
        for _ in range(2):  # empty, then the model the first run published
            p = run(*self.base_args(model) + ["--epochs", "0"])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("published " + model, p.stderr)

    def test_eval_json_shape_is_documented(self):
        """Scripts read the evaluation JSON, and its shape was written down
        nowhere: README's example of it (every key) has the keys and value
        types of what training prints, what it stores in the metadata and
        what `eval` prints (with "model" more); without a test file training
        prints nothing."""
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                              "README.md")
        with open(readme) as f:
            text = f.read()
        k = text.find("The evaluation JSON's shape")
        self.assertGreaterEqual(k, 0, "README has no section on the evaluation JSON")
        block = re.search(r"\n\n((?:    .*\n)+)", text[k:]).group(1)
        doc = json.loads(block)

        def shape(v):
            if isinstance(v, dict):
                return {key: shape(x) for key, x in v.items()}
            if isinstance(v, list):
                return [shape(v[0])] if v else []
            return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) \
                else type(v).__name__

        edir = os.path.join(self.tmp, "eval_shape")
        os.makedirs(edir, exist_ok=True)
        out = os.path.join(edir, "m.st")
        tests = ["--test", self.d("test.tsv"), "--test-cold", self.d("cold_test.tsv")]
        p = run(*self.base_args(out) + tests)
        self.assertEqual(p.returncode, 0, p.stderr)
        printed = json.loads(p.stdout)
        self.assertEqual(shape(printed), shape(doc))
        _, meta = load_tensors(out)
        self.assertEqual(shape(json.loads(meta["semid"])["eval"]), shape(doc))
        p = run(TRAIN, "eval", "--model", out, "--items", self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", self.d("train.tsv"), "--cold-items",
                self.d("cold_items.txt"), *tests)
        self.assertEqual(p.returncode, 0, p.stderr)
        evald = json.loads(p.stdout)
        self.assertEqual(evald.pop("model"), out)
        self.assertEqual(shape(evald), shape(doc))
        p = run(*self.base_args(out) + ["--epochs", "0"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "")

    def test_every_config_file_is_an_input(self):
        """Every --config file is an input --out may not overwrite: only the
        last one given was compared (an earlier one was trained over), and
        only its first 1023 bytes (a longer path named no file, so the
        config it spelt was trained over too).  Refused at once, exit 2,
        each file as it was; more files than the trainer keeps count of are
        refused, not forgotten."""
        cdir = os.path.join(self.tmp, "configs")
        os.makedirs(cdir, exist_ok=True)
        c1, c2 = os.path.join(cdir, "c1.json"), os.path.join(cdir, "c2.json")
        c3 = os.path.join(cdir, "m3.st.ckpt")  # what --out m3.st checkpoints to
        before = {}
        for c, body in ((c1, {"epochs": 1}), (c2, {"levels": 2}), (c3, {"seed": 4})):
            with open(c, "w") as f:
                json.dump(body, f)
            with open(c, "rb") as f:
                before[c] = f.read()
        # the same c1 by a path of 1100 bytes
        long_c1 = os.path.join(cdir, "./" * 540 + "c1.json")
        self.assertGreater(len(long_c1), 1100)
        self.assertTrue(os.path.samefile(long_c1, c1))
        for out, configs, hit in ((c1, [c1, c2], c1),  # the first of two
                                  (c2, [c1, c2], c2),  # the last, as before
                                  (c1, [long_c1, c2], long_c1),  # longer than the old buffer
                                  (c3[:-5], [c3, c2], c3)):  # OUT.ckpt the first
            extra = [a for c in configs for a in ("--config", c)]
            p = run(*self.base_args(out) + extra)
            self.assertEqual(p.returncode, 2, (configs, p.stderr))
            self.assertIn("--out %s: " % out, p.stderr)
            # (a message is cut at 511 bytes: the long path's start is enough)
            self.assertIn(" is the --config input %s" % hit[:150], p.stderr)
            self.assertNotIn("epoch 1/", p.stderr)
        for c, b in before.items():
            with open(c, "rb") as f:
                self.assertEqual(f.read(), b, c)
        p = run(*self.base_args(os.path.join(cdir, "m.st")) + ["--config", c1] * 17)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--config %s: more than 16 config files" % c1, p.stderr)
        self.assertEqual(sorted(os.listdir(cdir)), ["c1.json", "c2.json", "m3.st.ckpt"])

    def test_symlink_out_refused(self):
        """A publish renames over its path: an --out (or OUT.ckpt) that is a
        symbolic link was replaced by the model, the file it named left as
        it was.  Refused before training, as `profile` refuses it, exit 2,
        the link and its file untouched."""
        ldir = os.path.join(self.tmp, "links")
        os.makedirs(ldir, exist_ok=True)
        target = os.path.join(ldir, "real.st")
        with open(target, "wb") as f:
            f.write(b"old model")
        link = os.path.join(ldir, "current.st")
        os.symlink(target, link)
        ckpt_link_out = os.path.join(ldir, "m.st")
        os.symlink(target, ckpt_link_out + ".ckpt")
        for out, named in ((link, link), (ckpt_link_out, ckpt_link_out + ".ckpt")):
            p = run(*self.base_args(out) + ["--epochs", "1"])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--out %s: %s is a symbolic link: give the file it names" %
                          (out, named), p.stderr)
            self.assertNotIn("epoch 1/", p.stderr)
        self.assertTrue(os.path.islink(link))
        self.assertTrue(os.path.islink(ckpt_link_out + ".ckpt"))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"old model")
        self.assertEqual(sorted(os.listdir(ldir)), ["current.st", "m.st.ckpt", "real.st"])

    def test_resume_refuses_other_data(self):
        """A checkpoint made on other training data (same sizes, another
        order; fewer lines; another cold list) is refused, untouched."""
        rdir = os.path.join(self.tmp, "resume-data")
        os.makedirs(rdir, exist_ok=True)
        out = os.path.join(rdir, "m.st")
        args = self.base_args(out) + ["--epochs", "3"]
        p = run(*args + ["--stop-after", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        # "stop after N epochs in all": a resume already there trains none
        p = run(*args + ["--stop-after", "1", "--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotRegex(p.stderr, r"epoch 2/3")
        self.assertIn("stopped after epoch 1 (--stop-after)", p.stderr)
        with open(out + ".ckpt", "rb") as f:
            ckpt = f.read()
        with open(self.d("train.tsv")) as f:
            lines = f.read().splitlines()
        shuffled, fewer = os.path.join(rdir, "shuffled.tsv"), os.path.join(rdir, "fewer.tsv")
        with open(shuffled, "w") as f:
            f.write("\n".join(lines[1:] + lines[:1]) + "\n")
        with open(fewer, "w") as f:
            f.write("\n".join(lines[:-5]) + "\n")
        for train in (shuffled, fewer):
            p = run(*self.base_args(out, train=train) + ["--epochs", "3", "--resume"])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("made on other data", p.stderr)
            self.assertIn(out + ".ckpt", p.stderr)
        # the same shapes, one value changed: other embeddings are other data
        x = np.load(self.d("items.npy"))
        x[7, 3] += 0.25
        items2 = os.path.join(rdir, "items2.npy")
        np.save(items2, x)
        p = run(*self.base_args(out, items=items2) + ["--epochs", "3", "--resume"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn('made on other data (train_data "embeddings" differs', p.stderr)
        no_cold = [a for a in args if a not in ("--cold-items", self.d("cold_items.txt"))]
        p = run(*no_cold + ["--resume"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn('"cold_items" differs', p.stderr)
        with open(out + ".ckpt", "rb") as f:
            self.assertEqual(f.read(), ckpt)
        self.assertFalse(os.path.exists(out))
        # a fresh run says it will replace the checkpoint (--max-steps writes nothing)
        p = run(*args + ["--max-steps", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("%s.ckpt exists and is replaced" % out, p.stderr)
        # a checkpoint of a version that did not record "embeddings" resumes
        def without_embeddings(text):
            td = json.loads(text)
            self.assertIn("embeddings", td)
            del td["embeddings"]
            return json.dumps(td)
        rewrite_metadata(out + ".ckpt", "train_data", without_embeddings)
        p = run(*args + ["--resume", "--stop-after", "2"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s.ckpt after epoch 1/3" % out, p.stderr)
        p = run(*args + ["--resume"])  # the same data still resumes
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s.ckpt after epoch 2/3" % out, p.stderr)
        self.assertTrue(os.path.exists(out))
        # --stop-after at or past the epochs: the run ends and publishes, as --help says
        os.unlink(out)
        p = run(*args + ["--stop-after", "3"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("(--stop-after)", p.stderr)
        self.assertTrue(os.path.exists(out))

    def test_defaults_file_trains_as_the_defaults(self):
        """A training given --help's model defaults as its --config file is
        the training without it, tensor for tensor."""
        ddir = os.path.join(self.tmp, "defaults")
        os.makedirs(ddir, exist_ok=True)
        cfg = os.path.join(ddir, "defaults.json")
        with open(cfg, "w") as f:
            f.write(run(TRAIN, "--help").stdout.split("Model defaults: ", 1)[1].splitlines()[0])
        plain, with_file = os.path.join(ddir, "plain.st"), os.path.join(ddir, "file.st")
        p = run(*self.base_args(plain) + ["--epochs", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run(*self.base_args(with_file) + ["--epochs", "1", "--config", cfg])
        self.assertEqual(p.returncode, 0, p.stderr)
        a, _ = load_tensors(plain)
        b, _ = load_tensors(with_file)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            self.assertEqual(a[name].tobytes(), b[name].tobytes(), name)

    def test_resume_reads_older_checkpoints_floats(self):
        """Checkpoints of earlier versions hold the config's floats with
        %.9g ("lr": 0.00100000005); this one writes the shortest decimal
        ("lr": 0.001).  Both are one float: --resume takes the older one."""
        rdir = os.path.join(self.tmp, "resume-floats")
        os.makedirs(rdir, exist_ok=True)
        out = os.path.join(rdir, "m.st")
        args = self.base_args(out) + ["--epochs", "2"]
        p = run(*args + ["--stop-after", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        def nine(v):
            if isinstance(v, float):
                return "%.9g" % np.float32(v)
            if isinstance(v, list):
                return "[%s]" % ", ".join(nine(x) for x in v)
            return json.dumps(v)

        def as_before(text):
            old = "{%s}" % ", ".join("%s: %s" % (json.dumps(k), nine(v))
                                     for k, v in json.loads(text).items())
            self.assertIn('"lr": 0.00100000005', old)
            return old
        rewrite_metadata(out + ".ckpt", "das_config", as_before)
        p = run(*args + ["--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s.ckpt after epoch 1/2" % out, p.stderr)

    def test_stop_after_and_max_steps_zero_refused(self):
        """--stop-after 0 and --max-steps 0 were taken as left out: a full
        run that published over --out, where a stop with nothing published
        or a benchmark that writes nothing was asked for.  Refused, exit 2,
        before anything is made, from a flag or a --config file."""
        zdir = os.path.join(self.tmp, "zero-steps")
        os.makedirs(zdir, exist_ok=True)
        out = os.path.join(zdir, "m.st")
        cfg = os.path.join(zdir, "c.json")
        with open(cfg, "w") as f:
            json.dump({"stop_after": 0}, f)
        for extra, want in ((["--stop-after", "0"], "--stop-after: stop_after: 0 would stop "
                             "before the first epoch"),
                            (["--config", cfg], cfg + ": stop_after: 0 would stop before"),
                            (["--max-steps", "0"], "--max-steps: max_steps: 0 would time no "
                             "step")):
            p = run(*self.base_args(out) + extra)
            self.assertEqual(p.returncode, 2, f"{extra}: {p.stderr}")
            self.assertIn(want, p.stderr)
            self.assertIn("give 1 or more", p.stderr)
            self.assertEqual(sorted(os.listdir(zdir)), ["c.json"])

    def test_resume_names_both_values(self):
        """A checkpoint of other settings is refused naming the key and its
        two values (it said 'config key "epochs" differs from this run's',
        leaving the user to find what the checkpoint held); untouched."""
        rdir = os.path.join(self.tmp, "resume-values")
        os.makedirs(rdir, exist_ok=True)
        out = os.path.join(rdir, "m.st")
        p = run(*self.base_args(out) + ["--epochs", "3", "--stop-after", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out + ".ckpt", "rb") as f:
            ckpt = f.read()
        for flags, key, was, now, flag in (
                (["--epochs", "5"], "epochs", "3", "5", "--epochs 3"),
                (["--lr", "0.002"], "lr", "0.001", "0.002", "--lr 0.001"),
                (["--mode", "rqvae"], "mode", '"das"', '"rqvae"', "--mode das"),
                (["--hidden", "16,8"], "hidden", "[32]", "[16, 8]", "--hidden 32"),
                (["--view5", "0.5"], "views", "[1, 1, 1, 1, 0.25, 0.25]",
                 "[1, 1, 1, 1, 0.5, 0.25]", "--views 1,1,1,1,0.25,0.25")):
            p = run(*self.base_args(out) + ["--epochs", "3", "--resume"] + flags)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(p.stderr, "semid-train: %s.ckpt: config key \"%s\" differs from "
                             "this run's (%s in the checkpoint, %s here); resume with the same "
                             "settings (%s; an earlier build's checkpoint holds that build's "
                             "defaults)\n" % (out, key, was, now, flag))
        with open(out + ".ckpt", "rb") as f:
            self.assertEqual(f.read(), ckpt)

    def test_resume_takes_a_checkpoint_of_the_first_builds(self):
        """An in-place upgrade meets the checkpoints of earlier builds.  The
        first ones wrote no train_data (nothing to compare the data with)
        and no data_sha256, the config's floats with %.9g, and views 5 and 6
        weighed 1 by default, not 0.25 as now: resuming one with the same
        flags was refused as "resume with the same settings", though the
        operator had changed none; the message now gives the flag that
        resumes it, and with it the run goes on exactly as from a checkpoint
        of this build."""
        rdir = os.path.join(self.tmp, "resume-first-builds")
        os.makedirs(rdir, exist_ok=True)
        now_out, old_out = os.path.join(rdir, "now.st"), os.path.join(rdir, "old.st")
        views = ["--views", "1,1,1,1,1,1"]  # the default of the first builds
        p = run(*self.base_args(now_out) + ["--epochs", "2", "--stop-after", "1"] + views)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(now_out + ".ckpt", "rb") as f:
            buf = f.read()
        n = struct.unpack("<Q", buf[:8])[0]
        header = json.loads(buf[8:8 + n])
        meta = header["__metadata__"]
        self.assertIn("train_data", meta)
        self.assertIn("data_sha256", meta)
        del meta["train_data"], meta["data_sha256"]
        cfg = json.loads(meta["das_config"])
        self.assertEqual(cfg["views"], [1, 1, 1, 1, 1, 1])
        meta["das_config"] = "{%s}" % ", ".join(
            "%s: %s" % (json.dumps(k), ("%.9g" % np.float32(v)) if isinstance(v, float)
                        else json.dumps(v)) for k, v in cfg.items())
        self.assertIn('"lr": 0.00100000005', meta["das_config"])
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(old_out + ".ckpt", "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + buf[8 + n:])

        p = run(*self.base_args(old_out) + ["--epochs", "2", "--resume"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr, "semid-train: %s.ckpt: config key \"views\" differs from "
                         "this run's ([1, 1, 1, 1, 1, 1] in the checkpoint, [1, 1, 1, 1, 0.25, "
                         "0.25] here); resume with the same settings (--views 1,1,1,1,1,1; an "
                         "earlier build's checkpoint holds that build's defaults)\n" % old_out)
        self.assertFalse(os.path.exists(old_out))
        for out in (old_out, now_out):
            p = run(*self.base_args(out) + ["--epochs", "2", "--resume"] + views)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("resumed from %s.ckpt after epoch 1/2" % out, p.stderr)
        a, _ = load_tensors(old_out)
        b, _ = load_tensors(now_out)
        self.assertEqual(sorted(a), sorted(b))
        for name in a:
            self.assertEqual(a[name].tobytes(), b[name].tobytes(), name)

    def test_resume_refuses_non_finite_moments(self):
        """A checkpoint whose Adam moments hold a NaN (its data checksum
        right: written so, not damaged since) resumed, and the run failed
        steps later with "the loss is not finite", naming neither the
        checkpoint nor the tensor.  Refused at once, exit 2, both named."""
        ndir = os.path.join(self.tmp, "nan-moments")
        os.makedirs(ndir, exist_ok=True)
        out = os.path.join(ndir, "m.st")
        ckpt = out + ".ckpt"
        args = self.base_args(out) + ["--epochs", "3"]
        p = run(*args + ["--stop-after", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(ckpt, "rb") as f:
            buf = f.read()
        n = struct.unpack("<Q", buf[:8])[0]
        header = json.loads(buf[8:8 + n])
        data = bytearray(buf[8 + n:])
        b, _ = header["das.adam_m"]["data_offsets"]
        data[b + 4 * 5:b + 4 * 6] = struct.pack("<f", float("nan"))
        header["__metadata__"]["data_sha256"] = hashlib.sha256(data).hexdigest()
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(ckpt, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + bytes(data))
        p = run(*args + ["--resume"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("%s: checkpoint: tensor das.adam_m: element 5 is not finite" % ckpt,
                      p.stderr)
        self.assertNotIn("epoch 2/3", p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_resume_refuses_a_foreign_checkpoint_from_its_header(self):
        """A file of another kind at MODEL.ckpt (here an embeddings .npy
        copied there, 60 GiB and sparse) was read whole before it was found
        not to be a checkpoint: --resume now refuses it from its first
        bytes, exit 2, naming it."""
        ndir = os.path.join(self.tmp, "foreign-ckpt")
        os.makedirs(ndir, exist_ok=True)
        out = os.path.join(ndir, "m.st")
        ckpt = out + ".ckpt"
        with open(ckpt, "wb") as f:
            f.write(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, ")
            f.truncate(60 << 30)
        p = run(*self.base_args(out) + ["--epochs", "2", "--resume"], timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("%s: header length " % ckpt, p.stderr)
        self.assertIn("it looks like a .npy array, not a safetensors model", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(os.path.getsize(ckpt), 60 << 30)  # left as it was

    def test_sticky_directory_refused_before_training(self):
        """--out in a sticky directory (/tmp, a shared drop) over a file of
        another user: the rename that publishes is refused there, and the run
        failed with EPERM after all its epochs and evaluation.  Refused
        before training now, naming the file and its owner.  Run as nobody
        (root may replace anything)."""
        if os.geteuid() != 0:
            self.skipTest("runs the trainer as nobody: needs root")
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "server"))
        import semid_testlib
        sdir = os.path.join(self.tmp, "sticky")
        os.makedirs(sdir, exist_ok=True)
        os.chmod(sdir, 0o1777)
        for d in (self.tmp, self.data):
            os.chmod(d, 0o755)
        for f in os.listdir(self.data):
            os.chmod(os.path.join(self.data, f), 0o644)
        for name in ("m.st", "c.st.ckpt"):  # the model, or the checkpoint beside one
            with open(os.path.join(sdir, name), "w") as f:
                f.write("root's\n")
        kw = semid_testlib.as_nobody(TRAIN)
        for out, owned in (("m.st", "m.st"), ("c.st", "c.st.ckpt")):
            args = self.base_args(os.path.join(sdir, out))[1:] + ["--epochs", "3"]
            p = subprocess.run([kw["program"]] + [str(a) for a in args], user=kw["user"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("--out %s: %s belongs to uid 0 and %s is sticky: this user cannot "
                          "replace it; name another file" % (os.path.join(sdir, out),
                                                             os.path.join(sdir, owned), sdir),
                          p.stderr)
            self.assertNotIn("epoch 1/3", p.stderr)
        # a name of its own there is fine
        args = self.base_args(os.path.join(sdir, "mine.st"))[1:] + ["--epochs", "1"]
        p = subprocess.run([kw["program"]] + [str(a) for a in args], user=kw["user"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_utf16_text_named(self):
        """A TSV saved as "Unicode text" by a Windows tool is UTF-16 with
        a byte-order mark: it was refused as 'user field of "??0?\\t?6?"
        is not a non-negative integer', which does not say what is wrong.
        Now named as UTF-16, with the conversion; exit 2, nothing written."""
        bad = os.path.join(self.tmp, "utf16")
        os.makedirs(bad, exist_ok=True)
        with open(self.d("train.tsv")) as f:
            tsv = f.read()
        with open(self.d("cold_items.txt")) as f:
            cold = f.read()
        out = os.path.join(bad, "m.st")
        for flag, name, body, bom in (("train", "train.tsv", tsv.encode("utf-16"), "FF FE"),
                                      ("cold-items", "cold.txt",
                                       b"\xfe\xff" + cold.encode("utf-16-be"), "FE FF")):
            path = os.path.join(bad, name)
            with open(path, "wb") as f:
                f.write(body)
            args = self.base_args(out)
            args[args.index("--" + flag) + 1] = path
            p = run(*args)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("%s: UTF-16 text (byte-order mark %s); the trainer reads UTF-8: "
                          "convert it (iconv -f UTF-16 -t UTF-8)" % (path, bom), p.stderr)
            self.assertFalse(os.path.exists(out))

    def test_special_files_refused(self):
        """A FIFO given as an input used to hang the trainer in open()
        (the stop handler restarts it, so SIGTERM did not end it either);
        a non-regular input is refused, named, at once."""
        fdir = os.path.join(self.tmp, "fifo")
        os.makedirs(fdir, exist_ok=True)
        fifo = os.path.join(fdir, "in.fifo")
        os.mkfifo(fifo)
        out = os.path.join(fdir, "m.st")
        for args in (self.base_args(out, items=fifo), self.base_args(out, train=fifo),
                     self.base_args(out) + ["--config", fifo],
                     self.base_args(out) + ["--test", fifo],
                     [TRAIN, "eval", "--model", fifo, "--items", self.d("items.npy"),
                      "--users", self.d("users.npy"), "--train", self.d("train.tsv")]):
            p = run(*args, timeout=20)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(fifo + ": not a regular file", p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_bad_values_named(self):
        """Values that used to be taken silently (or named their file
        twice) give exit 2 and a message naming the flag, key or file."""
        bdir = os.path.join(self.tmp, "values")
        os.makedirs(bdir, exist_ok=True)
        out = os.path.join(bdir, "m.st")
        for flag, value, what in (("--seed", "99999999999999999999999", "seed"),
                                  ("--seed", " -1", "seed"),
                                  ("--seed", "9223372036854775808", "[0, 2^63)"),
                                  ("--model-version", os.fsdecode(b"v\xff"), "not valid UTF-8"),
                                  ("--hidden", "32,", "hidden"),
                                  ("--levels", "true", "levels")):
            p = run(*self.base_args(out) + [flag, value])
            self.assertEqual(p.returncode, 2, f"{flag} {value!r}: {p.stderr}")
            self.assertIn(what, p.stderr)
        # a switch given "=value" that is not a boolean was left on
        for flag in ("--eval=no", "--progress=off", "--no-eval=1"):
            p = run(*self.base_args(out) + [flag])
            self.assertEqual(p.returncode, 2, f"{flag}: {p.stderr}")
            self.assertIn(flag, p.stderr)
        cfg = os.path.join(bdir, "c.json")
        for doc, what in (({"levels": True}, "levels"),
                          ({"levels": [2]}, "a list is only for hidden and views"),
                          ({"model_version": "v" * 2000}, "longer than"),
                          ({"model_version": "a\tb"}, "control character (0x09)")):
            with open(cfg, "w") as f:
                json.dump(doc, f)
            p = run(*self.base_args(out) + ["--config", cfg])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(cfg, p.stderr)
            self.assertIn(what, p.stderr)
        missing = os.path.join(bdir, "missing.json")
        p = run(*self.base_args(out) + ["--config", missing])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(missing, p.stderr)
        self.assertNotIn(":-1:", p.stderr)
        # a file is named once, not "f: f: ..."
        i8 = os.path.join(bdir, "i8.npy")
        np.save(i8, np.zeros((4, 3), np.int64))
        p = run(*self.base_args(out, items=i8))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr.count(i8), 1, p.stderr)
        self.assertFalse(os.path.exists(out))
        # a value whose square overflows float: named with its row and
        # column (it was "epoch 1 batch 0: ... the loss is not finite"),
        # unless input_norm l2 brings it to unit length first
        x = np.load(self.d("items.npy"))
        x[7, 3] = 3e38
        huge = os.path.join(bdir, "huge.npy")
        np.save(huge, x)
        p = run(*self.base_args(out, items=huge))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(huge + ": row 7, column 3", p.stderr)
        self.assertFalse(os.path.exists(out))
        p = run(*self.base_args(out, items=huge) + ["--input-norm", "l2"])
        self.assertEqual(p.returncode, 0, p.stderr)
        # gen: integers are integers (strtod took "2.7" as 2, "1e30" into UB)
        g = [TRAIN, "gen", "--out", os.path.join(bdir, "g"), "--items", 20, "--users", 10,
             "--interactions", 50, "--dim", 4]
        for flag, value in (("--items", "2.7"), ("--items", "1e30"), ("--dim", "1e10"),
                            ("--seed", "-1"), ("--seed", "1.5")):
            p = run(*g + [flag, value])
            self.assertEqual(p.returncode, 2, f"{flag} {value}: {p.stderr}")
            self.assertIn(flag, p.stderr)
        self.assertFalse(os.path.exists(os.path.join(bdir, "g")))
        p = run(*g + ["--user-dim", 70000])  # the message named dim, not user_dim
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("user_dim 70000", p.stderr)
        p = run(*g[:3] + [self.d("train.tsv")] + g[4:])  # --out is a file
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("not a directory", p.stderr)

    def test_empty_path_refused(self):
        """An empty path (a script's --test "$TEST" with TEST unset) was
        taken as no file: the run trained and published without evaluating,
        exit 0 and stdout empty, and --cold-items "" dropped the cold split,
        where eval refuses it.  Now exit 2 naming the key, nothing written."""
        edir = os.path.join(self.tmp, "empty-paths")
        os.makedirs(edir, exist_ok=True)
        out = os.path.join(edir, "m.st")
        for flag in ("--test", "--test-cold", "--cold-items", "--model-version"):
            for args in ([flag, ""], [flag + "="]):
                p = run(*self.base_args(out) + ["--test", self.d("test.tsv")] + args)
                self.assertEqual(p.returncode, 2, f"{args}: {p.stderr}")
                self.assertIn("%s: empty" % flag[2:].replace("-", "_"), p.stderr)
                self.assertEqual(os.listdir(edir), [], args)
        cfg = os.path.join(edir, "c.json")
        with open(cfg, "w") as f:
            json.dump({"test": ""}, f)
        p = run(*self.base_args(out) + ["--config", cfg])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(cfg + ": test: empty", p.stderr)
        os.remove(cfg)
        self.assertEqual(os.listdir(edir), [])

    def test_run_metadata_keeps_paths_that_are_not_utf8(self):
        """A --train or --out whose name is not UTF-8 (a Latin-1 file name)
        was left out of the model's "run" metadata and the checkpoint's
        "train_config": json_string refused it, the key went missing.  Kept,
        each byte above 0x7f as '?', as semid inspect shows a path."""
        ndir = os.path.join(self.tmp, "latin1")
        os.makedirs(ndir, exist_ok=True)
        train = os.path.join(os.fsencode(ndir), b"tr\xe9.tsv")
        shutil.copy(self.d("train.tsv"), train)
        out = os.path.join(os.fsencode(ndir), b"m\xe9.st")
        args = [os.fsencode(str(a)) for a in self.base_args(os.fsdecode(out),
                                                              train=os.fsdecode(train))]
        p = subprocess.run(args + [b"--epochs", b"1"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 0, p.stderr)
        for path, key in ((out, "semid"), (out + b".ckpt", "train_config")):
            with open(path, "rb") as f:
                header, _ = parse_safetensors(f.read())
            run_keys = json.loads(header["__metadata__"][key])
            run_keys = run_keys["run"] if key == "semid" else run_keys
            self.assertEqual(run_keys["train"], os.path.join(ndir, "tr?.tsv"), key)
            self.assertEqual(run_keys["out"], os.path.join(ndir, "m?.st"), key)

    def test_eval_names_a_model_path_that_is_not_utf8(self):
        """README: eval's JSON has "one key more, model (the file's path)";
        for a name that is not UTF-8 the key was left out.  Kept, each
        byte above 0x7f as '?'."""
        ndir = os.path.join(self.tmp, "latin1-eval")
        os.makedirs(ndir, exist_ok=True)
        model = os.path.join(ndir, "m.st")
        p = run(*self.base_args(model) + ["--epochs", "1", "--no-eval"])
        self.assertEqual(p.returncode, 0, p.stderr)
        latin1 = os.path.join(os.fsencode(ndir), b"m\xe9.st")
        os.rename(model, latin1)
        args = [os.fsencode(str(a)) for a in self.eval_args(os.fsdecode(latin1))]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["model"], os.path.join(ndir, "m?.st"))

    @unittest.skipIf(os.environ.get("SEMID_SANITIZE"),
                     "a sanitizer's shadow memory does not fit a memory limit")
    def test_wide_embeddings_in_little_memory(self):
        """An .npy was scanned 4096 rows at a time whatever its width: at
        65536 columns a 1 GiB buffer, for a file of 5 rows (1.3 MiB) too, so
        under ulimit -v 768 MiB training and profile said "items.npy: out of
        memory", exit 1; the chunk is now 4 Mi values at most.  And eval
        encoded 4096 rows at a time, its buffers 3 GiB at 65536 columns:
        "encode: out of memory" (a training given --test failed so after its
        last epoch); fewer rows of a wider tower now."""
        wdir = os.path.join(self.tmp, "wide")
        os.makedirs(wdir, exist_ok=True)
        wide = os.path.join(wdir, "wide.npy")
        np.save(wide, np.random.default_rng(3).standard_normal((5, 65536)).astype(np.float32))
        train, test = (os.path.join(wdir, n) for n in ("train.tsv", "test.tsv"))
        with open(train, "w") as f:
            f.write("0\t1\n1\t2\n2\t3\n3\t4\n")
        with open(test, "w") as f:
            f.write("0\t2\n1\t3\n")
        out = os.path.join(wdir, "m.st")

        def limited():
            resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
        for args in ([TRAIN, "--items", wide, "--users", wide, "--train", train, "--out", out,
                      "--epochs", "1", "--hidden", "8", "--latent-dim", "4", "--codebook-size",
                      "2", "--levels", "1", "--threads", "1", "--no-progress"],
                     [TRAIN, "profile", "--items", wide, "--train", train, "--out",
                      os.path.join(wdir, "users.npy")],
                     [TRAIN, "eval", "--model", out, "--items", wide, "--users", wide,
                      "--train", train, "--test", test]):
            p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                               timeout=120, preexec_fn=limited)
            self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(run(SEMID, "inspect", out).returncode, 0)
        self.assertEqual(np.load(os.path.join(wdir, "users.npy")).shape, (4, 65536))
        got = json.loads(p.stdout)
        self.assertEqual((got["item"]["n"], got["user"]["n"]), (5, 5))
        self.assertEqual(got["item_side"]["warm"]["users"], 2)

    def test_gen_explicit_zero_and_empty_out_refused(self):
        """gen's --user-dim 0 and --clusters 0 were its "not given": the
        data came out at --dim's width and sqrt(items) clusters without a
        word, exit 0; --out "" failed with exit 1 naming no path."""
        gdir = os.path.join(self.tmp, "gen-zero")
        g = [TRAIN, "gen", "--out", gdir, "--items", 20, "--users", 10, "--interactions", 50,
             "--dim", 4]
        for flag in ("--user-dim", "--clusters"):
            p = run(*g + [flag, "0"])
            self.assertEqual(p.returncode, 2, f"{flag} 0: {p.stderr}")
            self.assertIn("%s: 0 is not in [1, " % flag, p.stderr)
            self.assertFalse(os.path.exists(gdir))
        p = run(*g[:3] + [""] + g[4:])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--out: empty", p.stderr)
        p = run(*g + ["--user-dim", "1", "--clusters", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(np.load(os.path.join(gdir, "users.npy")).shape, (10, 1))

    def test_out_of_range_settings_named_before_the_data(self):
        """A setting the model's check refuses (a negative weight, an Adam
        moment of 1) was refused only once the data was read (tens of
        seconds at 1M rows), and as "config: loss weights must be >= 0"
        or "adam_b1/b2 in [0,1), adam_eps > 0": which key, and what value,
        unsaid.  Now before the data (a missing --train is not what is
        named), with the key and its value; exit 2."""
        out = os.path.join(self.tmp, "ranges", "m.st")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        missing = os.path.join(self.tmp, "ranges", "missing.tsv")
        for flag, value, want in (("--beta", "-1", "beta -1 is not >= 0"),
                                  ("--w-orth", "-0.5", "w_orth -0.5 is not >= 0"),
                                  ("--adam-b1", "1", "adam_b1 1 is not in [0, 1)"),
                                  ("--adam-b2", "1.5", "adam_b2 1.5 is not in [0, 1)"),
                                  ("--adam-eps", "0", "adam_eps 0 is not > 0"),
                                  ("--tau", "0.01", "tau 0.01 not in [0.05, 100]"),
                                  ("--lr", "20", "lr 20 not in (0, 10)"),
                                  # these said no value, and weight_decay
                                  # "out of range" not which range
                                  ("--lr-min-ratio", "2", "lr_min_ratio 2 is not in [0, 1]"),
                                  ("--weight-decay", "2000",
                                   "weight_decay 2000 must be >= 0 with lr x weight_decay "
                                   "(2) < 1"),
                                  ("--weight-decay", "-1", "weight_decay -1 must be >= 0"),
                                  ("--init-std-table", "0", "init_std_table 0 is not > 0")):
            p = run(*self.base_args(out, train=missing) + [flag, value])
            self.assertEqual(p.returncode, 2, f"{flag} {value}: {p.stderr}")
            self.assertIn(want, p.stderr)
            self.assertNotIn(missing, p.stderr)
            self.assertFalse(os.path.exists(out))
        # a config file's value too
        cfg = os.path.join(self.tmp, "ranges", "c.json")
        with open(cfg, "w") as f:
            json.dump({"alpha": -2}, f)
        p = run(*self.base_args(out, train=missing) + ["--config", cfg])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("alpha -2 is not >= 0", p.stderr)

    def test_weight_decay_bound_counts_the_icdm_learning_rate(self):
        """The ICDM tables step at lr x lr_icdm_mult and decay by 1 - that x
        weight_decay, but only lr x weight_decay < 1 was checked: --lr 0.01
        --weight-decay 50 (0.5) trained with the tables multiplied by -14 each
        step, an ICDM loss of 5e48 by the third epoch, published, exit 0.
        Refused before the data, exit 2; rqvae, which has no tables, takes it."""
        wdir = os.path.join(self.tmp, "icdm-decay")
        os.makedirs(wdir, exist_ok=True)
        out = os.path.join(wdir, "m.st")
        missing = os.path.join(wdir, "missing.tsv")
        for mode in ("das", "two-stage"):
            p = run(*self.base_args(out, train=missing) + ["--lr", "0.01", "--weight-decay",
                                                            "50", "--mode", mode])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("config: weight_decay 50 must be >= 0 with lr x lr_icdm_mult x "
                          "weight_decay (15) < 1", p.stderr)
            self.assertNotIn(missing, p.stderr)
        self.assertEqual(os.listdir(wdir), [])
        p = run(*self.base_args(out) + ["--lr", "0.01", "--weight-decay", "50", "--mode",
                                        "rqvae", "--max-steps", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_progress_lines_without_terminal(self):
        """With stderr not a terminal, progress comes as log lines every
        progress_every seconds; 0 gives one after every batch but the last
        (whose place is the epoch line)."""
        out = os.path.join(self.tmp, "progress.st")
        args = [a for a in self.base_args(out) if a != "--no-progress"]
        p = run(*args, "--progress-every", "0", "--eval", "false")
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.search(r"(\d+) batches of 128 per epoch, 2 epochs", p.stderr)
        self.assertTrue(m, p.stderr)
        nb = int(m.group(1))
        self.assertGreater(nb, 2)
        lines = re.findall(r"^epoch (\d)/2: batch (\d+)/(\d+) \((\d+)%\), loss ([0-9.]+), "
                           r"[0-9.]+s, about [0-9]+s left in the epoch$", p.stderr, re.M)
        want = [(str(e), str(b), str(nb), str(b * 100 // nb)) for e in (1, 2)
                for b in range(1, nb)]
        self.assertEqual([x[:4] for x in lines], want)
        # the default (30 s) prints none in a run this short; --no-progress none at all
        p = run(*args, "--eval", "false")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(": batch ", p.stderr)
        p = run(*args, "--progress-every", "-1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("progress_every", p.stderr)
        # --no-progress turns the lines off too, as --help says (it spoke of
        # the bar on a terminal only, and a cron job's lines were gone)
        p = run(*args, "--progress-every", "0", "--no-progress", "--eval", "false")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(": batch ", p.stderr)
        help_line = [ln for ln in run(TRAIN, "--help").stdout.splitlines()
                     if ln.split()[:1] == ["--progress"]]
        self.assertEqual(len(help_line), 1)
        self.assertIn("else a line every progress_every seconds (false: neither)",
                      help_line[0])

    # ---- atomic publish ----

    def test_publish_is_atomic_under_sigkill(self):
        pdir = os.path.join(self.tmp, "pub")
        os.makedirs(pdir, exist_ok=True)
        out = os.path.join(pdir, "model.st")
        ckpt = out + ".ckpt"
        # 6 tiny epochs: a checkpoint published after each, then the model
        args = self.base_args(out) + ["--epochs", "6", "--batch-size", "512"]
        stop = threading.Event()
        seen = {"reads": 0, "bad": []}

        def reader():
            while not stop.is_set():
                for path in (out, ckpt):
                    try:
                        with open(path, "rb") as f:
                            buf = f.read()
                    except FileNotFoundError:
                        continue
                    try:
                        parse_safetensors(buf)
                        seen["reads"] += 1
                    except Exception as e:  # noqa: BLE001 - any failure is the finding
                        seen["bad"].append(f"{path}: {e} ({len(buf)} bytes)")
                # hundreds of reads a second still, without a core taken from the trainer
                time.sleep(0.002)

        th = threading.Thread(target=reader)
        th.start()
        rnd = random.Random(1234)
        t0 = time.time()
        full = run(*args)  # one uninterrupted run for the time scale
        self.assertEqual(full.returncode, 0, full.stderr)
        span = time.time() - t0
        kills = 0
        try:
            for _ in range(12):
                proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                time.sleep(rnd.uniform(0, span))
                if proc.poll() is None:
                    proc.kill()
                    kills += 1
                proc.wait()
                for path in (out, ckpt):
                    with open(path, "rb") as f:
                        parse_safetensors(f.read())
        finally:
            stop.set()
            th.join()
        self.assertEqual(seen["bad"], [])
        self.assertGreater(seen["reads"], 0)
        self.assertGreater(kills, 0)
        # the final file is a loadable model
        p = run(SEMID, "inspect", out)
        self.assertEqual(p.returncode, 0, p.stderr)

    # ---- resume ----

    def _model_tensors(self, path):
        t, _ = load_tensors(path)
        return {k: v.tobytes() for k, v in t.items()}

    def test_default_model_versions_differ(self):
        """Two runs of one mode and seed started in the same second (a cron
        overlap, a sweep over another setting) named their different models
        alike, "das-<utc>-42": the server's /readyz, logs and metrics and
        the ID registry know a model by that name only.  The default has a
        random part, so they differ, whatever the clock says."""
        vdir = os.path.join(self.tmp, "versions")
        os.makedirs(vdir, exist_ok=True)
        procs = [subprocess.Popen([str(a) for a in self.base_args(os.path.join(vdir, n)) +
                                   ["--epochs", "0", "--lr", lr]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n, lr in (("a.st", "0.001"), ("b.st", "0.002"))]
        versions = []
        for p in procs:
            _, err = p.communicate()
            self.assertEqual(p.returncode, 0, err)
            m = re.search(r"model_version (das-\d{8}T\d{6}Z-42-[0-9a-f]{8})\)", err)
            self.assertTrue(m, err)
            versions.append(m.group(1))
        self.assertNotEqual(versions[0], versions[1])
        for n, v in zip(("a.st", "b.st"), versions):
            _, meta = load_tensors(os.path.join(vdir, n))
            self.assertEqual(json.loads(meta["semid"])["model_version"], v)

    def test_model_config_trains_the_model_again(self):
        """A model's own config (`semid inspect M | jq .metadata.config`), the
        obvious file to retrain from, was refused as a --config for its
        D_user and D_item ("not a setting").  Taken now, it trains the same
        model again (same seed and threads: tensor for tensor, and the same
        config); input widths other than the data's are refused, naming
        both; a model's whole metadata, or all of semid inspect's output, is
        refused saying which object to give."""
        cdir = os.path.join(self.tmp, "model-config")
        os.makedirs(cdir)
        first, again, cfg = (os.path.join(cdir, n) for n in ("a.st", "b.st", "c.json"))
        p = run(*self.base_args(first) + ["--seed", 7, "--mode", "two-stage", "--icdm-epochs",
                                          1, "--views", "1,0,1,1,0.5,0", "--lr", 0.002])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run(SEMID, "inspect", first)
        self.assertEqual(p.returncode, 0, p.stderr)
        inspect = json.loads(p.stdout)
        config = inspect["metadata"]["config"]
        self.assertEqual((config["D_user"], config["D_item"], config["seed"]), (24, 24, 7))

        def data_args(out):  # the data and run keys only: every setting from the file
            return [TRAIN, "--config", cfg, "--items", self.d("items.npy"), "--users",
                    self.d("users.npy"), "--train", self.d("train.tsv"), "--cold-items",
                    self.d("cold_items.txt"), "--threads", 1, "--no-progress", "--out", out]

        with open(cfg, "w") as f:
            json.dump(config, f)
        p = run(*data_args(again))
        self.assertEqual(p.returncode, 0, p.stderr)
        want, got = self._model_tensors(first), self._model_tensors(again)
        self.assertEqual(sorted(got), sorted(want))
        for k in want:
            self.assertEqual(got[k], want[k], k)
        _, meta = load_tensors(again)
        self.assertEqual(json.loads(meta["semid"])["config"], config)
        os.unlink(again)
        os.unlink(again + ".ckpt")

        # the data's widths differ from the config's: refused, nothing made
        for key, flag, npy in (("D_user", "--users", "users.npy"),
                               ("D_item", "--items", "items.npy")):
            with open(cfg, "w") as f:
                json.dump(dict(config, **{key: 32}), f)
            p = run(*data_args(again))
            self.assertEqual((p.returncode, p.stderr), (
                2, "semid-train: config key %s is 32, but %s %s has 24 columns (the %s "
                "tower's input width): that config is of a model trained on other "
                "embeddings; give those, or delete the key\n"
                % (key, flag, self.d(npy), "user" if key == "D_user" else "item")))
        self.assertEqual(sorted(os.listdir(cdir)), ["a.st", "a.st.ckpt", "c.json"])

        # what holds the config, given for it
        for doc, what in ((inspect["metadata"], "a model's metadata"),
                          (inspect, "the output of semid inspect")):
            with open(cfg, "w") as f:
                json.dump(doc, f)
            p = run(*data_args(again))
            self.assertEqual((p.returncode, p.stderr), (
                2, "semid-train: %s: %s, not a config: give its \"config\" object alone "
                "(semid inspect MODEL | jq .metadata.config)\n" % (cfg, what)))

    def test_resume_equals_uninterrupted(self):
        rdir = os.path.join(self.tmp, "resume")
        os.makedirs(rdir, exist_ok=True)
        ref, a, b = (os.path.join(rdir, n) for n in ("ref.st", "a.st", "b.st"))
        common = ["--epochs", "4", "--seed", "11"]
        for mode in ("das", "two-stage"):
            extra = common + ["--mode", mode, "--icdm-epochs", "2"]
            p = run(*self.base_args(ref) + extra)
            self.assertEqual(p.returncode, 0, p.stderr)
            # the default model_version names the mode that trained it
            self.assertRegex(p.stderr, r"model_version %s-\d{8}T\d{6}Z-11-[0-9a-f]{8}\)" % mode)
            want = self._model_tensors(ref)
            # a clean stop after 1 and after 3 epochs (for two-stage: inside the
            # ICDM phase and inside the joint phase), then resume
            for stop_at in (1, 3):
                if os.path.exists(a + ".ckpt"):
                    os.unlink(a + ".ckpt")
                p = run(*self.base_args(a) + extra + ["--stop-after", stop_at])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertFalse(os.path.exists(a), "published although stopped")
                p = run(*self.base_args(a) + extra + ["--resume"])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn(f"resumed from {a}.ckpt after epoch {stop_at}/", p.stderr)
                got = self._model_tensors(a)
                self.assertEqual(sorted(got), sorted(want))
                for k in want:
                    self.assertEqual(got[k], want[k], f"{mode} stop {stop_at}: {k} differs")
                os.unlink(a)
        # killed with SIGKILL once a checkpoint exists, then resumed
        extra = common + ["--mode", "das"]
        p = run(*self.base_args(ref) + extra)
        want = self._model_tensors(ref)
        proc = subprocess.Popen([str(x) for x in self.base_args(b) + extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not os.path.exists(b + ".ckpt"):
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        p = run(*self.base_args(b) + extra + ["--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        got = self._model_tensors(b)
        for k in want:
            self.assertEqual(got[k], want[k], f"after SIGKILL: {k} differs")
        # a checkpoint from other settings is refused, naming the key
        p = run(*self.base_args(b) + ["--epochs", "4", "--seed", "12", "--resume"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("seed", p.stderr)

    def test_signal_stops_cleanly(self):
        sdir = os.path.join(self.tmp, "signal")
        os.makedirs(sdir, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            out = os.path.join(sdir, "m%d.st" % sig)
            ckpt = out + ".ckpt"
            args = self.base_args(out) + ["--epochs", "500"]  # minutes: it must be stopped
            proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 60
            while proc.poll() is None and not os.path.exists(ckpt) and time.time() < deadline:
                time.sleep(0.005)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 128 + sig, err)
            m = re.search(r"^semid-train: stopped by %s( in epoch \d+/500 \(batch \d+/\d+, not "
                          r"kept\))?; nothing published; %s holds epoch (\d+)/500: continue "
                          r"with --resume$" % (sig.name, re.escape(ckpt)), err, re.M)
            self.assertTrue(m, err)
            k = int(m.group(2))
            self.assertEqual(len(re.findall(r"^epoch \d+/500 joint", err, re.M)), k, err)
            self.assertFalse(os.path.exists(out), "published although stopped")
            self.assertEqual([f for f in os.listdir(sdir) if not f.endswith(".ckpt")], [])
            # the checkpoint is whole and is where the next run starts
            p = run(*args, "--resume", "--max-steps", "1")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("resumed from %s after epoch %d/500" % (ckpt, k), p.stderr)

    def test_second_run_with_the_same_out_is_refused(self):
        """Nothing stopped two runs with one --out (a cron job overlapping
        a slow run, two operators): they shared OUT.ckpt and raced to the
        publish.  While one trains, another with that --out, --resume or
        not, is refused at once, before it reads the data: exit 75, naming
        the lock file and the pid that holds it; another --out in the same
        directory trains.  The lock file goes with the run; one left by a
        run killed with SIGKILL is taken over by the next; one of another
        kind is refused, exit 2, and left as it is."""
        ldir = os.path.join(self.tmp, "lock")
        os.makedirs(ldir)
        out = os.path.join(ldir, "m.st")
        lock = out + ".lock"
        refused = ("semid-train: --out %s: another semid-train (pid %%d) is running with this "
                   "--out (it holds %s): let it finish, or stop it, or give another --out\n"
                   % (out, lock))

        def signed(pid):  # the lock file names @pid
            return lock_signed(lock, pid)

        def start():  # a run of minutes, once it holds the lock and a checkpoint is there
            proc = subprocess.Popen([str(a) for a in self.base_args(out) + ["--epochs", "500"]],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 60
            try:
                while proc.poll() is None and not (signed(proc.pid) and
                                                   os.path.exists(out + ".ckpt")):
                    self.assertLess(time.time(), deadline, "no lock taken, or no checkpoint")
                    time.sleep(0.005)
                self.assertIsNone(proc.poll(), "ended before it was seen holding the lock")
            except AssertionError:
                proc.kill()
                proc.communicate()
                raise
            return proc

        first = start()
        try:
            # refused before the data is read: a --train it would refuse is not
            bad = os.path.join(ldir, "bad.tsv")
            with open(bad, "w") as f:
                f.write("not\ta click\n")
            for args in (self.base_args(out), self.base_args(out) + ["--resume"],
                         self.base_args(out, train=bad)):
                p = run(*args)
                self.assertEqual((p.returncode, p.stderr), (75, refused % first.pid))
            # a run with another --out beside it is not in its way
            other = os.path.join(ldir, "other.st")
            p = run(*self.base_args(other) + ["--epochs", "1"])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(os.path.exists(other))
            self.assertFalse(os.path.exists(other + ".lock"))
        finally:
            first.send_signal(signal.SIGTERM)
            _, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 128 + signal.SIGTERM, err)
        self.assertFalse(os.path.exists(lock))
        # killed with SIGKILL: the file stays, unlocked; the next run takes it
        first = start()
        first.kill()
        first.communicate(timeout=60)
        self.assertTrue(signed(first.pid))
        p = run(*self.base_args(out) + ["--epochs", "500", "--resume", "--max-steps", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s.ckpt" % out, p.stderr)
        self.assertFalse(os.path.exists(lock))
        # a file of another kind at its place
        with open(lock, "w") as f:
            f.write("notes\n")
        p = run(*self.base_args(out) + ["--epochs", "1"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr, "semid-train: --out %s: %s exists and is not a semid-train lock "
                         "file (it holds other text): remove it or name another --out\n"
                         % (out, lock))
        with open(lock) as f:
            self.assertEqual(f.read(), "notes\n")
        # an input at its place: refused as publishing over one is
        os.unlink(lock)
        shutil.copy(self.d("cold_items.txt"), lock)
        args = self.base_args(out) + ["--epochs", "1"]
        args[args.index("--cold-items") + 1] = lock
        p = run(*args)
        self.assertEqual((p.returncode, p.stderr),
                         (2, "semid-train: --out %s: %s is the --cold-items input %s; the run's "
                          "lock would overwrite it\n" % (out, lock, lock)))
        self.assertTrue(filecmp.cmp(self.d("cold_items.txt"), lock, shallow=False))

    def _own_data(self, name, items, users, interactions, dim):
        """A data set generated into tmp/NAME/data: (tmp/NAME, tmp/NAME/m.st,
        the training arguments on it with SMALL)."""
        top = os.path.join(self.tmp, name)
        data = os.path.join(top, "data")
        p = run(TRAIN, "gen", "--out", data, "--items", items, "--users", users,
                "--interactions", interactions, "--dim", dim, "--seed", 3)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(top, "m.st")
        return top, out, [TRAIN, "--items", os.path.join(data, "items.npy"), "--users",
                          os.path.join(data, "users.npy"), "--train",
                          os.path.join(data, "train.tsv"), "--out", out] + SMALL

    def test_signal_stops_kmeans_init(self):
        """The codebooks' k-means++ seeding and Lloyd iterations ignored a
        stop: a SIGTERM waited for all of them (minutes at a large
        kmeans_sample and codebook_size), then for a first batch.  Stopped
        right after the line that announces them, the run ends there with
        128 + the signal, says so, and leaves nothing in its directory."""
        kdir, _, args = self._own_data("kmeans-stop", 2000, 20000, 40000, 64)
        # 20000 user rows into 1024 codes: seconds of k-means per level
        args += ["--latent-dim", "64", "--codebook-size", "1024", "--kmeans-iters", "100"]
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if line.startswith("codebook init: "):
                    break
            self.assertIn("codebook init: k-means++ on 20000 user rows and ", lines[-1])
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            err = "".join(lines) + err
            self.assertEqual(proc.returncode, 128 + sig, err)
            self.assertIn("semid-train: stopped by %s in the codebooks' k-means "
                          "initialisation; nothing published, and no epoch finished to "
                          "checkpoint\n" % sig.name, err)
            self.assertNotIn("epoch 1/", err)
            self.assertEqual(sorted(os.listdir(kdir)), ["data"])

    def test_signal_stops_data_loading(self):
        """Loading the data, setting up the model and reading a checkpoint
        take tens of seconds at 1M items and users, and a stop was heeded
        only at the first epoch, after all of them (past a Kubernetes grace
        period).  Caught while train.tsv is mapped, the run stops there with
        128 + the signal, and a checkpoint it was to resume from is left as
        it was, and said to be.  `eval` stops so too."""
        ldir, out, args = self._own_data("load-stop", 20000, 20000, 4000000, 8)
        train = os.path.join(ldir, "data", "train.tsv")
        ckpt = out + ".ckpt"

        def stop_while_reading(argv, sig):
            proc = subprocess.Popen([str(a) for a in argv],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            maps = "/proc/%d/maps" % proc.pid
            seen = False
            while not seen and proc.poll() is None:
                try:
                    with open(maps) as f:
                        seen = train in f.read()
                except OSError:
                    pass
            # caught while it parses the interactions, or the rest proves nothing
            self.assertTrue(seen, "never seen reading %s" % train)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 128 + sig, err)
            self.assertNotIn("semid-train: mode ", err)  # it stopped before that
            return err

        for sig in (signal.SIGTERM, signal.SIGINT):
            err = stop_while_reading(args, sig)
            self.assertIn("semid-train: stopped by %s while loading the data; nothing "
                          "published, and no epoch finished to checkpoint\n" % sig.name, err)
            self.assertEqual(os.listdir(ldir), ["data"])
        # a checkpoint to resume from stays as it was (one of the small data
        # here: the run stops before it reads it)
        p = run(*self.base_args(out) + ["--stop-after", 1])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(ckpt, "rb") as f:
            before = f.read()
        err = stop_while_reading(args + ["--resume"], signal.SIGTERM)
        self.assertIn("semid-train: stopped by SIGTERM while loading the data; nothing "
                      "published; %s is as it was\n" % ckpt, err)
        with open(ckpt, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(os.listdir(ldir)), ["data", "m.st.ckpt"])
        # `eval` ended by the signal's default action, saying nothing (any
        # model: the data is read before it is checked against the model)
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        for sig in (signal.SIGTERM, signal.SIGINT):
            err = stop_while_reading([TRAIN, "eval", "--model", model] + args[1:7] +
                                     ["--test", train], sig)
            self.assertEqual(err, "semid-train eval: stopped by %s; nothing printed\n" %
                             sig.name)

    def test_stop_edges(self):
        """--max-steps beyond an epoch's batches times that one epoch and
        writes nothing (it trained every epoch and published the model); a
        SIGHUP ignored by the caller (nohup) stays ignored; a signal during
        an epoch's last step keeps the epoch (with one batch an epoch, such a
        signal always threw the epoch in flight away)."""
        sdir = os.path.join(self.tmp, "edges")
        os.makedirs(sdir, exist_ok=True)
        p = run(*self.base_args(os.path.join(sdir, "ms.st")) + ["--epochs", "3",
                                                                 "--max-steps", "100000"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("benchmark: ", p.stderr)
        self.assertEqual(os.listdir(sdir), [])
        # with no epoch to time it published the model: refused, nothing written
        p = run(*self.base_args(os.path.join(sdir, "ms.st")) + ["--epochs", "0",
                                                                 "--max-steps", "5"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--max-steps: no epoch left to time (0 epochs); nothing written",
                      p.stderr)
        self.assertEqual(os.listdir(sdir), [])
        done = os.path.join(sdir, "done.st")
        p = run(*self.base_args(done) + ["--epochs", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"batches of \d+ per epoch, 1 epoch\n")  # not "1 epochs"
        os.remove(done)
        p = run(*self.base_args(done) + ["--epochs", "1", "--resume", "--max-steps", "5"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("(the checkpoint holds every epoch)", p.stderr)
        self.assertEqual(os.listdir(sdir), ["done.st.ckpt"])
        os.remove(done + ".ckpt")

        def start(name, extra, ignore_hup=False):
            out = os.path.join(sdir, name)
            args = self.base_args(out) + ["--epochs", "500"] + extra
            proc = subprocess.Popen(
                [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True, preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
                if ignore_hup else None)
            deadline = time.time() + 60
            while proc.poll() is None and not os.path.exists(out + ".ckpt") and \
                    time.time() < deadline:
                time.sleep(0.005)
            return proc

        proc = start("hup.st", [], ignore_hup=True)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertIsNone(proc.poll(), "a SIGHUP under nohup stopped it")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err)
        self.assertNotIn("SIGHUP", err)

        proc = start("one.st", ["--batch-size", "1000000"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err)
        self.assertIn(" 1 batch of ", err)
        self.assertNotIn("not kept", err)
        k = int(re.search(r"holds epoch (\d+)/500", err).group(1))
        self.assertEqual(len(re.findall(r"^epoch \d+/500 joint", err, re.M)), k, err)

    def test_test_hook_garbage_is_no_delay(self):
        """A test hook's milliseconds that are not a whole number up to 10
        minutes are none: atoi took SEMID_TEST_PUBLISH_DELAY_MS=600001 for
        ten minutes' wait before the publish, and "5x" for 5 ms."""
        out = os.path.join(self.tmp, "hook-garbage.st")
        for value in ("600001", "99999999999", "-5", "5x"):
            p = run(*self.base_args(out) + ["--epochs", "1"], timeout=60,
                    env=dict(os.environ, SEMID_TEST_PUBLISH_DELAY_MS=value))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(os.path.exists(out), value)

    def test_signal_while_writing_the_model(self):
        """A SIGTERM while the final model was written was ignored: the
        model was published anyway, exit 0.  Caught while the model's temp
        file is written (held open 3 s after the write by the test hook
        SEMID_TEST_PUBLISH_DELAY_MS), the run stops as a stop elsewhere
        does: 143, nothing published, no temp file, the checkpoint holding
        every epoch, from which --resume publishes the model."""
        wdir = os.path.join(self.tmp, "final-write")
        os.makedirs(wdir, exist_ok=True)
        out = os.path.join(wdir, "m.st")
        ckpt = out + ".ckpt"
        args = [str(a) for a in self.base_args(out) + ["--epochs", "1"]]
        env = dict(os.environ, SEMID_TEST_PUBLISH_DELAY_MS="3000")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        deadline = time.time() + 60
        # the checkpoint is in place (its file, renamed, is named by its own
        # path); the file written after it is the model's (the lock file is
        # open all along)
        while proc.poll() is None and time.time() < deadline and not (
                os.path.exists(ckpt) and writing_into(proc.pid, wdir, ckpt, out + ".lock",
                                                      written=True)):
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "finished before it was seen writing the model")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err)
        self.assertIn("semid-train: stopped by SIGTERM while writing the model; nothing "
                      "published; %s holds epoch 1/1: continue with --resume\n" % ckpt, err)
        self.assertNotIn("published %s" % out, err)
        self.assertEqual(os.listdir(wdir), ["m.st.ckpt"])
        p = run(*args + ["--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s after epoch 1/1" % ckpt, p.stderr)
        self.assertIn("published %s" % out, p.stderr)
        self.assertNotIn("epoch 1/1 joint", p.stderr)  # no epoch trained again
        with open(out, "rb") as f:
            parse_safetensors(f.read())

    def test_sigusr_is_ignored(self):
        """SIGUSR1 or SIGUSR2 (an operator's habit, a batch system's warning
        of the time limit) ended a run at once by their default action: the
        epoch under way lost, MODEL.lock left, not a word.  They are ignored
        with a line saying so, and the run goes on until a SIGTERM stops it
        cleanly."""
        sdir = os.path.join(self.tmp, "sigusr")
        os.makedirs(sdir)
        out = os.path.join(sdir, "m.st")
        proc = subprocess.Popen([str(a) for a in self.base_args(out) + ["--epochs", "500"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while proc.poll() is None and not os.path.exists(out + ".ckpt"):
            self.assertLess(time.time(), deadline, "no checkpoint")
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "ended before its first checkpoint")
        proc.send_signal(signal.SIGUSR1)
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.2)
        self.assertIsNone(proc.poll(), "ended by SIGUSR1 or SIGUSR2")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err)
        for name in ("SIGUSR1", "SIGUSR2"):
            self.assertIn("semid-train: %s ignored: the run goes on (SIGINT, SIGTERM or SIGHUP "
                          "stop it cleanly)\n" % name, err)
        self.assertRegex(err, r"semid-train: stopped by SIGTERM\b.*; nothing published; ")
        self.assertEqual(os.listdir(sdir), ["m.st.ckpt"])  # no lock file left

    def test_second_signal_leaves_no_lock_file(self):
        """A second signal while the first one's stop was under way ended
        the process at once (as it should) but left MODEL.lock, or gen's
        DIR/gen.lock, behind.  Both signals here arrive together (sent
        while the process is held stopped, SIGSTOP, then let go): the first
        asks for the stop, the second ends the process by its default
        action, and the lock file goes with it, as the temp files do."""
        sdir = os.path.join(self.tmp, "second-signal")
        os.makedirs(sdir)
        out = os.path.join(sdir, "m.st")

        def two_signals(proc):
            proc.send_signal(signal.SIGSTOP)
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGCONT)
            _, err = proc.communicate(timeout=60)
            # ended by the second signal, not stopped cleanly by the first
            self.assertIn(proc.returncode, (-signal.SIGTERM, -signal.SIGINT), err)

        proc = subprocess.Popen([str(a) for a in self.base_args(out) + ["--epochs", "500"]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while proc.poll() is None and not (lock_signed(out + ".lock", proc.pid) and
                                           os.path.exists(out + ".ckpt")):
            self.assertLess(time.time(), deadline, "no lock taken, or no checkpoint")
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "ended before it was seen holding the lock")
        two_signals(proc)
        self.assertEqual(os.listdir(sdir), ["m.st.ckpt"])

        # gen: stopped while it generates (its renames, held, are
        # test_gen_renames_its_files_as_one_step's)
        gdir = os.path.join(sdir, "gen")
        proc = subprocess.Popen([str(a) for a in [
            TRAIN, "gen", "--out", gdir, "--items", 200000, "--users", 200000,
            "--interactions", 4000000, "--dim", 32]], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not lock_signed(os.path.join(gdir, "gen.lock"), proc.pid):
            self.assertIsNone(proc.poll(), "ended before it was seen holding the lock")
            self.assertLess(time.time(), deadline, "no lock taken")
            time.sleep(0.002)
        two_signals(proc)
        self.assertEqual(os.listdir(gdir), [])

    def test_input_changed_while_training(self):
        """items.npy is mapped while training runs: rewritten under it with a
        NaN, the error names the file; truncated under it, the run ends with
        a message and exit 1 (it died of a bare SIGBUS), removing its lock
        file (it was left)."""
        cdir = os.path.join(self.tmp, "changed")
        os.makedirs(cdir, exist_ok=True)
        for how in ("nan", "truncate"):
            items = os.path.join(cdir, "items-%s.npy" % how)
            shutil.copy(self.d("items.npy"), items)
            out = os.path.join(cdir, "m-%s.st" % how)
            proc = subprocess.Popen([str(a) for a in self.base_args(out, items=items) +
                                     ["--epochs", "500"]], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 60
            while proc.poll() is None and not os.path.exists(out + ".ckpt") and \
                    time.time() < deadline:
                time.sleep(0.005)
            size = os.path.getsize(items)
            if how == "nan":
                with open(items, "r+b") as f:  # every row's first value, in place
                    data_off = size - 600 * 24 * 4
                    for r in range(600):
                        f.seek(data_off + r * 24 * 4)
                        f.write(np.array([np.nan], np.float32).tobytes())
            else:
                os.truncate(items, 4096)
            _, err = proc.communicate(timeout=60)
            if how == "nan":
                self.assertEqual(proc.returncode, 2, err)
                self.assertIn(items + " (changed while training?): row ", err)
            else:
                self.assertEqual(proc.returncode, 1, err)
                self.assertIn("shrank or failed while being read (SIGBUS)", err)
            self.assertFalse(os.path.exists(out + ".lock"))

    def test_error_on_a_terminal_starts_its_line(self):
        """On a terminal, an error in the middle of an epoch (here items.npy
        rewritten with NaN under the run) erases the progress bar first: it
        was printed at the end of the bar, "... 70%    3.0ssemid-train: ..."."""
        cdir = os.path.join(self.tmp, "tty")
        os.makedirs(cdir, exist_ok=True)
        items = os.path.join(cdir, "items.npy")
        shutil.copy(self.d("items.npy"), items)
        out = os.path.join(cdir, "m.st")
        master, slave = pty.openpty()
        # small batches: many per epoch, so the NaN lands inside one
        proc = subprocess.Popen([str(a) for a in self.base_args(out, items=items) +
                                 ["--epochs", "500", "--batch-size", "8", "--progress"]],
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        reader = threading.Thread(target=self._drain, args=(master, chunks))
        reader.start()
        deadline = time.time() + 60
        while proc.poll() is None and b"epoch 2/500 [" not in b"".join(chunks) and \
                time.time() < deadline:
            time.sleep(0.002)
        x = np.load(items, mmap_mode="r+")  # the bar of epoch 2 is up: NaN now
        x[:, 0] = np.nan
        x.flush()
        del x
        self.assertEqual(proc.wait(timeout=60), 2)
        reader.join(timeout=60)
        os.close(master)
        err = b"".join(chunks).decode(errors="replace")
        i = err.index("semid-train: epoch ")
        self.assertIn(items + " (changed while training?)", err[i:])
        self.assertRegex(err[i:], r"^semid-train: epoch 2 batch [1-9]")  # mid-epoch
        self.assertTrue(err[:i].endswith(("\n", "\r\033[K")), repr(err[i - 60:i + 20]))

    @staticmethod
    def _drain(fd, chunks):
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not b:
                return
            chunks.append(b)

    def test_gen_refuses_empty_files(self):
        """A fraction that gives no cold item or no test click is refused
        (exit 2), the directory's data left as it was: gen used to write
        the empty file, which semid-train then refused.  So is a target that
        is a directory: its rename failed after the files before it had
        been replaced, a mix of two data sets."""
        gdir = os.path.join(self.tmp, "gen-empty")
        args = [TRAIN, "gen", "--out", gdir, "--items", 300, "--users", 200,
                "--interactions", 3000, "--dim", 16, "--seed", 3]
        p = run(*args)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(gdir, "cold_items.txt")) as f:
            before = f.read()
        for flag, name in (("--cold-frac", "cold_items.txt"), ("--test-frac", "test.tsv")):
            p = run(*args + [flag, 0, "--seed", 4])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("%s would be empty" % name, p.stderr)
            with open(os.path.join(gdir, "cold_items.txt")) as f:
                self.assertEqual(f.read(), before)
        # a target that is not a file: refused before any file is replaced
        # (the renames of the files before it had been made)
        ctest = os.path.join(gdir, "cold_test.tsv")
        os.remove(ctest)
        os.makedirs(os.path.join(ctest, "sub"))
        p = run(*args + ["--seed", 4])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("cold_test.tsv exists and is not a regular file", p.stderr)
        with open(os.path.join(gdir, "cold_items.txt")) as f:
            self.assertEqual(f.read(), before)

    def test_gen_smallest_sizes_train(self):
        """gen wrote data the trainer then refused: with one user, its only
        train click ("1 interactions; training needs 2").  The smallest
        sizes gen takes train; one user's single train click is refused by
        gen (exit 2, naming the flags to raise), nothing written."""
        small = ["--items", 3, "--cold-frac", 0.4, "--test-frac", 0.5, "--dim", 8,
                 "--interactions", 10]
        gdir = os.path.join(self.tmp, "gen-smallest")
        p = run(TRAIN, "gen", "--out", gdir, "--users", 2, *small)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(gdir, "m.st")
        p = run(TRAIN, "--items", os.path.join(gdir, "items.npy"), "--users",
                os.path.join(gdir, "users.npy"), "--train", os.path.join(gdir, "train.tsv"),
                "--test", os.path.join(gdir, "test.tsv"), "--test-cold",
                os.path.join(gdir, "cold_test.tsv"), "--cold-items",
                os.path.join(gdir, "cold_items.txt"), "--out", out, *SMALL)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.isfile(out))
        one = os.path.join(self.tmp, "gen-one-user")
        p = run(TRAIN, "gen", "--out", one, "--users", 1, *small)
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (2, "", "semid-train gen: train.tsv would hold 1 click (--users 1: "
                          "each user keeps one in train, and its other warm clicks went to "
                          "test.tsv at --test-frac 0.5): semid-train needs 2 to train (a "
                          "batch of 2: each click's negatives are the batch's others); raise "
                          "--users or --interactions\n"))
        self.assertEqual(os.listdir(one), [])

    def test_counts_of_one_are_singular(self):
        """A count of 1 in semid-train's lines took a plural: "1 batches",
        "1 levels", "1 users", "1 interactions".  On one user's data, one
        level, one batch, one item without a train click: singular."""
        sdir = os.path.join(self.tmp, "singular")
        os.makedirs(sdir, exist_ok=True)
        items, users = os.path.join(sdir, "items.npy"), os.path.join(sdir, "users.npy")
        np.save(items, np.eye(3, 6, dtype=np.float32) + 0.1)
        np.save(users, np.ones((1, 6), np.float32))
        train, test = os.path.join(sdir, "train.tsv"), os.path.join(sdir, "test.tsv")
        with open(train, "w") as f:
            f.write("0\t0\n0\t1\n")
        with open(test, "w") as f:
            f.write("0\t2\n")
        out = os.path.join(sdir, "m.st")
        p = run(TRAIN, "--items", items, "--users", users, "--train", train, "--test", test,
                "--out", out, "--epochs", 1, "--levels", 1, "--codebook-size", 2, "--hidden",
                4, "--latent-dim", 2, "--threads", 1, "--no-progress")
        self.assertEqual(p.returncode, 0, p.stderr)
        for line in ("semid-train: 1 OpenBLAS thread from the threads setting\n",
                     "semid-train: mode das, 3 items (D 6), 1 user (D 6), 2 train clicks, "
                     "1 batch of 2 per epoch, 1 epoch\n",
                     "codebook init: k-means++ on 1 user row and 2 item rows, 1 level of 2 "
                     "codes\n",
                     "evaluating: 1 test and 0 cold-test interactions, 1 user against 3 "
                     "items\n",
                     "evaluating: no cold set (--cold-items, --test-cold): the 1 item with no "
                     "--train click is ranked as warm candidates too; "):
            self.assertIn(line, p.stderr)
        self.assertNotRegex(p.stderr, r"\b1 [a-z]+s\b")
        with open(train, "w") as f:
            f.write("0\t0\n")
        p = run(TRAIN, "--items", items, "--users", users, "--train", train, "--out", out,
                "--epochs", 1, "--no-progress")
        self.assertEqual(p.returncode, 2)
        self.assertIn("1 interaction; training needs 2", p.stderr)
        with open(train, "w") as f:
            f.write("1\t0\n")
        p = run(TRAIN, "--items", items, "--users", users, "--train", train, "--out", out,
                "--epochs", 1, "--no-progress")
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:1: user 1 out of range (1 user)" % train, p.stderr)
        p = run(TRAIN, "gen", "--out", os.path.join(sdir, "g"), "--users", 1,
                "--interactions", 0)
        self.assertEqual((p.returncode, p.stderr),
                         (2, "semid-train gen: interactions 0 is fewer than the 1 user (each "
                          "user gets a click at least)\n"))

    def test_publish_tables_under_rqvae_is_said(self):
        """--publish-tables true with --mode rqvae, which has no ICDM ID
        tables, published a model without them and said nothing.  Taken
        still (as keys a mode does not use are), with a line saying so;
        das publishes its tables and says nothing of it."""
        tdir = os.path.join(self.tmp, "publish_tables")
        os.makedirs(tdir, exist_ok=True)
        line = ("semid-train: publish_tables true does nothing in mode rqvae, which trains no "
                "ICDM ID tables: the model file holds none (das and two-stage have them)\n")
        for mode, tables in (("rqvae", False), ("das", True)):
            with self.subTest(mode=mode):
                out = os.path.join(tdir, mode + ".st")
                p = run(*self.base_args(out) + ["--mode", mode, "--publish-tables", "true"])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(line in p.stderr, not tables, p.stderr)
                names, _ = load_tensors(out)
                self.assertEqual("icdm.user" in names and "icdm.item" in names, tables)

    def test_gen_summary_is_json(self):
        """The summary line gen prints is JSON whatever the directory is
        called: a quote or a backslash in it went out unescaped."""
        gdir = os.path.join(self.tmp, 'gen "quoted" \\ dir')
        p = run(TRAIN, "gen", "--out", gdir, "--items", 100, "--users", 50,
                "--interactions", 800, "--dim", 8, "--seed", 2)
        self.assertEqual(p.returncode, 0, p.stderr)
        summary = json.loads(p.stdout)
        self.assertEqual(summary["dir"], gdir)
        self.assertEqual(summary["items"], 100)
        with open(os.path.join(gdir, "train.tsv")) as f:
            self.assertEqual(summary["train"], len(f.read().splitlines()))

    def test_eval_and_gen_take_flag_equals_value(self):
        """eval and gen take --flag=value as training does (they said
        "unknown option --model=M", and gen took the next flag for the
        value), and a flag followed by another flag has no value."""
        gdir = os.path.join(self.tmp, "gen-equals")
        p = run(TRAIN, "gen", "--out=" + gdir, "--items=100", "--users", 50,
                "--interactions=800", "--dim", 8, "--seed=2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["dir"], gdir)
        self.assertEqual(np.load(os.path.join(gdir, "items.npy")).shape, (100, 8))
        p = run(TRAIN, "gen", "--out", gdir, "--items", "--users", 50)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--items needs a value", p.stderr)
        p = run(TRAIN, "gen", "--out=" + gdir, "--itemz=3")
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown option --itemz", p.stderr)
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        p = run(TRAIN, "eval", "--model=" + model, "--items=" + self.d("items.npy"),
                "--users", self.d("users.npy"), "--train=" + self.d("train.tsv"),
                "--test=" + self.d("test.tsv"))
        self.assertEqual(p.returncode, 0, p.stderr)
        res = json.loads(p.stdout)
        self.assertEqual(res["model"], model)
        self.assertIn("warm", res["item_side"])
        p = run(TRAIN, "eval", "--test", "--model", model, "--items", self.d("items.npy"),
                "--users", self.d("users.npy"), "--train", self.d("train.tsv"))
        self.assertEqual(p.returncode, 2)
        self.assertIn('missing value for "--test"', p.stderr)

    def test_eval_retrieval_needs_an_item_tower(self):
        """A model without an item tower asked for retrieval figures is refused
        with exit 2 before anything is encoded, in one clear message (it said
        "semid-train eval: eval: retrieval needs an item tower" once every
        tower had been encoded); without --test it is evaluated as before."""
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "server"))
        import semid_testlib as ST
        users = np.load(self.d("users.npy"))
        tower = ST.random_tower(np.random.default_rng(3), users.shape[1], [16], 8, [8, 8])
        model = os.path.join(self.tmp, "user-only.safetensors")
        ST.write_model(model, {"user": tower}, "user-only-1")
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv")]
        p = run(*ev, "--test", self.d("test.tsv"))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stderr.strip().splitlines()[-1],
                         "semid-train eval: retrieval figures (--test, --test-cold) need an "
                         "item tower, and the model has none")
        p = run(*ev)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("user", json.loads(p.stdout))

    def test_eval_names_the_tower_of_a_width_mismatch(self):
        """Rows of the wrong width for a tower: the message said "the model's
        tower takes 4" with two towers to choose from."""
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "server"))
        import semid_testlib as ST
        D = np.load(self.d("items.npy")).shape[1]
        rng = np.random.default_rng(4)
        fits, narrow = (ST.random_tower(rng, d, [16], 8, [8, 8]) for d in (D, 4))
        model = os.path.join(self.tmp, "narrow.safetensors")
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv")]
        for towers, path, tower in (({"item": narrow, "user": fits}, "items.npy", "item"),
                                    ({"item": fits, "user": narrow}, "users.npy", "user")):
            ST.write_model(model, towers, "narrow-1")
            p = run(*ev)
            self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
            self.assertEqual(p.stderr.splitlines()[1:], ["semid-train eval: %s: %d columns, the "
                                                        "model's %s tower takes 4"
                                                        % (self.d(path), D, tower)])

    def test_eval_of_a_model_replaced_while_read(self):
        """eval read the model file twice (the towers, then the decoders'
        tensors): a training publishing over it between (a fixed --out,
        renamed into place) gave the codes of one model with the decoders
        of the next, or, their latent widths apart, "tensor
        item.decoder.0.weight: not an F32 layer chaining latent 8 -> input
        24", exit 2.  It reads the file once: replaced once the model is
        read (held there by SEMID_TEST_EVAL_LOADED_DELAY_MS), the figures are
        all the model's that was read."""
        rdir = os.path.join(self.tmp, "eval-replaced")
        os.makedirs(rdir, exist_ok=True)
        a, b, model = (os.path.join(rdir, n) for n in ("a.st", "b.st", "m.st"))
        for path, latent in ((a, "8"), (b, "16")):
            p = run(*self.base_args(path) + ["--epochs", "1", "--latent-dim", latent,
                                             "--no-eval", "--model-version", "v" + latent])
            self.assertEqual(p.returncode, 0, p.stderr)
        ev = [str(x) for x in self.eval_args(model)]
        shutil.copy(a, model)
        want = run(*ev)
        self.assertEqual(want.returncode, 0, want.stderr)
        want = json.loads(want.stdout)
        proc = subprocess.Popen(ev, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, SEMID_TEST_EVAL_LOADED_DELAY_MS="3000"))
        deadline = time.time() + 30  # until it sleeps with the model read

        def sleeping():
            try:
                with open("/proc/%d/wchan" % proc.pid) as f:
                    return "nanosleep" in f.read()
            except OSError:
                return False
        while proc.poll() is None and time.time() < deadline and not sleeping():
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "finished before it was seen with the model read")
        shutil.copy(b, model + ".new")
        os.rename(model + ".new", model)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        got = json.loads(out)
        self.assertEqual(got["model_version"], "v8")
        for tower in ("item", "user"):
            self.assertEqual(got[tower], want[tower], tower)

    def test_eval_progress(self):
        """eval said nothing while it ran (6.4 s at 30k users x 30k items,
        growing with users x items), and the final evaluation of a training
        one line and then nothing.  Both say when they start and end, and
        between, without a terminal, a line every --progress-every seconds,
        its percent of the work rising; on a terminal a bar, erased before
        the last line."""
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv"), "--test", self.d("test.tsv"),
              "--test-cold", self.d("cold_test.tsv"), "--cold-items", self.d("cold_items.txt")]
        first = ("evaluating: %d test and %d cold-test interactions, 300 users against 600 items"
                 % (self.gen_summary["test"], self.gen_summary["cold_test"]))
        line = (r"^evaluating: (encoding the (item|user) tower|ranking (raw_)?(item_side|"
                r"cross_tower) (warm|cold)), (\d+)% done, [0-9.]+s, about \d+s left$")
        quiet = run(*ev)  # the default, 30 s: no line in a run this short
        self.assertEqual(quiet.returncode, 0, quiet.stderr)
        self.assertEqual(quiet.stderr.splitlines()[0], first)
        self.assertRegex(quiet.stderr, r"\nevaluation: [0-9.]+s\n$")
        self.assertNotIn("% done", quiet.stderr)
        p = run(*ev, "--progress-every", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, quiet.stdout)
        lines = p.stderr.splitlines()
        self.assertEqual(lines[0], first)
        self.assertRegex(lines[-1], r"^evaluation: [0-9.]+s$")
        got = [re.match(line, x) for x in lines[1:-1]]
        self.assertTrue(got and all(got), p.stderr)
        stages = [m.group(1) for m in got]
        for stage in ("encoding the item tower", "encoding the user tower",
                      "ranking item_side warm", "ranking item_side cold",
                      "ranking cross_tower warm", "ranking raw_item_side warm"):
            self.assertIn(stage, stages)
        pct = [int(m.group(6)) for m in got]
        self.assertEqual(pct, sorted(pct))
        self.assertLess(pct[-1], 100)
        p = run(*ev, "--progress-every", "soon")
        self.assertEqual(p.returncode, 2)
        self.assertIn("semid-train eval: --progress-every: progress_every: \"soon\" is not a "
                      "number of seconds", p.stderr)
        # the final evaluation of a training, as training's own lines
        out = os.path.join(self.tmp, "eval-progress.st")
        args = [a for a in self.base_args(out) if a != "--no-progress"]
        p = run(*args, "--epochs", "1", "--test", self.d("test.tsv"), "--progress-every", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"\nevaluating: ranking item_side warm, \d+% done, ")
        # on a terminal, a bar
        err = self._stderr_on_a_terminal(ev)
        self.assertRegex(err, r"\revaluating \[[#.]{30}\] +\d+% +[0-9.]+s")
        self.assertRegex(err, r"\r\033\[Kevaluation: [0-9.]+s\r?\n$")

    def test_gen_progress(self):
        """gen showed progress only on a terminal (a line of users every
        twentieth), so a job at 10 million items said nothing for minutes.
        Now it shows it as training does: a line every --progress-every
        seconds without a terminal, for each phase (items, users, clicks),
        the percent rising; none in a short run at the default 30 s; a bar
        on a terminal, erased at the end; the data the same either way."""
        args = [TRAIN, "gen", "--items", "20000", "--users", "9000", "--interactions",
                "90000", "--dim", "8", "--seed", "4"]
        outs = []
        for k, extra in enumerate(([], ["--progress-every", "0"])):
            d = os.path.join(self.tmp, "gen-progress-%d" % k)
            p = subprocess.run(args + ["--out", d] + extra, capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            files = {}
            for f in sorted(os.listdir(d)):
                with open(os.path.join(d, f), "rb") as fh:
                    files[f] = fh.read()
            outs.append((p.stdout.replace(d, "DIR"), files))
            if not extra:
                self.assertEqual(p.stderr, "")
                continue
            for what, total in (("items", 20000), ("users", 9000), ("clicks of users", 9000)):
                pcts = [int(m) for m in re.findall(r"^gen: %s \d+/%d \((\d+)%%\), [0-9.]+s$"
                                                   % (what, total), p.stderr, re.M)]
                self.assertGreater(len(pcts), 1, (what, p.stderr[-500:]))
                self.assertEqual(pcts, sorted(pcts))
                self.assertLess(pcts[-1], 100)
            self.assertEqual(len(p.stderr.splitlines()),
                             len(re.findall(r"^gen: .*s$", p.stderr, re.M)), p.stderr[-500:])
        self.assertEqual(outs[0], outs[1])
        self.assertRaises(subprocess.CalledProcessError, subprocess.run,
                          args + ["--out", os.path.join(self.tmp, "gp-bad"), "--progress-every",
                                  "-1"], capture_output=True, check=True, timeout=60)
        # on a terminal, a bar
        err = self._stderr_on_a_terminal(args + ["--out", os.path.join(self.tmp, "gen-tty")])
        self.assertRegex(err, r"\rgen: items \[[#.]{30}\] +\d+% +[0-9.]+s")
        self.assertRegex(err, r"\rgen: clicks of users \[[#.]{30}\] +100% +[0-9.]+s")
        self.assertTrue(err.endswith("\r\033[K"), repr(err[-80:]))

    def _stderr_on_a_terminal(self, cmd):
        """Run @cmd (exit 0 asserted) with stderr on a pseudo-terminal: what
        it wrote there."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([str(a) for a in cmd], stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        reader = threading.Thread(target=self._drain, args=(master, chunks))
        reader.start()
        self.assertEqual(proc.wait(timeout=60), 0)
        reader.join(timeout=60)
        os.close(master)
        return b"".join(chunks).decode(errors="replace")

    def _stdout_cases(self, name):
        """A command of each kind that writes stdout (version, gen, eval,
        train into tmp/NAME.st), as semid-train's arguments."""
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        return [
            ["--version"],
            ["gen", "--out", os.path.join(self.tmp, "gen-" + name), "--items", 100,
             "--users", 50, "--interactions", 800, "--dim", 8],
            ["eval", "--model", model, "--items", self.d("items.npy"), "--users",
             self.d("users.npy"), "--train", self.d("train.tsv"), "--test",
             self.d("test.tsv")],
            self.base_args(os.path.join(self.tmp, name + ".st"))[1:] +
            ["--test", self.d("test.tsv"), "--epochs", 1],
        ]

    def test_eval_refuses_rows_the_encoder_overflows_on(self):
        """Codes of a row the encoder overflowed float32 on mean nothing:
        eval printed figures from them (a diverged model with weights of
        1e20 "scored" a collision rate of 0.9, exit 0).  Such a model is
        refused as the server refuses it, and an ordinary model given one
        row too large for it names that row; exit 2 and nothing on stdout
        both times."""
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "server"))
        import semid_testlib as ST
        items = np.load(self.d("items.npy"))
        tower = ST.random_tower(np.random.default_rng(3), items.shape[1], [16], 8, [8, 8],
                                norm="none")
        big = ST.Tower([(w * np.float32(1e20), b) for w, b in tower.layers], tower.codebooks,
                       tower.act, tower.norm)
        model = os.path.join(self.tmp, "overflow.safetensors")
        ST.write_model(model, {"item": big, "user": big}, "big-1")
        ev = [TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
              self.d("users.npy"), "--train", self.d("train.tsv")]
        p = run(*ev)
        self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
        self.assertIn(model + ": smoke encode of the item tower: the unit-norm row with every "
                      "value +1/sqrt(D) overflows float32 in the encoder", p.stderr)
        ST.write_model(model, {"item": tower, "user": tower}, "ok-1")
        items[7] *= np.float32(1e36)
        huge = os.path.join(self.tmp, "items-huge.npy")
        np.save(huge, items)
        ev[5] = huge
        p = run(*ev)
        self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
        self.assertIn(huge + ": row 7: values too large for the model: its encoder overflows "
                      "float32 on them", p.stderr)
        ev[5] = self.d("items.npy")
        self.assertEqual(run(*ev).returncode, 0)

    def test_stdout_write_failure_is_an_error(self):
        """What goes to stdout must arrive: `> eval.json` on a full disk
        (/dev/full) exited 0 with the JSON lost.  Exit 1 and say so, as
        `semid` does; a trained model is published all the same."""
        out = os.path.join(self.tmp, "full.st")
        cases = self._stdout_cases("full")
        with open("/dev/full", "wb") as full:
            for args in cases:
                with self.subTest(args=args[0]):
                    p = subprocess.run([TRAIN] + [str(a) for a in args], stdout=full,
                                       stderr=subprocess.PIPE, text=True, timeout=120)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn("semid-train: stdout: write failed", p.stderr)
        self.assertTrue(os.path.exists(out))

    def test_reader_gone_is_a_quiet_stop(self):
        """A stdout pipe whose reader went away ends semid-train as it ends
        `semid` and `cat`: quietly, 141 where SIGPIPE is ignored (it said
        "stdout: write failed: Broken pipe" and exited 1 there), by the
        signal otherwise.  Training publishes before it prints."""
        out = os.path.join(self.tmp, "gone.st")
        cases = self._stdout_cases("gone")

        def ignore():
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)

        for args in cases:
            for pre in (None, ignore):
                with self.subTest(args=args[0], sigpipe="ignored" if pre else "default"):
                    r, w = os.pipe()
                    os.close(r)
                    try:
                        p = subprocess.run([TRAIN] + [str(a) for a in args], stdout=w,
                                           stderr=subprocess.PIPE, text=True, timeout=120,
                                           preexec_fn=pre)
                    finally:
                        os.close(w)
                    self.assertEqual(p.returncode, 141 if pre else -signal.SIGPIPE, p.stderr)
                    self.assertNotIn("write failed", p.stderr)
        self.assertTrue(os.path.exists(out))

    def test_stderr_reader_gone_costs_lines_not_the_run(self):
        """A stderr whose reader went away (a log pipe that died; `2>&1 |
        tee log` whose tee the same Ctrl-C ended) ended a run by SIGPIPE at
        its next line: the epoch under way lost, MODEL.lock left, and the
        stop a SIGINT had asked for never made.  Its lines are lost
        instead: a run goes on to publish, eval prints its figures, and a
        SIGINT stops a run as it stops one with its log there (130, the
        checkpoint kept, no lock file); --resume then finishes it."""
        sdir = os.path.join(self.tmp, "stderr-gone")
        os.makedirs(sdir)
        out = os.path.join(sdir, "m.st")
        args = [str(a) for a in self.base_args(out)]
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        for cmd in (args, [str(a) for a in self.eval_args(model)]):
            with self.subTest(cmd=cmd[1]):
                r, w = os.pipe()
                os.close(r)
                try:
                    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=w, timeout=120)
                finally:
                    os.close(w)
                self.assertEqual(p.returncode, 0)
                if cmd is args:
                    self.assertEqual(sorted(os.listdir(sdir)), ["m.st", "m.st.ckpt"])
                else:
                    self.assertIn("item_side", json.loads(p.stdout))
        shutil.rmtree(sdir)
        os.makedirs(sdir)
        # the tee ends at the Ctrl-C; the run takes the SIGINT after it
        r, w = os.pipe()
        proc = subprocess.Popen(args + ["--epochs", "500"], stdout=subprocess.DEVNULL,
                                stderr=w)
        os.close(w)
        with os.fdopen(r, "rb", buffering=0) as log:
            said, deadline = b"", time.time() + 60
            while b"\nepoch 1/500 " not in said and time.time() < deadline:
                chunk = log.read(4096)
                self.assertTrue(chunk, said.decode(errors="replace"))
                said += chunk
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(timeout=60), 128 + signal.SIGINT)
        self.assertEqual(os.listdir(sdir), ["m.st.ckpt"])
        p = run(*self.base_args(out) + ["--epochs", "500", "--resume", "--stop-after",
                                         "1"])  # the checkpoint is whole: it resumes
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"resumed from .* after epoch \d+/500")

    def test_gen_stopped_keeps_the_old_files(self):
        gdir = os.path.join(self.tmp, "gen-stop")
        p = run(TRAIN, "gen", "--out", gdir, "--items", 600, "--users", 300, "--interactions",
                6000, "--dim", 24, "--seed", 5)
        self.assertEqual(p.returncode, 0, p.stderr)

        before = dir_files(gdir)
        self.assertEqual(sorted(before), ["cold_items.txt", "cold_test.tsv", "items.npy",
                                          "test.tsv", "train.tsv", "users.npy"])
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            # a data set that takes seconds: stopped while it writes items.npy
            proc = subprocess.Popen([str(a) for a in (
                TRAIN, "gen", "--out", gdir, "--items", 2000000, "--users", 1000000,
                "--interactions", 20000000, "--dim", 64, "--seed", 9)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 60
            while (proc.poll() is None and time.time() < deadline and
                   not writing_into(proc.pid, gdir, written=True)):
                time.sleep(0.005)
            # caught while it writes, or the rest proves nothing about a cut run
            self.assertTrue(writing_into(proc.pid, gdir, written=True), "never seen writing")
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
            if sig == signal.SIGKILL:  # no cleanup runs: the temp files must be unnamed
                self.assertEqual(proc.returncode, -sig, err)
            else:
                self.assertEqual(proc.returncode, 128 + sig, err)
                self.assertIn("semid-train gen: stopped by %s; nothing written (%s keeps "
                              "the files it had)" % (sig.name, gdir), err)
            self.assertEqual(out, "")
            after = dir_files(gdir)
            if sig == signal.SIGKILL:  # its lock file stays, locking nothing
                self.assertRegex(after.pop("gen.lock").decode(), r"\A%d \S+\n\Z" % proc.pid)
            self.assertEqual(after, before)  # no temp file left, no file changed
        # the next run takes a left lock file over, and removes it
        p = run(TRAIN, "gen", "--out", gdir, "--items", 600, "--users", 300, "--interactions",
                6000, "--dim", 24, "--seed", 5)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(dir_files(gdir), before)

    def test_gen_under_a_file_size_limit(self):
        """ulimit -f reached ended gen by SIGXFSZ (153) without a word; the
        write now fails with EFBIG, said naming the file, exit 1, nothing
        left in the directory."""
        gdir = os.path.join(self.tmp, "gen-fsize")
        os.makedirs(gdir)
        p = subprocess.run([TRAIN, "gen", "--out", gdir, "--items", "2000", "--users", "500",
                            "--interactions", "5000", "--dim", "64"], capture_output=True,
                           text=True, timeout=120,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                 (65536, 65536)))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr, "semid-train gen: %s/items.npy: write: File too large\n" % gdir)
        self.assertEqual(os.listdir(gdir), [])

    @unittest.skipIf(os.environ.get("SEMID_SANITIZE"),
                     "a sanitizer's shadow memory does not fit a memory limit")
    def test_under_a_memory_limit(self):
        """Under ulimit -v or -d OpenBLAS retries a buffer it cannot map for
        ever: semid-train spun, deaf to SIGTERM (at 150-300 MiB here, with
        OPENBLAS_NUM_THREADS=1 too), or said "out of memory" and never
        exited (100 MiB).  Too little room for OpenBLAS's 128 MiB work
        buffer is now refused up front, naming the limit (exit 1, nothing
        published), for training and eval; room for fewer threads than
        asked trains on fewer, saying so."""
        mib = 1 << 20
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                            "OPENBLAS_DEFAULT_NUM_THREADS")}

        def limited(which, n):
            return lambda: resource.setrlimit(which, (n, n))
        model = os.path.join(self.tmp, "memlimit-model.safetensors")
        p = run(*self.base_args(model))
        self.assertEqual(p.returncode, 0, p.stderr)
        out = os.path.join(self.tmp, "memlimit.safetensors")
        for which, name in ((resource.RLIMIT_AS, "address-space limit (ulimit -v, LimitAS=)"),
                            (resource.RLIMIT_DATA, "data-segment limit (ulimit -d, LimitDATA=)")):
            for what, args in (("semid-train", self.base_args(out)),
                               ("semid-train eval", self.eval_args(model))):
                p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env,
                                   preexec_fn=limited(which, 100 * mib))
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertRegex(p.stderr, r"^%s: the %s of 100 MiB leaves no room for "
                                 r"OpenBLAS's 128 MiB work buffer beside the \d+ MiB mapped "
                                 r"already \(OpenBLAS would wait for it for ever\): raise it\n$"
                                 % (what, re.escape(name)))
                self.assertEqual(p.stdout, "")
                self.assertFalse(os.path.exists(out))
        # room for the caller's buffer and a thread or two, not for 8
        p = subprocess.run(self.base_args(out) + ["--threads", "8"], capture_output=True,
                           text=True, timeout=120, env=env,
                           preexec_fn=limited(resource.RLIMIT_AS, 600 * mib))
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.search(r"^semid-train: (\d+) OpenBLAS threads? from the threads setting \(8 "
                      r"asked: the address-space limit \(ulimit -v, LimitAS=\) of 600 MiB "
                      r"leaves no room for more, each \d+ MiB of OpenBLAS buffer and stack, "
                      r"with a quarter of it kept for the data\)$", p.stderr, re.M)
        self.assertTrue(m, p.stderr)
        self.assertTrue(1 <= int(m.group(1)) < 8, m.group(0))
        self.assertEqual(run(SEMID, "inspect", out).returncode, 0)
        # with room for all, the threads OpenBLAS takes without a limit: its
        # own variables capped at the CPUs (the limit used to give 3 of 2)
        threads = {}
        over = str(len(os.sched_getaffinity(0)) + 1)
        args = self.base_args(out)
        del args[args.index("--threads"):args.index("--threads") + 2]
        for lim in (None, 2048 * mib):
            p = subprocess.run(args, capture_output=True, text=True, timeout=120,
                               env=dict(env, OMP_NUM_THREADS=over),
                               preexec_fn=limited(resource.RLIMIT_AS, lim) if lim else None)
            self.assertEqual(p.returncode, 0, p.stderr)
            threads[lim] = re.findall(r"^semid-train: \d+ OpenBLAS threads? from .*$", p.stderr,
                                      re.M)
        self.assertEqual(threads[None], ["semid-train: %d OpenBLAS thread%s from OMP_NUM_THREADS=%s"
                                         % (int(over) - 1, "" if over == "2" else "s", over)])
        self.assertEqual(threads[2048 * mib], threads[None])

    def test_under_a_thread_limit(self):
        """Under a limit on the user's processes and threads (ulimit -u,
        LimitNPROC=) OpenBLAS 0.3.21 raised SIGINT when a thread it starts
        at load could not start: the trainer died as if interrupted (exit
        130) before main(), and --threads above what could start hung in
        the first product, waiting for a thread that never ran.  Now the
        threads are tried first: it trains, evaluates and generates on the
        ones that started, saying so.  (RLIMIT_NPROC binds only a user other
        than root.)"""
        if os.geteuid() != 0:
            self.skipTest("needs root to run the trainer as another user")
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest("OpenBLAS takes one thread per CPU at most: needs 2 CPUs")
        d = tempfile.mkdtemp(prefix="semid-nproc-")  # self.tmp is 0700
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o777)
        for f in ("items.npy", "users.npy", "train.tsv", "test.tsv"):
            shutil.copy(self.d(f), d)
        prog = T.as_nobody(TRAIN)["program"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("GOTO_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_DEFAULT_NUM_THREADS")}
        # LeakSanitizer's exit check starts a thread, which the limit refuses
        # ("LeakSanitizer has encountered a fatal error", exit 86): the rest
        # of a sanitizer build's checks still run
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        args = [prog, "--items", os.path.join(d, "items.npy"), "--users",
                os.path.join(d, "users.npy"), "--train", os.path.join(d, "train.tsv")] + SMALL
        del args[args.index("--threads"):args.index("--threads") + 2]
        limit = ("the rest refused \\(Resource temporarily unavailable\\) by the limit on "
                 "the user's processes and threads, ulimit -u or LimitNPROC=, or by a cgroup's "
                 "pids.max\\)$")

        def limited(extra, threads, timeout=120):
            # a uid of its own: RLIMIT_NPROC counts every process of the
            # user, and other suites run programs as nobody meanwhile; one
            # process, no thread more
            return subprocess.run(args[:1] + extra, capture_output=True, text=True,
                                  env=dict(env, OPENBLAS_NUM_THREADS=threads), user=64998,
                                  group=64998, timeout=timeout,
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC,
                                                                        (1, 1)))
        for threads, flags, shown in (("2", [], "OPENBLAS_NUM_THREADS=2"),
                                      ("1", ["--threads", "2"], "the threads setting")):
            out = os.path.join(d, "m%s.safetensors" % threads)
            p = limited(args[1:] + flags + ["--out", out], threads)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stderr, "(?m)^semid-train: 1 OpenBLAS thread from %s \\(2 "
                             "asked: 0 more could start beside the 1 running, %s" % (
                                 re.escape(shown), limit))
            self.assertNotIn("OpenBLAS blas_thread_init", p.stderr)
            self.assertEqual(run(SEMID, "inspect", out).returncode, 0)
        p = limited(["eval", "--model", out, "--items", os.path.join(d, "items.npy"),
                     "--users", os.path.join(d, "users.npy"), "--train",
                     os.path.join(d, "train.tsv"), "--test", os.path.join(d, "test.tsv")], "2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("item_side", json.loads(p.stdout))
        # as root the limit does not bind: the threads asked, no word
        p = subprocess.run(args + ["--out", os.path.join(d, "root.safetensors")],
                           capture_output=True, text=True, timeout=120,
                           env=dict(env, OPENBLAS_NUM_THREADS="2"),
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (1, 1)))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, "(?m)^semid-train: 2 OpenBLAS threads from "
                         "OPENBLAS_NUM_THREADS=2$")

    @unittest.skipUnless(shutil.which("strace"), "needs strace to see the trainer's execs")
    def test_generous_thread_limit_no_reexec(self):
        """Under any finite limit on the user's threads (ulimit -u,
        LimitNPROC=; 96365 is a common default) the trainer executed itself
        again at every start, to defer OpenBLAS's threads, though the limit
        was far above what it could start: a cost at each start, and two
        execs in strace and ps.  Now a limit that the machine's task count
        stays well below changes nothing; one within reach still
        re-executes, the exec carrying SEMID_BLAS_DEFERRED (strace -v shows
        each exec's environment)."""
        for res in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            if resource.getrlimit(res)[0] != resource.RLIM_INFINITY:
                self.skipTest("a memory limit defers OpenBLAS's threads anyway")
        with open("/proc/sys/vm/overcommit_memory") as f:
            if f.read().strip() == "2":
                self.skipTest("strict commit accounting defers OpenBLAS's threads anyway")
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        generous = 1 << 22 if hard == resource.RLIM_INFINITY else hard
        with open("/proc/loadavg") as f:
            tasks = int(f.read().split()[3].split("/")[1])
        if generous < tasks + os.cpu_count() + 256 + 10000:
            self.skipTest("the hard RLIMIT_NPROC (%d) is near the machine's %d tasks"
                          % (generous, tasks))
        prog, kw = TRAIN, {}
        if os.geteuid() == 0:  # RLIMIT_NPROC binds a user other than root only
            prog = T.as_nobody(TRAIN)["program"]
            # a uid of its own: no other task.  Not one another suite running
            # at the same time uses (64996-64999: test_server's limits on
            # threads and this file's other test), whose tasks count under
            # RLIMIT_NPROC too: 64996 here left test_server's --check-config
            # no thread of its pool when both ran at once
            kw = {"user": 64995, "group": 64995}
        env = dict(os.environ, SEMID_BLAS_TUNE="0")  # its own re-exec, for a CPU
        env.pop("SEMID_BLAS_DEFERRED", None)
        d = tempfile.mkdtemp(prefix="semid-nproc-")  # self.tmp is 0700: strace's log
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o777)

        def deferred_execs(limit):
            log = os.path.join(d, "strace-%d.log" % limit)
            p = subprocess.run(["strace", "-f", "-qq", "-v", "-s", "64", "-e", "trace=execve",
                                "-o", log, prog, "--version"], capture_output=True, text=True,
                               env=env, timeout=60, **kw,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC,
                                                                     (limit, hard)))
            if p.returncode != 0 and "ptrace" in p.stderr:
                self.skipTest("strace cannot trace here: " + p.stderr.strip())
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout, r"^semid-train \S+ \(model format \d+\)\n$")
            with open(log) as f:
                execs = [line for line in f if " execve(" in line and "= 0" in line]
            self.assertTrue(execs, "strace saw no exec")
            return [e for e in execs if '"SEMID_BLAS_DEFERRED=' in e]
        self.assertEqual(deferred_execs(generous), [])
        if os.geteuid() == 0:  # within reach: the uid's own 2 tasks, 20 allowed
            self.assertEqual(len(deferred_execs(20)), 1)

    def test_under_strict_commit_accounting(self):
        """Under vm.overcommit_memory=2 a mapping past CommitLimit is refused
        whatever this process's limits, and OpenBLAS retries its buffer for
        ever, as under ulimit -v.  The sysctl is the machine's, so the
        trainer reads a fake /proc here (SEMID_TEST_PROC): too little room
        for OpenBLAS's 128 MiB buffer is refused up front, naming the
        setting and the room (exit 1, nothing written), for training and
        eval; room for fewer threads than asked trains on fewer, saying so;
        the heuristic mode (0) changes nothing."""
        fake = os.path.join(self.tmp, "fake-proc")
        os.makedirs(os.path.join(fake, "sys", "vm"))

        def machine(mode, limit_mib, committed_mib):
            with open(os.path.join(fake, "sys", "vm", "overcommit_memory"), "w") as f:
                f.write("%d\n" % mode)
            with open(os.path.join(fake, "meminfo"), "w") as f:
                f.write("MemTotal:       24684032 kB\nCommitLimit:    %d kB\n"
                        "Committed_AS:   %d kB\n" % (limit_mib * 1024, committed_mib * 1024))
        env = dict(os.environ, SEMID_TEST_PROC=fake, OPENBLAS_NUM_THREADS="1")
        model = os.path.join(self.tmp, "commit-model.st")
        p = run(*self.base_args(model))
        self.assertEqual(p.returncode, 0, p.stderr)
        odir = os.path.join(self.tmp, "commit")
        os.makedirs(odir)
        out = os.path.join(odir, "m.st")
        machine(2, 12000, 11900)
        for what, args in (("semid-train", self.base_args(out)),
                           ("semid-train eval", self.eval_args(model))):
            p = run(*args, env=env, timeout=120)
            self.assertEqual((p.returncode, p.stdout, p.stderr), (
                1, "", "%s: strict memory accounting (vm.overcommit_memory=2) leaves 100 MiB "
                "to commit on this machine (CommitLimit 12000 MiB, Committed_AS 11900 MiB): "
                "no room for OpenBLAS's 128 MiB work buffer (OpenBLAS would wait for it for "
                "ever): let other programs end, or raise vm.overcommit_ratio (or "
                "overcommit_kbytes)\n" % what))
            self.assertEqual(os.listdir(odir), [])
        # 1024 MiB: the caller's 128, a quarter kept, room for 4 threads more
        machine(2, 12000, 10976)
        p = run(*self.base_args(out) + ["--threads", "16"], env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"(?m)^semid-train: 5 OpenBLAS threads from the threads "
                         r"setting \(16 asked: strict memory accounting "
                         r"\(vm.overcommit_memory=2\) leaves 1024 MiB to commit on this "
                         r"machine, room for no more, each 1\d\d MiB of OpenBLAS buffer and "
                         r"stack, with a quarter of it kept for the data\)$")
        self.assertEqual(run(SEMID, "inspect", out).returncode, 0)
        # the threads OpenBLAS would start at load, before main(): deferred
        # too (they had mapped their buffers, and counted as started, before
        # the room was read), so 300 MiB (the caller's 128, a quarter kept)
        # leaves the caller alone however many CPUs there are
        if len(os.sched_getaffinity(0)) > 1:
            machine(2, 12000, 11700)
            unset = {k: v for k, v in env.items()
                     if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                                  "OPENBLAS_DEFAULT_NUM_THREADS")}
            args = self.base_args(out)
            del args[args.index("--threads"):args.index("--threads") + 2]
            p = run(*args, env=unset, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stderr, r"(?m)^semid-train: 1 OpenBLAS thread from .* \(\d+ "
                             r"asked: strict memory accounting \(vm.overcommit_memory=2\) "
                             r"leaves 300 MiB to commit on this machine, room for no more")
        # the heuristic: as asked
        machine(0, 12000, 11900)
        p = run(*self.base_args(out) + ["--threads", "3"], env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"(?m)^semid-train: 3 OpenBLAS threads from the threads "
                         r"setting$")

    def test_gen_refuses_what_cannot_fit(self):
        """gen with 2^31-1 items took the machine's memory (24 GB in use,
        SIGTERM not heeded, then the kernel's OOM killer after 13 minutes);
        one whose files outgrow the disk filled it at the end.  Both are
        refused before anything is made, exit 2, with the sizes: --out too
        (it was made, and left empty), its free space read from the
        directory mkdir -p would make it in."""
        gdir = os.path.join(self.tmp, "gen-huge", "data")
        p = run(TRAIN, "gen", "--out", gdir, "--items", 2147483647, "--users", 1,
                "--interactions", 1, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"^semid-train gen: 2147483647 items and 1 user need "
                         r"about 106\.\d GiB of memory, more than the \d+\.\d GiB here\n$")
        self.assertFalse(os.path.exists(os.path.dirname(gdir)))
        if os.geteuid() != 0:
            self.skipTest("the disk check needs a small file system: mounting one needs root")
        small = os.path.join(self.tmp, "small")
        os.makedirs(small)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here")
        try:
            # 10000 x 64 float32 items alone are 2.4 MiB
            for out in (small, os.path.join(small, "new", "data")):
                p = run(TRAIN, "gen", "--out", out, "--items", 10000, "--users", 100,
                        "--interactions", 1000, "--dim", 64, timeout=60)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertRegex(p.stderr, r"^semid-train gen: the files need up to 2\.\d "
                                 r"MiB; %s has 1\.0 MiB free\n$" % re.escape(out))
                self.assertEqual(os.listdir(small), [])
        finally:
            subprocess.run(["umount", small], check=True)

    def test_gen_refuses_cluster_centres_that_cannot_fit(self):
        """The memory check counted items and users, not the --clusters
        centres (G x dim float32): 10^6 of them at 65536 dimensions, 244
        GiB, were asked of malloc after --out was made (exit 1, "out of
        memory", the directory left empty, or the machine's memory taken
        where it was granted).  Refused before anything is made, exit 2,
        naming the clusters."""
        gdir = os.path.join(self.tmp, "gen-centres", "data")
        p = run(TRAIN, "gen", "--out", gdir, "--items", 1000000, "--users", 10,
                "--interactions", 100, "--dim", 65536, "--clusters", 1000000, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertRegex(p.stderr, r"^semid-train gen: 1000000 items, 10 users and 1000000 "
                         r"clusters need about 24\d\.\d GiB of memory \(the centres 244\.1 "
                         r"GiB\), more than the \d+\.\d GiB here\n$")
        self.assertFalse(os.path.exists(os.path.dirname(gdir)))

    def _ref_and_small(self, name):
        """tmp/NAME/ref and tmp/NAME/small, made, for a reference run and a
        small file system to fill (the test skipped unless root, which
        mounting one needs)."""
        if os.geteuid() != 0:
            self.skipTest("a small file system to fill: mounting one needs root")
        dirs = [os.path.join(self.tmp, name, d) for d in ("ref", "small")]
        for d in dirs:
            os.makedirs(d)
        return dirs

    def _tmpfs(self, path, pages):
        """A tmpfs of PAGES pages of 4 KiB mounted on PATH until the test
        ends (the test skipped where it cannot be); its remount(pages)
        resizes it."""
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % (pages * 4096), "tmpfs",
                           path], capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", path], check=True)
        return lambda n: subprocess.run(["mount", "-o", "remount,size=%d" % (n * 4096), path],
                                        check=True)

    def test_publish_failure_says_the_checkpoint_holds_the_training(self):
        """A model that could not be published after the last epoch (a
        disk with room for the checkpoint but not for the model as well)
        was told as the write's error alone, exit 1: nothing said that the
        checkpoint holds every epoch and that --resume publishes it without
        training again, and a nightly job trained afresh."""
        ref, small = self._ref_and_small("publish-full")
        one = ["--epochs", "1"]
        p = run(*self.base_args(os.path.join(ref, "m.st")) + one)
        self.assertEqual(p.returncode, 0, p.stderr)
        page = 4096
        ckpt_pages = -(-os.path.getsize(os.path.join(ref, "m.st.ckpt")) // page)
        self.assertGreater(os.path.getsize(os.path.join(ref, "m.st")), page)
        resize = self._tmpfs(small, ckpt_pages + 1)
        out = os.path.join(small, "m.st")
        p = run(*self.base_args(out) + one)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("No space left on device; nothing published; %s.ckpt holds every "
                      "epoch (1/1): --resume publishes it without training again" % out,
                      p.stderr)
        self.assertEqual(os.listdir(small), ["m.st.ckpt"])
        # room made: the resumed run publishes, training nothing
        resize((ckpt_pages + 1) * 2)
        p = run(*self.base_args(out) + one + ["--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from", p.stderr)
        self.assertNotIn("epoch 1/1 ", p.stderr)

    def test_checkpoint_on_a_full_disk_keeps_the_last_one(self):
        """A disk that fills between two epochs failed the run with the
        write's error alone (naming a temp file that never existed): nothing
        said whether OUT.ckpt was still there for --resume.  On a tmpfs with
        room for one checkpoint, epoch 2's fails; the message says that
        OUT.ckpt is as it was, holding epoch 1/3, and it is: the tensors of a
        run stopped after epoch 1.  Given room, --resume from it ends as an
        uninterrupted run does."""
        ref, small = self._ref_and_small("ckpt-full")
        three = ["--epochs", "3"]
        p = run(*self.base_args(os.path.join(ref, "one.st")) + three + ["--stop-after", "1"])
        self.assertEqual(p.returncode, 0, p.stderr)
        want_ckpt = self._model_tensors(os.path.join(ref, "one.st.ckpt"))
        p = run(*self.base_args(os.path.join(ref, "all.st")) + three)
        self.assertEqual(p.returncode, 0, p.stderr)
        want_model = self._model_tensors(os.path.join(ref, "all.st"))
        page = 4096
        ckpt_pages = -(-os.path.getsize(os.path.join(ref, "one.st.ckpt")) // page)
        resize = self._tmpfs(small, ckpt_pages + 1)
        out = os.path.join(small, "m.st")
        ckpt = out + ".ckpt"
        p = run(*self.base_args(out) + three)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("\nepoch 2/3 joint", p.stderr)
        self.assertEqual(p.stderr.splitlines()[-1],
                         "semid-train: checkpoint: %s: write the temporary file for it: No "
                         "space left on device; %s is as it was, holding epoch 1/3: "
                         "--resume continues from there" % (ckpt, ckpt))
        self.assertEqual(os.listdir(small), ["m.st.ckpt"])
        self.assertEqual(self._model_tensors(ckpt), want_ckpt)
        resize((ckpt_pages + 1) * 3)
        p = run(*self.base_args(out) + three + ["--resume"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("resumed from %s after epoch 1/3" % ckpt, p.stderr)
        self.assertEqual(self._model_tensors(out), want_model)

    def test_gen_renames_its_files_as_one_step(self):
        """gen renames its six files into place one after the other; two
        signals between two renames (the first only asks for a stop, the
        second ends the process at once) left a directory of new and old
        files, a data set that never was.  Held across the renames (here
        300 ms apart, SEMID_TEST_GEN_COMMIT_DELAY_MS), the signals are
        taken once all six are in place: the directory holds exactly what
        an uninterrupted run writes."""
        gdir = os.path.join(self.tmp, "gen-commit")
        ref = os.path.join(self.tmp, "gen-commit-ref")
        gen = [TRAIN, "gen", "--items", 600, "--users", 300, "--interactions", 6000,
               "--dim", 24]
        p = run(*gen, "--out", gdir, "--seed", 5)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run(*gen, "--out", ref, "--seed", 6)
        self.assertEqual(p.returncode, 0, p.stderr)

        want = dir_files(ref)
        first = os.path.join(gdir, "items.npy")  # renamed first
        ino = os.stat(first).st_ino
        env = dict(os.environ, SEMID_TEST_GEN_COMMIT_DELAY_MS="300")
        proc = subprocess.Popen([str(a) for a in gen + ["--out", gdir, "--seed", 6]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        deadline = time.time() + 60
        while os.stat(first).st_ino == ino:  # the first rename is made
            self.assertIsNone(proc.poll(), "finished before its first rename was seen")
            self.assertLess(time.time(), deadline)
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), err)
        self.assertEqual(dir_files(gdir), want)

    def test_second_gen_into_a_directory_is_refused(self):
        """Nothing stopped two gens into one directory: each renamed its
        six files into place, among the other's, and left a mix of two
        data sets.  While one runs (here held stopped, SIGSTOP, once it
        has signed DIR/gen.lock), another into that directory is refused
        at once, exit 75, naming the lock and the pid, as a second
        training with one --out is; a gen into another directory is not;
        the first then writes its whole data set and the lock file goes
        with it."""
        gdir = os.path.join(self.tmp, "gen-lock")
        ref = os.path.join(self.tmp, "gen-lock-ref")
        lock = os.path.join(gdir, "gen.lock")
        gen = [TRAIN, "gen", "--items", 600, "--users", 300, "--interactions", 6000,
               "--dim", 24]
        p = run(*gen, "--out", ref, "--seed", 6)
        self.assertEqual(p.returncode, 0, p.stderr)

        def signed(pid):  # the lock file names @pid
            return lock_signed(lock, pid)

        # its renames 300 ms apart: time enough to see it hold the lock
        env = dict(os.environ, SEMID_TEST_GEN_COMMIT_DELAY_MS="300")
        first = subprocess.Popen([str(a) for a in gen + ["--out", gdir, "--seed", 6]],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        try:
            deadline = time.time() + 60
            while not signed(first.pid):
                self.assertIsNone(first.poll(), "finished before it was seen holding the lock")
                self.assertLess(time.time(), deadline, "no lock taken")
                time.sleep(0.002)
            first.send_signal(signal.SIGSTOP)  # it keeps its lock
            p = run(*gen, "--out", gdir, "--seed", 7)
            self.assertEqual((p.returncode, p.stderr),
                             (75, "semid-train gen: --out %s: another semid-train (pid %d) is "
                              "running with this --out (it holds %s): let it finish, or stop "
                              "it, or give another --out\n" % (gdir, first.pid, lock)))
            other = os.path.join(self.tmp, "gen-lock-other")
            p = run(*gen, "--out", other, "--seed", 6)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(dir_files(other), dir_files(ref))
        finally:
            first.send_signal(signal.SIGCONT)
            _, err = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, err)
        self.assertEqual(dir_files(gdir), dir_files(ref))  # the lock file gone too

    # ---- end to end ----

    def _ensure_e2e_model(self, model):
        if os.path.exists(model):
            return
        p = run(*self.base_args(model) + ["--test", self.d("test.tsv"), "--test-cold",
                                          self.d("cold_test.tsv"), "--model-version", "e2e-1",
                                          "--input-norm", "l2"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.__class__.e2e_stdout = p.stdout
        self.__class__.e2e_stderr = p.stderr

    def test_end_to_end(self):
        model = os.path.join(self.tmp, "e2e.st")
        self._ensure_e2e_model(model)
        p = run(SEMID, "inspect", model)
        self.assertEqual(p.returncode, 0, p.stderr)
        info = json.loads(p.stdout)
        self.assertEqual(info["version"], "e2e-1")
        for tower in ("item", "user"):
            tw = info["towers"][tower]
            self.assertEqual(tw["input_dim"], 24)
            self.assertEqual(tw["latent_dim"], 8)
            self.assertEqual(tw["codebook_sizes"], [16, 16])
            self.assertEqual(tw["input_norm"], "l2")
        t, meta = load_tensors(model)
        semid = json.loads(meta["semid"])
        self.assertEqual(semid["format_version"], 1)
        for key in ("config", "data", "final_losses", "eval", "created_at"):
            self.assertIn(key, semid)
        self.assertEqual(semid["data"]["train"], self.gen_summary["train"])
        # the evaluation (hours at the 1M scale) is announced before it runs
        err = getattr(self, "e2e_stderr", None)
        if err is not None:
            self.assertRegex(err, r"\nevaluating: %d test and %d cold-test interactions, 300 "
                             r"users against 600 items\nevaluation: " %
                             (semid["data"]["test"], semid["data"]["test_cold"]))
        ev = semid["eval"]
        for tower, npy in (("item", "items.npy"), ("user", "users.npy")):
            x = np.load(self.d(npy))
            out = os.path.join(self.tmp, f"codes_{tower}.npy")
            p = run(SEMID, "encode", "--model", model, "--tower", tower, "--input",
                    self.d(npy), "--output", out)
            self.assertEqual(p.returncode, 0, p.stderr)
            codes = np.load(out)
            self.assertEqual(codes.shape, (x.shape[0], 2))
            # an independent float64 encoder agrees except at genuine near-ties
            ref, gaps = ref_encode(t, semid, tower, x)
            diff = np.any(codes != ref, axis=1)
            for row in np.nonzero(diff)[0]:
                lvl = int(np.argmax(codes[row] != ref[row]))
                self.assertLess(gaps[row, lvl], 1e-4, f"{tower} row {row} level {lvl}")
            self.assertLessEqual(diff.sum(), max(1, x.shape[0] // 100))
            # the trainer's evaluation figures describe exactly these codes
            n = len(codes)
            uniq = len({tuple(r) for r in codes.tolist()})
            self.assertAlmostEqual(ev[tower]["collision_rate"], (n - uniq) / n, places=6)
            for lvl in range(2):
                counts = np.bincount(codes[:, lvl], minlength=16)
                pr = counts[counts > 0] / n
                self.assertAlmostEqual(ev[tower]["levels"][lvl]["utilization"],
                                       (counts > 0).sum() / 16, places=6)
                self.assertAlmostEqual(ev[tower]["levels"][lvl]["perplexity"],
                                       float(np.exp(-(pr * np.log(pr)).sum())), places=4)
        # the eval subcommand on the published file prints the same figures
        p = run(TRAIN, "eval", "--model", model, "--items", self.d("items.npy"), "--users",
                self.d("users.npy"), "--train", self.d("train.tsv"), "--test",
                self.d("test.tsv"), "--test-cold", self.d("cold_test.tsv"), "--cold-items",
                self.d("cold_items.txt"), env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        self.assertEqual(p.returncode, 0, p.stderr)
        again = json.loads(p.stdout)
        for fam in ("item_side", "cross_tower", "raw_item_side"):
            for split in ("warm", "cold"):
                for m in ("recall@10", "recall@50", "ndcg@10"):
                    self.assertAlmostEqual(again[fam][split][m], ev[fam][split][m], places=5)
        # item-side recall of the raw content from numpy: profile = mean of
        # the user's unit train-item vectors, warm items only, train excluded
        x = np.load(self.d("items.npy")).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        tr = np.loadtxt(self.d("train.tsv"), dtype=np.int64, ndmin=2)
        te = np.loadtxt(self.d("test.tsv"), dtype=np.int64, ndmin=2)
        cold = np.loadtxt(self.d("cold_items.txt"), dtype=np.int64)
        prof = np.zeros((300, x.shape[1]))
        cnt = np.zeros(300)
        np.add.at(prof, tr[:, 0], x[tr[:, 1]])
        np.add.at(cnt, tr[:, 0], 1)
        s = (prof / cnt[:, None]) @ x.T
        s[tr[:, 0], tr[:, 1]] = -np.inf
        s[:, cold] = -np.inf
        truth = {}
        for u, i in te.tolist():
            truth.setdefault(u, set()).add(i)
        rec = [len(set(np.argsort(-s[u], kind="stable")[:50].tolist()) & tv) / len(tv)
               for u, tv in truth.items()]
        # (float32 sgemm against float64 here may swap items tied at rank 50)
        self.assertAlmostEqual(ev["raw_item_side"]["warm"]["recall@50"], float(np.mean(rec)),
                               delta=0.005)
        self.assertEqual(ev["raw_item_side"]["warm"]["users"], len(truth))


    def test_eval_without_rankable_users_gives_null(self):
        """A warm test set whose users have no --train click gave item-side
        recall and NDCG 0.0 over 0 users: figures of a model that retrieves
        nothing.  They are null now ("users": 0), training's stdout, the
        model's metadata and `semid-train eval` alike, a line on stderr says
        why, and eval_table.py tabulates such runs."""
        edir = os.path.join(self.tmp, "eval_null")
        os.makedirs(edir, exist_ok=True)
        tr = np.loadtxt(self.d("train.tsv"), dtype=np.int64, ndmin=2)
        te = np.loadtxt(self.d("test.tsv"), dtype=np.int64, ndmin=2)
        train, test = os.path.join(edir, "train.tsv"), os.path.join(edir, "test.tsv")
        np.savetxt(train, tr[tr[:, 0] >= 10], fmt="%d", delimiter="\t")
        te = te[te[:, 0] < 10]
        np.savetxt(test, te, fmt="%d", delimiter="\t")
        users = len(set(te[:, 0].tolist()))
        self.assertGreater(users, 1)
        null = {"recall@10": None, "recall@50": None, "ndcg@10": None, "users": 0}
        note = ("evaluating: %s warm has no figures (null, \"users\": 0): the %d users of "
                "the %d --test lines have no --train click, and an item-side profile is the "
                "mean of a user's train items\n")
        out = os.path.join(edir, "m.st")
        p = run(*self.base_args(out, train=train) + ["--test", test])
        self.assertEqual(p.returncode, 0, p.stderr)
        _, meta = load_tensors(out)
        p2 = run(TRAIN, "eval", "--model", out, "--items", self.d("items.npy"), "--users",
                 self.d("users.npy"), "--train", train, "--cold-items",
                 self.d("cold_items.txt"), "--test", test)
        self.assertEqual(p2.returncode, 0, p2.stderr)
        for what, ev, err in (("train", json.loads(p.stdout), p.stderr),
                              ("metadata", json.loads(meta["semid"])["eval"], p.stderr),
                              ("eval", json.loads(p2.stdout), p2.stderr)):
            with self.subTest(what=what):
                for fam in ("item_side", "raw_item_side"):
                    self.assertEqual(ev[fam], {"warm": null})
                    self.assertIn(note % (fam, users, len(te)), err)
                # the users' own vectors rank them: figures, not null
                for fam in ("cross_tower", "raw_cross_tower"):
                    self.assertEqual(ev[fam]["warm"]["users"], users)
                    self.assertIsInstance(ev[fam]["warm"]["recall@50"], float)
                    self.assertNotIn("%s warm has no figures" % fam, err)
        # the table script: a null figure is "-", or left out of the mean
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "..", "trainer"))
        import eval_table
        figs = {"recall@10": 0.25, "recall@50": 0.5, "ndcg@10": 0.125, "users": 3}
        ev = json.loads(p2.stdout)
        for fam in ("item_side", "cross_tower", "raw_item_side", "raw_cross_tower"):
            ev[fam]["cold"] = figs  # as make eval's runs have
        ok = json.loads(json.dumps(ev))
        ok["item_side"]["warm"] = figs
        self.assertEqual(eval_table.fmt([None, 0.5]), "0.500 (1 of 2 runs)")
        self.assertEqual(eval_table.fmt([None, None]), "-")
        table = eval_table.table({("3x64", "das"): [ev, ok]}, ev)
        row = [r for r in table.splitlines() if r.startswith("| 3x64 | das |")][0].split(" | ")
        self.assertEqual(row[3], "0.500 (1 of 2 runs)")  # item R@50 warm
        raw_row = table.splitlines()[-1].split(" | ")
        self.assertEqual(raw_row[3], "-")
        goals = eval_table.goals({("3x64", "das"): [ev], ("3x64", "rqvae"): [ev]}, ev,
                                 "t", "3x64")
        self.assertIn("| das item R@50 warm >= 1.8x rqvae, cold above | not run |", goals)

if __name__ == "__main__":
    unittest.main(verbosity=2)
