#!/usr/bin/python3
"""`semid-train profile`: user content embeddings from item embeddings and
clicks, for data that has no users.npy.  Expectations are computed here with
numpy from the files themselves: row u is the L2-normalised sum (so mean) of
the item rows of u's lines in train.tsv, a repeated line counting again,
zeros for a user with no line; the row count is the largest user index + 1
or --n-users.  (tests/eval/smoke_lastfm.py checks that it reproduces
lastfm-2k's own users.npy, made by that recipe.)

Also: every malformed input gives exit status 2 and a message naming it, an
earlier output survives any failure byte for byte, --out may not name an
input, and a model trained on the profiles works end to end.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/trainer/test_profile.py
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import numpy as np

BIN = os.environ.get("SEMID_BIN", "bin")
TRAIN = os.path.join(BIN, "semid-train")


def run(*args):
    return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def expected(items, lines, n_users=None):
    """The profile computed independently, in float64."""
    pairs = [tuple(int(f) for f in ln.split("\t")[:2]) for ln in lines]
    n = n_users if n_users is not None else max(u for u, _ in pairs) + 1
    s = np.zeros((n, items.shape[1]))
    for u, i in pairs:
        s[u] += items[i]
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    return np.where(norm > 0, s / np.where(norm > 0, norm, 1), 0.0)


class TestProfile(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix="semid-profile-")
        self.rng = np.random.default_rng(7)
        self.items = self.rng.normal(size=(40, 12)).astype(np.float32)
        self.items_path = self.path("items.npy")
        np.save(self.items_path, self.items)

    def tearDown(self):
        shutil.rmtree(self.d, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.d, name)

    def write_train(self, lines, name="train.tsv"):
        p = self.path(name)
        with open(p, "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
        return p

    def profile(self, train, out, *extra):
        return run(TRAIN, "profile", "--items", self.items_path, "--train", train,
                   "--out", out, *extra)

    def test_matches_numpy(self):
        # users 0..5 with 1..8 clicks each, one repeated line, user 3 with
        # none, a third column (ignored, as training ignores it)
        lines = []
        for u in (0, 1, 2, 4, 5):
            for i in self.rng.choice(40, size=u + 1 + (u % 3), replace=False):
                lines.append("%d\t%d" % (u, i))
        lines.append(lines[0])  # a repeated click counts again
        lines.append("5\t7\t1.0")
        self.rng.shuffle(lines)
        train = self.write_train(lines)
        out = self.path("users.npy")
        p = self.profile(train, out)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = np.load(out)
        self.assertEqual(got.dtype, np.float32)
        self.assertEqual(got.shape, (6, 12))
        np.testing.assert_allclose(got, expected(self.items, lines), atol=1e-6)
        self.assertTrue(np.all(got[3] == 0))
        np.testing.assert_allclose(np.linalg.norm(got[[0, 1, 2, 4, 5]], axis=1), 1, atol=1e-6)
        summary = json.loads(p.stdout)
        self.assertEqual(summary, {"out": out, "users": 6, "dim": 12,
                                   "interactions": len(lines), "empty_users": 1,
                                   "zero_sum_users": 0})
        self.assertIn("1 of 6 users has no click in %s: its row is zeros" % train, p.stderr)

    def test_n_users_pads_and_bounds(self):
        lines = ["0\t1", "0\t2", "2\t3"]
        train = self.write_train(lines)
        out = self.path("users.npy")
        p = self.profile(train, out, "--n-users", "5")
        self.assertEqual(p.returncode, 0, p.stderr)
        got = np.load(out)
        self.assertEqual(got.shape, (5, 12))
        np.testing.assert_allclose(got, expected(self.items, lines, 5), atol=1e-6)
        self.assertIn("3 of 5 users", p.stderr)
        # a user beyond --n-users is named with its line, as training names it
        p = self.profile(train, self.path("u2.npy"), "--n-users", "2")
        self.assertEqual(p.returncode, 2)
        self.assertIn("%s:3: user 2 out of range (2 users)" % train, p.stderr)
        self.assertFalse(os.path.exists(self.path("u2.npy")))
        # an explicit 0 is refused, not taken as "not given" (which wrote
        # all 3 rows with exit 0)
        p = self.profile(train, self.path("u0.npy"), "--n-users", "0")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--n-users", p.stderr)
        self.assertIn("[1, 67108864]", p.stderr)
        self.assertFalse(os.path.exists(self.path("u0.npy")))

    def test_too_many_users_refused_before_allocating(self):
        """--n-users 2147483647, or a user index that large in the train
        file (an id, not a row number), made profile allocate 16 bytes of
        index a user, 32 GiB, before writing a row.  Refused with exit 2,
        the value and where it came from named, nothing written.  The
        address space is capped at 2 GiB so that a regression fails here
        with "out of memory" (exit 1) instead of taking the machine's
        memory (not in a sanitizer build: ASan reserves terabytes of address
        space for its shadow memory at start)."""
        with open(TRAIN, "rb") as f:
            asan = b"__asan_init" in f.read()

        def capped(*args):
            def limit():
                resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
            return subprocess.run([str(a) for a in args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=120,
                                  preexec_fn=None if asan else limit)

        train = self.write_train(["0\t1", "1\t2"])
        out = self.path("users.npy")
        for n in ("2147483647", "67108865", "99999999999"):
            p = capped(TRAIN, "profile", "--items", self.items_path, "--train", train,
                       "--out", out, "--n-users", n)
            self.assertEqual(p.returncode, 2, (n, p.stderr))
            self.assertIn("--n-users %s: not in [1, 67108864], the users profile writes" % n,
                          p.stderr)
            self.assertEqual(p.stdout, "")
        # the first index past the bound too (the largest taken, 67108863,
        # is not run here: a 1 GiB index, a 3 GiB file)
        for u in ("2147483647", "67108864"):
            big = self.write_train(["0\t1", "%s\t2" % u, "1\t3"], "big.tsv")
            p = capped(TRAIN, "profile", "--items", self.items_path, "--train", big,
                       "--out", out)
            self.assertEqual(p.returncode, 2, (u, p.stderr))
            self.assertIn("%s:2: user %s: above 67108863, the largest user index profile "
                          "takes (%d rows would take " % (big, u, int(u) + 1), p.stderr)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            # within --n-users the line is named as before
            p = capped(TRAIN, "profile", "--items", self.items_path, "--train", big,
                       "--out", out, "--n-users", "2")
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("%s:2: user %s out of range (2 users)" % (big, u), p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_clicks_summing_to_zero_are_clicks(self):
        """A click is a line of --train (README, proto/das.md): a user whose
        clicked items' rows cancel out has clicks, and was counted and
        reported as having none.  Both get zero rows; each is counted and
        said as what it is."""
        self.items[1] = -self.items[0]  # items 0 and 1 sum to zero
        np.save(self.items_path, self.items)
        lines = ["0\t0", "0\t1", "2\t5", "3\t0", "3\t1", "3\t0", "3\t1"]  # no user 1
        train = self.write_train(lines)
        out = self.path("users.npy")
        p = self.profile(train, out)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = np.load(out)
        np.testing.assert_allclose(got, expected(self.items, lines), atol=1e-6)
        for u in (0, 1, 3):
            self.assertTrue(np.all(got[u] == 0), u)
        summary = json.loads(p.stdout)
        self.assertEqual(summary["users"], 4)
        self.assertEqual(summary["empty_users"], 1)  # user 1: no line
        self.assertEqual(summary["zero_sum_users"], 2)  # users 0 and 3
        self.assertEqual(p.stderr.splitlines(), [
            "semid-train profile: 1 of 4 users has no click in %s: its row is zeros"
            % train,
            "semid-train profile: 2 of 4 users have clicks in %s whose item rows sum to "
            "zero: their rows are zeros" % train])

    def test_out_directory_checked_first(self):
        """--out in a missing directory failed only once the profiles were
        computed, exit 1, naming a temp file; it is refused first, exit 2,
        as training refuses it (before even a malformed --train is read)."""
        missing = self.path("missing")
        out = os.path.join(missing, "users.npy")
        for train in (self.write_train(["0\t1"]), self.write_train(["0 1"], "bad.tsv")):
            p = self.profile(train, out)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(p.stderr, "semid-train profile: --out %s: directory %s: No such "
                             "file or directory\n" % (out, missing))
        self.assertFalse(os.path.exists(missing))
        # the same words as training's
        p = run(TRAIN, "--items", self.items_path, "--users", self.items_path, "--train",
                train, "--out", out)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--out %s: directory %s: No such file or directory" % (out, missing),
                      p.stderr)

    def test_existing_file_of_another_kind_refused(self):
        """--out naming an existing file that is not a .npy (a typo's
        notes.txt, the TSV) replaced it without a word; it is refused, exit
        2, the file untouched.  An earlier profile or an empty file is
        replaced."""
        train = self.write_train(["0\t1", "1\t2"])
        notes = self.path("notes.txt")
        with open(notes, "w") as f:
            f.write("keep me\n")
        for out in (notes, self.write_train(["5\t6"], "other.tsv")):
            with open(out, "rb") as f:
                before = f.read()
            p = self.profile(train, out)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(p.stderr, "semid-train profile: --out %s: an existing file that "
                             "is not a .npy array: profile would replace it; remove it or "
                             "name another file\n" % out)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), before)
        for name in ("users.npy", "empty.npy"):
            out = self.path(name)
            if name == "users.npy":
                np.save(out, np.zeros((3, 2), np.float32))
            else:
                open(out, "w").close()
            p = self.profile(train, out)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(np.load(out).shape, (2, 12))

    def test_float64_items(self):
        lines = ["0\t1", "1\t2", "1\t39"]
        np.save(self.items_path, self.items.astype(np.float64))
        out = self.path("users.npy")
        p = self.profile(self.write_train(lines), out)
        self.assertEqual(p.returncode, 0, p.stderr)
        np.testing.assert_allclose(np.load(out), expected(self.items, lines), atol=1e-6)

    def test_float16_items(self):
        # the trainer's reader widens halves exactly, as numpy does
        lines = ["0\t1", "1\t2", "1\t39"]
        h = self.items.astype(np.float16)
        np.save(self.items_path, h)
        out = self.path("users.npy")
        p = self.profile(self.write_train(lines), out)
        self.assertEqual(p.returncode, 0, p.stderr)
        np.testing.assert_allclose(np.load(out), expected(h.astype(np.float32), lines),
                                   atol=1e-6)

    def test_bad_input(self):
        good = self.write_train(["0\t1", "1\t2"])
        out = self.path("users.npy")
        old = np.full((2, 3), 7, dtype=np.float32)
        np.save(out, old)
        before = read(out, "rb")
        link = self.path("link.npy")  # to an unrelated file, left as it is
        other = self.path("other.npy")
        np.save(other, old)
        os.symlink(other, link)
        bad_items = self.path("bad_items.npy")
        nan = self.items.copy()
        nan[4, 5] = np.nan
        np.save(bad_items, nan)
        cases = [
            (["--items", self.items_path, "--train", good], "--items, --train and --out are "
             "required"),
            (["--items", self.items_path, "--train", good, "--out", out, "--bogus", "1"],
             "unknown option --bogus"),
            (["--items", self.items_path, "--train", good, "--out", out, "--n-users", "x"],
             "--n-users: \"x\" is not an integer"),
            (["--items", self.items_path, "--train", good, "--out"], "--out needs a value"),
            (["--items", self.items_path, "--train", self.write_train(["0\t1", "1 2"], "r.tsv"),
              "--out", out], "r.tsv:2: ragged line"),
            (["--items", self.items_path, "--train", self.write_train(["0\t40"], "o.tsv"),
              "--out", out], "o.tsv:1: item 40 out of range (40 items)"),
            (["--items", self.items_path, "--train", self.write_train([], "e.tsv"),
              "--out", out], "e.tsv: empty file"),
            (["--items", bad_items, "--train", good, "--out", out], "bad_items.npy"),
            (["--items", self.path("missing.npy"), "--train", good, "--out", out],
             "missing.npy"),
            (["--items", self.items_path, "--train", good, "--out", self.d],
             "exists and is not a regular file"),
            (["--items", self.items_path, "--train", good, "--out", link],
             "is a symbolic link: give the file it names"),
            (["--items", self.items_path, "--train", good, "--out", self.items_path],
             "is the input %s: it would be replaced" % self.items_path),
            (["--items", self.items_path, "--train", good, "--out", good],
             "is the input %s" % good),
        ]
        for args, msg in cases:
            p = run(TRAIN, "profile", *args)
            if os.environ.get("SHOW"):
                print(p.returncode, p.stderr.strip())
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(msg, p.stderr, args)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertTrue(p.stderr.startswith("semid-train profile: "), p.stderr)
            self.assertEqual(p.stdout, "")
        # nothing was lost: the earlier output, the inputs
        self.assertEqual(read(out, "rb"), before)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(read(other, "rb"), before)
        self.assertEqual(np.load(self.items_path).tobytes(), self.items.tobytes())
        self.assertEqual(read(good), "0\t1\n1\t2\n")
        self.assertEqual(sorted(f for f in os.listdir(self.d) if f.startswith(".")), [])

    def test_sigterm_writes_nothing(self):
        """SIGTERM (or SIGINT, SIGHUP) at any moment: exit 128 + the signal
        with nothing written and the earlier file as it was, or, if it came
        after the file was in place, exit 0 with the whole file (or, in the
        first milliseconds of the process or its last, the signal's default
        action, with the old file or the whole new one)."""
        n_items, n_users = 20000, 100000
        big = self.rng.normal(size=(n_items, 64)).astype(np.float32)
        np.save(self.items_path, big)
        users = self.rng.integers(0, n_users, size=600000)
        items = self.rng.integers(0, n_items, size=users.size)
        train = self.path("big.tsv")
        with open(train, "w") as f:
            f.write("".join("%d\t%d\n" % ui for ui in zip(users, items)))
        out = self.path("users.npy")
        old = np.zeros((1, 1), dtype=np.float32)
        np.save(out, old)
        before = read(out, "rb")
        t0 = time.monotonic()
        p = self.profile(train, out)
        full = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        want = read(out, "rb")
        stopped = 0
        # the signal at 10% to 90% of the run, the fastest run seen so far
        # (the first often takes three times as long as the next ones: CI
        # saw all but three end before their signal)
        fastest = full
        for k, sig in enumerate([signal.SIGTERM, signal.SIGINT, signal.SIGHUP] * 3):
            with open(out, "wb") as f:
                f.write(before)
            t1 = time.monotonic()
            proc = subprocess.Popen([TRAIN, "profile", "--items", self.items_path, "--train",
                                     train, "--out", out], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            at = t1 + fastest * (0.1 + 0.8 * k / 9)
            while proc.poll() is None and time.monotonic() < at:
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(sig)
            else:
                fastest = min(fastest, time.monotonic() - t1)
            so, se = proc.communicate(timeout=60)
            if proc.returncode == 0:  # it had finished: the whole file
                self.assertEqual(read(out, "rb"), want)
                continue
            if proc.returncode == -sig:
                # killed by the default action, before the handlers were set
                # (the old file) or after they were put back, the file in
                # place (the new one; under ASan the exit takes long): never
                # anything between
                self.assertIn(read(out, "rb"), (before, want))
                self.assertEqual([f for f in os.listdir(self.d) if f.startswith(".")], [])
                continue
            stopped += 1
            self.assertEqual(proc.returncode, 128 + sig, se)
            self.assertIn("semid-train profile: stopped by %s; nothing written (%s is as it "
                          "was)" % (signal.Signals(sig).name, out), se)
            self.assertEqual(so, "")
            self.assertEqual(read(out, "rb"), before)
            self.assertEqual([f for f in os.listdir(self.d) if f.startswith(".")], [])
        self.assertGreater(stopped, 3, "the runs ended before the signals: %.2f s, then %.2f s"
                           % (full, fastest))

    def test_help_names_it(self):
        p = run(TRAIN, "profile", "--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("semid-train profile --items ITEMS.npy --train TRAIN.tsv --out "
                      "USERS.npy", p.stdout)

    def test_trains_end_to_end(self):
        """The data a team without users.npy has: gen's items and clicks;
        the profiles stand in for its users.npy and training accepts them."""
        data = self.path("gen")
        p = run(TRAIN, "gen", "--out", data, "--items", "200", "--users", "60",
                "--interactions", "1500", "--dim", "16")
        self.assertEqual(p.returncode, 0, p.stderr)
        users = self.path("profiles.npy")
        p = run(TRAIN, "profile", "--items", os.path.join(data, "items.npy"), "--train",
                os.path.join(data, "train.tsv"), "--out", users)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(np.load(users).shape, (60, 16))  # every gen user has a train click
        model = self.path("model.safetensors")
        p = run(TRAIN, "--items", os.path.join(data, "items.npy"), "--users", users,
                "--train", os.path.join(data, "train.tsv"), "--out", model, "--epochs", "1",
                "--batch-size", "128", "--hidden", "16", "--latent-dim", "8",
                "--codebook-size", "8", "--levels", "2", "--threads", "1", "--no-progress",
                "--kmeans-iters", "3")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.getsize(model) > 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
