#!/usr/bin/python3
"""`semid registry` read commands beside a live semid-server on one SQLite
store, as real processes at once (proto/registry.md, "Read-only stores").

A store of 100 000 imported entries; then, in a loop, `semid registry
export`, `stats` and `get` run by the store's owner (root: a connection that
may write, and whose close, the last, removes the -wal and -shm) and by the
user nobody (who may not write the file: an ordinary read-only connection
while a writer's -wal and -shm are there, else the file alone, guarded),
while a server is started, assigns and reassigns a stream of ids one request
at a time, is killed with SIGKILL in the middle, is started again, goes on,
and stops.  Checked, against expectations computed here from the suffix rule
(a new id takes the smallest suffix free under its codes; a reassigned id
moves to the smallest free under its new codes, its old slot freed):
- every answer the server gave, and the store at the end, is the rule's;
  every acknowledged assignment survives the SIGKILL and the readers' closes;
- every export that succeeded is one state of the store, whole: the state
  after some request, no earlier than the last acknowledged when the export
  began (no entry missing or doubled, no reassign half-applied, the imported
  entries all there); every stats count and every get the same;
- a read that failed says why in one of the words a reader may meet (a
  writer changed the file under nobody's lock-free read; a -wal of commits
  with no -shm beside it while a writer closes), and the owner's never fail;
- the directory is left as a clean close leaves it: the store alone.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/cli/test_registry_stress.py
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import semid_testlib as T  # noqa: E402

BULK = 100000
OPS = 360  # requests of the stream, each one transaction
# what a failed read by nobody may say, and nothing else: a writer changed
# the file under its lock-free read; a -wal of commits and no -shm (a
# writer's close removes the -shm first).  Not that the -shm was truncated:
# a reader that may not write it reads the -wal itself, unattached, and the
# next writer, the first to attach, truncates and rebuilds it; that is no
# loss (tests/core/check_registry.c, t_sqlite_shm_rebuilt_reader).
NOBODY_MAY = ("changed the file while it was read", "holds commits and no")


def sid_of(codes, suffix):
    return "-".join(str(int(c)) for c in codes) + "-%d" % suffix


class Book:
    """The store by the suffix rule: id -> (codes, suffix); codes -> suffixes."""

    def __init__(self):
        self.at, self.used = {}, {}

    def put(self, i, codes, reassign):
        if i in self.at and (not reassign or self.at[i][0] == codes):
            return
        if i in self.at:
            self.used[self.at[i][0]].discard(self.at[i][1])
        used = self.used.setdefault(codes, set())
        s = 0
        while s in used:
            s += 1
        used.add(s)
        self.at[i] = (codes, s)

    def sids(self):
        return {i: sid_of(c, s) for i, (c, s) in self.at.items()}


class RegistryStressTest(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (reads as user nobody too)")
        self.work = tempfile.mkdtemp(prefix="semid-ro-stress-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o755)
        self.dir = os.path.join(self.work, "store")  # the store alone
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)  # nobody may make files there, not write the store
        self.db = os.path.join(self.dir, "reg.db")
        rng = np.random.default_rng(7)
        tower = T.tie_free_tower(rng)
        self.model = os.path.join(self.work, "model.safetensors")
        T.write_model(self.model, {"item": tower}, "S")
        X, codes = T.tie_free_inputs(rng, tower, 64)
        two = [0] + [k for k in range(1, 64) if tuple(codes[k]) != tuple(codes[0])][:1]
        self.x = {tuple(int(c) for c in codes[k]): X[k] for k in two}
        self.tuples = list(self.x)

    def bulk(self):
        """BULK entries under codes the stream never uses: -> {id: sid}."""
        out, lines = {}, ["kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\tembedding_b64"]
        spare = [(a, b, c) for c in range(5) for b in range(8) for a in range(16)
                 if (a, b, c) not in self.tuples]
        for k in range(BULK):
            i, sid = "b%06d" % k, sid_of(spare[k % len(spare)], k // len(spare))
            out[i] = sid
            lines.append("item\t%s\t%s\tbulk\t2026-01-01T00:00:00.000Z\t"
                         "2026-01-01T00:00:00.000Z\t" % (i, sid))
        path = os.path.join(self.work, "bulk.tsv")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = subprocess.run([T.SEMID, "registry", "import", path, "--db", self.db],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        os.chmod(self.db, 0o644)
        return out

    def stream(self):
        """The requests: op k assigns the new id n<k> (codes alternating
        between two tuples), and every third op reassigns an earlier id to
        the other tuple in the same request.  -> (ops, states), states[j]
        the stream's ids after the first j ops."""
        book, ops, states = Book(), [], [{}]
        for k in range(OPS):
            new = ("n%04d" % k, self.tuples[k % 2])
            req = [new]
            if k % 3 == 2:
                old = "n%04d" % (k // 2)
                now = book.at[old][0]
                req.append((old, self.tuples[1 - self.tuples.index(now)]))
            for i, c in req:
                book.put(i, c, True)
            ops.append(req)
            states.append(book.sids())
        return ops, states

    def body(self, req):
        return json.dumps({"reassign": True, "inputs": [
            {"id": i, "embedding_b64": T.b64_row(self.x[c])} for i, c in req]}).encode()

    def send(self, srv, req, conn):
        st, _, res = srv.json("POST", "/v1/items:assign", self.body(req),
                              {"Content-Type": "application/json"}, conn=conn)
        self.assertEqual(st, 200, res)
        return {r["id"]: r["sid"] for r in res["results"]}

    def test_reads_beside_a_writer_killed_and_restarted(self):
        bulk = self.bulk()
        ops, states = self.stream()
        acked = [0]  # ops acknowledged
        reads, stop = [], threading.Event()
        nobody = T.as_nobody(T.SEMID)

        def reader(who):
            prog, kw = (nobody["program"], {"user": "nobody"}) if who == "nobody" else (
                T.SEMID, {})
            n = 0
            while not stop.is_set():
                cmd = ("export", "stats", "get")[n % 3]
                args = [cmd]
                if cmd == "get":
                    if acked[0] == 0:
                        n += 1
                        continue
                    args.append("n%04d" % ((n * 7919) % acked[0]))
                before = acked[0]
                p = subprocess.run([prog, "registry"] + args + ["--db", self.db],
                                   capture_output=True, text=True, timeout=120, **kw)
                reads.append((who, args, before, acked[0], p.returncode, p.stdout, p.stderr))
                n += 1

        threads = [threading.Thread(target=reader, args=(w,)) for w in ("root", "nobody")]
        for t in threads:
            t.start()
        srv = None
        try:
            time.sleep(0.5)  # reads of the store alone, before any writer
            srv = T.Server(["--model", self.model, "--registry", self.db], self.work)
            conn = srv.conn()
            killed_at = OPS // 3
            for k in range(killed_at):
                self.assertEqual(self.send(srv, ops[k], conn), {
                    i: states[k + 1][i] for i, _ in ops[k]}, k)
                acked[0] = k + 1
            # one more in flight as the server dies, committed or not: sent
            # again to the next server (the same request: the same answer)
            conn.request("POST", "/v1/items:assign", body=self.body(ops[killed_at]),
                         headers={"Content-Type": "application/json"})
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(10)
            srv.log.close()
            conn.close()
            time.sleep(0.5)  # reads beside a dead writer's -wal and -shm
            srv = T.Server(["--model", self.model, "--registry", self.db], self.work)
            conn = srv.conn()
            for k in range(killed_at, OPS):
                self.assertEqual(self.send(srv, ops[k], conn), {
                    i: states[k + 1][i] for i, _ in ops[k]}, k)
                acked[0] = k + 1
            conn.close()
            time.sleep(0.3)
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
            srv = None
            time.sleep(0.5)  # reads after the writer's clean close
        finally:
            stop.set()
            for t in threads:
                t.join(180)
            if srv:
                srv.kill()
        self.check_reads(reads, bulk, states)
        p = subprocess.run([T.SEMID, "registry", "export", "--db", self.db],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.snapshot(p.stdout, bulk, states), OPS)
        # the store, and the server's -wal and -shm if a read held them as
        # it closed (it then leaves them to the next writer), never a file
        # of nobody's
        left = {n: os.stat(os.path.join(self.dir, n)).st_uid for n in os.listdir(self.dir)}
        self.assertLessEqual(set(left), {"reg.db", "reg.db-wal", "reg.db-shm"}, left)
        self.assertEqual(set(left.values()), {0}, left)

    def test_no_reader_file_beside_a_writer_closing(self):
        """A read by another user (nobody) beside a writer that keeps opening
        and closing the store (the store's owner, daemon): the writer's
        -wal and -shm, seen there as the read opened, could be gone by its
        first read (the writer's close removes them), and SQLite then made
        them anew for the reader, owned by nobody: the owner's writer could
        not write them, and failed from then on ("the file is read-only")
        until they were deleted by hand."""
        bulk_path = os.path.join(self.work, "few.tsv")
        with open(bulk_path, "w") as f:
            f.write("kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\tembedding_b64\n")
            f.write("item\tb1\t1-2-3-0\tbulk\t2026-01-01T00:00:00.000Z\t"
                    "2026-01-01T00:00:00.000Z\t\n")
        p = subprocess.run([T.SEMID, "registry", "import", bulk_path, "--db", self.db],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        os.chown(self.db, 1, 1)  # daemon's
        prog = T.as_nobody(T.SEMID)["program"]
        runs, stop = {"daemon": [], "nobody": []}, threading.Event()

        def loop(user, args):
            while not stop.is_set():
                p = subprocess.run([prog, "registry"] + args + ["--db", self.db], user=user,
                                   capture_output=True, text=True, timeout=60)
                runs[user].append((p.returncode, p.stderr))

        threads = [threading.Thread(target=loop, args=a) for a in (
            ("daemon", ["delete", "none"]), ("nobody", ["get", "b1"]))]
        for t in threads:
            t.start()
        # 6 s, or as long as a loaded machine (ASan) needs for enough
        # runs of each to mean anything (the assertion at the end)
        t0 = time.monotonic()
        while (time.monotonic() - t0 < 6 or min(map(len, runs.values())) <= 20) \
                and time.monotonic() - t0 < 180:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(120)
        left = {n: os.stat(os.path.join(self.dir, n)).st_uid for n in os.listdir(self.dir)}
        self.assertNotIn(65534, left.values(), left)
        for rc, err in runs["daemon"]:  # (delete says the id is not stored: exit 1)
            self.assertIn("1 not found", err)
        for rc, err in runs["nobody"]:
            self.assertTrue(rc == 0 or any(m in err for m in NOBODY_MAY), err)
        self.assertGreater(min(len(runs["daemon"]), len(runs["nobody"])), 10, runs)

    def snapshot(self, text, bulk, states):
        """The state an export is: the number of ops it holds, all of them
        and nothing else (else a failed assertion)."""
        lines = text.splitlines()
        self.assertEqual(lines[0].split("\t")[:3], ["kind", "id", "sid"])
        got = {}
        for ln in lines[1:]:
            f = ln.split("\t")
            self.assertNotIn(f[1], got, "an id twice")
            got[f[1]] = f[2]
        self.assertEqual(len(set(got.values())), len(got), "a sid twice")
        self.assertEqual({i: s for i, s in got.items() if i[0] == "b"}, bulk)
        mine = {i: s for i, s in got.items() if i[0] == "n"}
        j = max((int(i[1:]) + 1 for i in mine), default=0)
        self.assertEqual(mine, states[j], "not the state after op %d" % j)
        return j

    def check_reads(self, reads, bulk, states):
        told = {}
        for who, args, before, after, rc, out, err in reads:
            what = (who, args, before, after, err[-500:])
            told[who, args[0], rc == 0] = told.get((who, args[0], rc == 0), 0) + 1
            if rc:
                self.assertEqual(who, "nobody", what)
                self.assertTrue(any(m in err for m in NOBODY_MAY), what)
                continue
            # the state read: no earlier than the last acknowledged before
            # the read began, no later than one in flight after it ended
            if args[0] == "export":
                j = self.snapshot(out, bulk, states)
                self.assertTrue(before <= j <= after + 1, what + (j,))
            elif args[0] == "stats":
                n = int(out.split('"items": ')[1].split(",")[0])
                self.assertTrue(BULK + before <= n <= BULK + after + 1, what + (n,))
            else:
                sid = out.split('"sid": "')[1].split('"')[0]
                self.assertIn(sid, {states[j][args[1]] for j in range(before, min(after + 2, len(states)))
                                    if args[1] in states[j]}, what)
        # each kind of read was made, and by both, and mostly answered
        for who in ("root", "nobody"):
            for cmd in ("export", "stats", "get"):
                self.assertGreater(told.get((who, cmd, True), 0), 0, (who, cmd, told))
        sys.stderr.write("reads (who, command, answered): %s\n" % sorted(told.items()))


if __name__ == "__main__":
    unittest.main()
