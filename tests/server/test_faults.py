#!/usr/bin/python3
"""Storage faults under a running semid-server (issue 6): a full disk and a
read-only directory while `semid-train` publishes a model the server
watches, and while the server writes its SQLite ID registry.

The faults are real where the kernel lets us: a 1 MiB tmpfs (as root) that a
filler file fills to ENOSPC, remounted read-only for EROFS.  Where mounting
is not permitted (an unprivileged container), the same failure paths are
driven another way and the test says which in its output: RLIMIT_FSIZE with
SIGXFSZ ignored (writes fail with EFBIG) for a full disk, an unprivileged
user (EACCES) or a 1-byte RLIMIT_FSIZE for a read-only directory.
SEMID_FAULT_NO_MOUNT=1 forces that fallback (to test the test).

Expectations: the trainer fails with exit status 1 and a message naming the
file, the published file is byte-for-byte the previous one and no temp file
is left; the watching server answers every request from the old model; the
registry answers 503 with the store's reason for new ids while encode and
lookups of known ids answer 200, and once the fault is gone new ids are
assigned again and every acknowledged assignment is unchanged and unique,
also after a restart.  Loopback only; every wait is bounded.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_faults.py
"""
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

TRAIN = os.path.join(T.BIN, "semid-train")
SMALL = ["--levels", "2", "--codebook-size", "8", "--latent-dim", "8", "--hidden", "16",
         "--progress", "false", "--threads", "1"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ignore_xfsz(fsize=None):
    """preexec_fn: SIGXFSZ ignored (a write past RLIMIT_FSIZE then fails
    with EFBIG instead of killing the process), and optionally the limit."""
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    return pre


class SmallFs:
    """A directory on its own 1 MiB tmpfs, or a plain directory when
    mounting is not permitted (self.mounted False: callers simulate)."""

    def __init__(self, parent):
        self.dir = tempfile.mkdtemp(dir=parent)
        os.chmod(self.dir, 0o755)
        self.mounted = False
        self.filler = os.path.join(self.dir, "filler")
        if os.environ.get("SEMID_FAULT_NO_MOUNT") != "1":
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs",
                                self.dir], capture_output=True, text=True)
            self.mounted = r.returncode == 0
            if not self.mounted:
                sys.stderr.write("test_faults: cannot mount a tmpfs (%s); simulating faults "
                                 "with RLIMIT_FSIZE and an unprivileged user\n" %
                                 r.stderr.strip())

    def fill(self):
        """Fill the tmpfs to the last byte (ENOSPC from then on)."""
        assert self.mounted
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == 28, e
        os.close(fd)

    def unfill(self):
        os.unlink(self.filler)

    def remount(self, mode):
        subprocess.run(["mount", "-o", "remount," + mode, self.dir], check=True,
                       capture_output=True)

    def close(self):
        if self.mounted:
            if subprocess.run(["umount", self.dir], capture_output=True).returncode:
                subprocess.run(["umount", "-l", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def setUpModule():
    global WORK, DATA
    WORK = tempfile.mkdtemp(prefix="semid-faults-")
    os.chmod(WORK, 0o755)
    DATA = os.path.join(WORK, "data")
    subprocess.run([TRAIN, "gen", "--out", DATA, "--items", "300", "--users", "200",
                    "--interactions", "3000", "--dim", "16", "--seed", "3"], check=True,
                   timeout=60, stdout=subprocess.DEVNULL)
    for name in os.listdir(DATA):
        os.chmod(os.path.join(DATA, name), 0o644)
    os.chmod(DATA, 0o755)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def train(out, version, epochs=0, program=TRAIN, **popen):
    """semid-train on the generated data -> CompletedProcess (text)."""
    return subprocess.run([program, "--items", os.path.join(DATA, "items.npy"), "--users",
                           os.path.join(DATA, "users.npy"), "--train",
                           os.path.join(DATA, "train.tsv"), "--out", out, "--epochs",
                           str(epochs), "--model-version", version] + SMALL,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"), **popen)


class Encoder(threading.Thread):
    """Encodes random rows in a loop; every answer must be 200 from
    model_version @want."""

    def __init__(self, srv, want):
        super().__init__(daemon=True)
        self.srv, self.want = srv, want
        self.rng = np.random.default_rng(9)
        self.halt, self.ok, self.bad = threading.Event(), 0, []

    def run(self):
        conn = self.srv.conn()
        while not self.halt.is_set():
            x = self.rng.standard_normal((8, 16)).astype(np.float32)
            try:
                st, _, r = self.srv.json("POST", "/v1/items:encode", {
                    "inputs": [{"embedding_b64": T.b64_row(v)} for v in x]}, conn=conn)
                if st != 200 or r["model_version"] != self.want or len(r["results"]) != 8:
                    self.bad.append((st, r))
                else:
                    self.ok += 1
            except OSError as e:
                self.bad.append(repr(e))
                conn.close()
                conn = self.srv.conn()
            time.sleep(0.005)
        conn.close()

    def finish(self, test):
        self.halt.set()
        self.join(10)
        test.assertEqual(self.bad, [])
        test.assertGreater(self.ok, 5)


def wait_version(srv, want, secs=5.0 * T.SLOW):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        st, _, r = srv.json("GET", "/readyz")
        if st == 200 and r["model_version"] == want:
            return True
        time.sleep(0.05)
    return False


class TestPublishFaults(unittest.TestCase):
    def setUp(self):
        self.fs = SmallFs(WORK)
        self.model = os.path.join(self.fs.dir, "model.safetensors")
        r = train(self.model, "A")
        self.assertEqual(r.returncode, 0, r.stderr)
        os.chmod(self.model, 0o644)
        self.sha_a = sha256(self.model)
        self.srv = T.Server(["--model", self.model, "--registry", "none",
                             "--reload-debounce-ms", "20"], WORK)
        self.enc = Encoder(self.srv, "A")
        self.enc.start()

    def tearDown(self):
        self.enc.halt.set()
        rc = self.srv.stop()
        self.fs.close()
        self.assertEqual(rc, 0, self.srv.log_text()[-2000:])

    def check_untouched(self, r, reason, what="model.safetensors", early=False):
        self.assertEqual(r.returncode, 1, r.stderr)  # 1: a failure other than bad input
        path = self.model if what == "model.safetensors" else self.model + ".ckpt"
        msg = r.stderr.strip().splitlines()[-1]
        if early:
            # a directory it cannot write is refused before any training
            self.assertEqual(msg, "semid-train: --out %s: cannot write in %s: %s"
                             % (path, os.path.dirname(path), reason))
            self.assertNotIn("epoch 1/", r.stderr)
        else:
            # the last line: "semid-train: [checkpoint: ]PATH: create|write the
            # temporary file for it: REASON", the path named once (it used to be
            # repeated as a prefix), the temp file not by the name it never had;
            # for the first checkpoint, what is left to resume from
            self.assertRegex(msg, r"^semid-train: (checkpoint: )?%s: (create|write) the "
                                  r"temporary file for it: " % re.escape(path) +
                             re.escape(reason) +
                             ("; there is no checkpoint to --resume from" if what == "ckpt"
                              else "") + "$")
        self.assertEqual(sha256(self.model), self.sha_a)
        self.assertEqual([n for n in os.listdir(self.fs.dir) if ".tmp" in n], [])
        self.assertNotIn("published", r.stderr)

    def finish(self):
        """The server kept serving A throughout; a good publish still lands."""
        time.sleep(0.3)  # past the watcher's debounce of any event the failures made
        self.enc.finish(self)
        st, _, m = self.srv.json("GET", "/v1/model")
        self.assertEqual((st, m["version"], m["sha256"]), (200, "A", self.sha_a))
        r = train(self.model, "C")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(wait_version(self.srv, "C"), self.srv.log_text()[-2000:])

    def test_full_disk(self):
        if self.fs.mounted:
            self.fs.fill()
            reason, popen = "No space left on device", {}
        else:
            # the model is ~43 KB: a 4 KiB file-size limit refuses it
            reason, popen = "File too large", {"preexec_fn": ignore_xfsz(4096)}
        # the model itself (no epochs, so no checkpoint first)...
        self.check_untouched(train(self.model, "B", **popen), reason)
        # ...and the checkpoint written after an epoch
        r = train(self.model, "B", epochs=1, **popen)
        self.check_untouched(r, reason, "ckpt")
        self.assertIn("checkpoint", r.stderr)
        self.assertFalse(os.path.exists(self.model + ".ckpt"))
        if self.fs.mounted:
            self.fs.unfill()
        self.finish()

    def test_read_only_directory(self):
        if self.fs.mounted:
            self.fs.remount("ro")
            reason, popen = "Read-only file system", {}
        else:
            # root ignores modes: publish as nobody into root's 0755 directory
            reason, popen = "Permission denied", T.as_nobody(TRAIN)
        self.check_untouched(train(self.model, "B", **popen), reason, early=True)
        if self.fs.mounted:
            self.fs.remount("rw")
        self.finish()



def assign(srv, ids, X):
    return srv.json("POST", "/v1/items:assign",
                    {"inputs": [{"id": i, "embedding_b64": T.b64_row(x)} for i, x in zip(ids, X)]})


class TestRegistryFaults(unittest.TestCase):
    """The registry on the small filesystem; the model elsewhere."""

    def setUp(self):
        self.fs = SmallFs(WORK)
        self.rng = np.random.default_rng(17)
        self.tower = T.tie_free_tower(self.rng)
        self.model = os.path.join(WORK, "reg-model-%d.safetensors" % time.monotonic_ns())
        T.write_model(self.model, {"item": self.tower}, "R1")
        self.db = os.path.join(self.fs.dir, "reg.db")
        self.acked = {}  # id -> sid of every acknowledged assignment
        self.n = 0
        self.srv = self.start()

    def tearDown(self):
        rc = self.srv.stop() if self.srv.proc.poll() is None else 0
        self.fs.close()
        self.assertEqual(rc, 0, self.srv.log_text()[-2000:])

    def start(self):
        return T.Server(["--model", self.model, "--registry", self.db, "--reload-debounce-ms",
                         "20", "--admin-token", "t"], WORK, preexec_fn=ignore_xfsz())

    def new_batch(self, k):
        X, codes = T.tie_free_inputs(self.rng, self.tower, k)
        ids = ["it-%d" % (self.n + j) for j in range(k)]
        self.n += k
        return ids, X, codes

    def assign_new(self, k):
        """-> (status, body); records acknowledged assignments."""
        ids, X, codes = self.new_batch(k)
        st, _, r = assign(self.srv, ids, X)
        if st == 200:
            for res, i, c in zip(r["results"], ids, codes):
                self.assertEqual((res["id"], res["codes"], res["created"]), (i, c.tolist(), True))
                self.acked[i] = res["sid"]
        return st, r, (ids, X, codes)

    def check_degraded(self, reasons):
        """New ids 503 with the store's reason; encode 200; known ids answer
        200 with their ID, by lookup and by assign.  (On a read-only mount the
        writer cannot open the file at all; the lookup handle reads it as
        immutable, since no -shm can be made there.)"""
        st, r, (ids, X, codes) = self.assign_new(16)
        self.assertEqual(st, 503, r)
        self.assertEqual(r["error"]["code"], "unavailable")
        msg = r["error"]["message"]
        self.assertTrue(any(x in msg for x in reasons), msg)
        self.assertIn(self.db, msg)
        st, _, e = self.srv.json("POST", "/v1/items:encode",
                                 {"inputs": [{"embedding_b64": T.b64_row(v)} for v in X]})
        self.assertEqual((st, [q["codes"] for q in e["results"]]), (200, codes.tolist()))
        known = sorted(self.acked)[:5]
        for i in known:
            st, _, g = self.srv.json("GET", "/v1/items/%s" % i)
            self.assertEqual((st, g.get("sid")), (200, self.acked[i]), g)
        # assigning known ids again reads, it does not write: same IDs
        st, _, r = assign(self.srv, known, X[:len(known)])
        self.assertEqual(st, 200, r)
        self.assertEqual([(q["id"], q["sid"], q["created"]) for q in r["results"]],
                         [(i, self.acked[i], False) for i in known])
        return ids, X

    def check_model_registry(self, status, reasons):
        """GET /v1/model's registry: @status, and an error holding one of
        @reasons (None: no error)."""
        st, _, m = self.srv.json("GET", "/v1/model")
        self.assertEqual(st, 200, m)
        reg = m["registry"]
        self.assertEqual(reg["status"], status, reg)
        if reasons is None:
            self.assertIsNone(reg["error"], reg)
        else:
            self.assertTrue(any(x in reg["error"] for x in reasons), reg)

    def check_recovered(self, failed_ids, failed_X, secs=5.0):
        """New assigns succeed again (the store is retried); the ids that
        failed are now created; every acknowledged assignment is unchanged,
        and no two ids share an ID, also after a restart."""
        deadline = time.monotonic() + secs * T.SLOW
        while True:
            st, _, r = assign(self.srv, failed_ids, failed_X)
            if st == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(st, 200, r)
        for res in r["results"]:
            self.assertTrue(res["created"], res)  # nothing of the failed commit survived
            self.acked[res["id"]] = res["sid"]
        self.assertEqual(self.assign_new(8)[0], 200)
        for restart in (False, True):
            if restart:
                self.assertEqual(self.srv.stop(), 0)
                self.srv = self.start()
            got = {}
            for i in self.acked:
                st, _, g = self.srv.json("GET", "/v1/items/%s" % i)
                self.assertEqual(st, 200, (i, g))
                got[i] = g["sid"]
            self.assertEqual(got, self.acked)
            self.assertEqual(len(set(got.values())), len(got))

    def test_full_disk(self):
        for _ in range(3):
            self.assertEqual(self.assign_new(64)[0], 200)
        if self.fs.mounted:
            self.fs.fill()
            reasons = ("database or disk is full",)
        else:
            wal = os.path.getsize(self.db + "-wal")
            resource.prlimit(self.srv.proc.pid, resource.RLIMIT_FSIZE,
                             (wal, resource.RLIM_INFINITY))
            reasons = ("disk I/O error", "database or disk is full")
        # Until the store must grow a file, commits may still fit in place;
        # within a few batches one cannot.
        for _ in range(40):
            st, r, (ids, X, _) = self.assign_new(64)
            if st != 200:
                break
        self.assertEqual(st, 503, r)
        failed_ids, failed_X = self.check_degraded(reasons)
        failed_ids, failed_X = ids + failed_ids, np.vstack([X, failed_X])
        # What an operator's alert reads (SemidRegistryDown): the store is
        # down for writes.  The assigns of known ids check_degraded made go
        # through without writing: they set semid_registry_up back to 1,
        # so between two failed new ids the gauge said the store was up.
        m = self.srv.metrics()
        self.assertEqual(m["semid_registry_up"], 0)
        self.assertGreaterEqual(m['semid_registry_errors_total{op="assign"}'], 2)
        # GET /v1/model says what the gauge says, with the failure's reason:
        # it said "ok" after any lookup that went through (the store kept
        # one flag, the last call's)
        self.check_model_registry("unavailable", reasons)
        # a delete of an id not stored writes nothing either
        st, _, _ = self.srv.json("POST", "/v1/items:delete", {"ids": ["never-stored"]},
                                 headers={"Authorization": "Bearer t"})
        self.assertEqual((st, self.srv.metrics()["semid_registry_up"]), (200, 0))
        self.check_model_registry("unavailable", reasons)
        if self.fs.mounted:
            self.fs.unfill()
        else:
            resource.prlimit(self.srv.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        self.check_recovered(failed_ids, failed_X)
        self.assertEqual(self.srv.metrics()["semid_registry_up"], 1)
        self.check_model_registry("ok", None)

    def test_read_only(self):
        for _ in range(2):
            self.assertEqual(self.assign_new(32)[0], 200)
        if self.fs.mounted:
            # A filesystem with a database open for writing cannot be
            # remounted read-only (EBUSY), so the server meets it at start:
            # stopped, remounted, started again.
            self.assertEqual(self.srv.stop(), 0)
            self.fs.remount("ro")
            self.srv = self.start()
            reasons = ("the file is on a read-only file system",)
        else:
            resource.prlimit(self.srv.proc.pid, resource.RLIMIT_FSIZE,
                             (1, resource.RLIM_INFINITY))
            reasons = ("disk I/O error", "database or disk is full")
        failed_ids, failed_X = self.check_degraded(reasons)
        if self.fs.mounted:
            # the CLI's reading commands open read-only and work there too
            some = sorted(self.acked)[0]
            p = subprocess.run([T.SEMID, "registry", "get", some, "-d", self.db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertEqual((p.returncode, json.loads(p.stdout or "{}").get("sid")),
                             (0, self.acked[some]), p.stderr)
            p = subprocess.run([T.SEMID, "registry", "stats", "-d", self.db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertEqual((p.returncode, json.loads(p.stdout or "{}").get("items")),
                             (0, len(self.acked)), p.stderr)
            self.fs.remount("rw")
        else:
            resource.prlimit(self.srv.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        self.check_recovered(failed_ids, failed_X, secs=8.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
