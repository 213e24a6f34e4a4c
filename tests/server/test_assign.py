#!/usr/bin/python3
"""semid-server's ID registry routes (issue 5), against a real server on
127.0.0.1: POST /v1/{items,users}:assign, GET /v1/{items,users}/{id},
GET /v1/sids/{sid}, GET /v1/sids?prefix=.

Expectations are computed here, independently of the C code: the codes from
how the inputs were built (tie-free towers: each input sits next to one
codeword per level), and the suffixes from the rule of proto/registry.md
(a new id takes the smallest suffix its codes do not hold yet, in input
order).  Covered: idempotence, colliding codes, stability across a model
swap, reassign, lookups and prefix paging, bad input, a corrupt and a
read-only SQLite file (503 while encode answers 200), a store whose schema
a newer semid wrote (on either backend: refused at start, exit 2), the SQLite file
moved away under the server and back, several clients
assigning overlapping colliding ids at once, a store locked by another
process (assign waits and answers 503, encode and lookups are not held up),
SIGKILL in the middle of a
stream of assigns, a model of another number of levels than the stored IDs
(409 levels_mismatch, on SQLite and PostgreSQL), and on PostgreSQL two servers assigning at once, an
outage, the plan of the read of a call's ids, groups that keep their locks
shared, a full lock table, PostgreSQL restarted under a stream of
assigns, and a password that never shows (in the URI,
wrong, or from PGPASSWORD, a password file, a service file, the config file) (skipped with a message when not root or
PostgreSQL is absent).

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_assign.py
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_fixture  # noqa: E402
import semid_testlib as T  # noqa: E402

FAST = ["--reload-debounce-ms", "20", "--workers", "2"]
# the advisory lock key of a store's global lock (GLOBAL_KEY in core/registry_pg.c)
PG_GLOBAL_KEY = 7305853202
# the key of the lock the schema is created and migrated under (LOCK_KEY)
PG_MIGRATE_KEY = 7305853201


def body(ids, X, reassign=None):
    b = {"inputs": [{"id": i, "embedding_b64": T.b64_row(x)} for i, x in zip(ids, X)]}
    if reassign is not None:
        b["reassign"] = reassign
    return b


def pg_key(kind, tag, data):
    """The PostgreSQL advisory-lock key of an id (tag "i") or a code tuple
    (tag "c"): registry_pg.c's key_hash, 64-bit FNV-1a, as a signed bigint."""
    h = 1469598103934665603
    for b in bytes([kind, ord(tag)]) + data:
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    return h - (1 << 64) if h >= 1 << 63 else h


def assign(srv, ids, X, tower="items", reassign=None, conn=None):
    return srv.json("POST", "/v1/%s:assign" % tower, body(ids, X, reassign), conn=conn)


def release(proc):
    """End a psql session started with stdin and stdout pipes."""
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()


def assign_concurrently(servers, ids, X, rounds, per_request, timeout):
    """One client thread per entry of @servers (client k seeded with k), each
    assigning @rounds random samples of @per_request of @ids at once.  Returns
    ({id: set of sids answered}, [(status, body) of every non-200 answer])."""
    seen, errors, lock = {}, [], threading.Lock()

    def client(srv, seed):
        r = random.Random(seed)
        conn = srv.conn()
        try:
            for _ in range(rounds):
                pick = r.sample(range(len(ids)), per_request)
                st, _, res = assign(srv, [ids[k] for k in pick], X[pick], conn=conn)
                if st != 200:
                    errors.append((st, res))
                    continue
                with lock:
                    for x in res["results"]:
                        seen.setdefault(x["id"], set()).add(x["sid"])
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(srv, k)) for k, srv in enumerate(servers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return seen, errors


ENCODED = 'semid_encoded_total{tower="item"}'


def encoded_since(srv, base, n):
    """Item rows encoded since the count was @base, once @n are (or after 5 s)."""
    deadline = time.monotonic() + 5 * T.SLOW
    while srv.metrics()[ENCODED] < base + n and time.monotonic() < deadline:
        time.sleep(0.02)
    return srv.metrics()[ENCODED] - base


def sid_of(codes, suffix):
    return "-".join(str(int(c)) for c in codes) + "-%d" % suffix


class Book:
    """The expected registry: the suffix rule applied in order."""

    def __init__(self):
        self.by_id = {}    # id -> (codes tuple, suffix, version)
        self.used = {}     # codes -> set of suffixes

    def assign(self, i, codes, version, reassign=False):
        codes = tuple(int(c) for c in codes)
        if i in self.by_id and not reassign:
            return self.by_id[i], False
        if i in self.by_id:
            old = self.by_id[i]
            if old[0] == codes:
                self.by_id[i] = (codes, old[1], version)
                return self.by_id[i], False
            self.used[old[0]].discard(old[1])
        used = self.used.setdefault(codes, set())
        s = 0
        while s in used:
            s += 1
        used.add(s)
        created = i not in self.by_id
        self.by_id[i] = (codes, s, version)
        return self.by_id[i], created


def collide_tower(rng, D=8):
    """Two code tuples in all: (0|1, 0, 0) - every input collides."""
    return T.tie_free_tower(rng, D=D, ks=(2, 1, 1))


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="semid-assign-")
        os.chmod(cls.work, 0o755)
        cls.rng = np.random.default_rng(55)
        cls.ta = T.tie_free_tower(cls.rng)
        cls.tb = T.tie_free_tower(cls.rng)
        cls.tc = collide_tower(cls.rng)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def fresh_dir(self):
        d = tempfile.mkdtemp(dir=self.work)
        os.chmod(d, 0o755)
        return d

    def start(self, d, towers, version, extra=(), env=None, start_timeout=10.0):
        model = os.path.join(d, "model.safetensors")
        if not os.path.exists(model):
            T.write_model(model, towers, version)
        return T.Server(["--model", model] + FAST + list(extra), d, env=env,
                        start_timeout=start_timeout), model

    def check_results(self, res, ids, book, created):
        self.assertEqual([r["id"] for r in res["results"]], list(ids))
        for r, i, c in zip(res["results"], ids, created):
            codes, suffix, version = book.by_id[i]
            self.assertEqual(r["codes"], list(codes), i)
            self.assertEqual(r["suffix"], suffix, i)
            self.assertEqual(r["sid"], sid_of(codes, suffix), i)
            self.assertEqual(r["model_version"], version, i)
            self.assertEqual(r["created"], c, i)


class TestAssignSqlite(Base):
    def start_beside_store(self, version, extra, n):
        """A server on a fresh SQLite store, @n tie-free inputs with their
        codes, and a connection of our own to the store (to hold its write
        lock with)."""
        import sqlite3
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, version, extra)
        X, codes = T.tie_free_inputs(self.rng, self.ta, n)
        db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)
        return srv, X, codes, db

    def test_idempotent_and_lookups(self):
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta, "user": self.tb}, "A")
        try:
            X, codes = T.tie_free_inputs(self.rng, self.ta, 40)
            ids = ["sku-%d" % k for k in range(40)]
            book = Book()
            created = [book.assign(i, c, "A")[1] for i, c in zip(ids, codes)]
            st, _, res = assign(srv, ids, X)
            self.assertEqual(st, 200, res)
            self.assertEqual(res["model_version"], "A")
            self.check_results(res, ids, book, created)
            # the same request again: nothing new, the same IDs
            st, _, again = assign(srv, ids, X)
            self.assertEqual(st, 200)
            self.check_results(again, ids, book, [False] * 40)
            # ids and sids are unique
            self.assertEqual(len({r["sid"] for r in res["results"]}), 40)
            # lookups by id (URL-encoded) and by sid
            for i in ids[:10]:
                st, _, e = srv.json("GET", "/v1/items/" + urllib.parse.quote(i, safe=""))
                self.assertEqual(st, 200, e)
                c, s, _ = book.by_id[i]
                self.assertEqual((e["id"], e["sid"], e["kind"]), (i, sid_of(c, s), "item"))
                self.assertEqual(e["embedding_dim"], 16)
                st, _, e2 = srv.json("GET", "/v1/sids/" + sid_of(c, s))
                self.assertEqual((st, e2["id"]), (200, i))
            # an id with characters that need escaping, in the path
            odd = "a/b c?d%e\u00e9"
            st, _, r = assign(srv, [odd], X[:1])
            self.assertEqual(st, 200, r)
            st, _, e = srv.json("GET", "/v1/items/" + urllib.parse.quote(odd, safe=""))
            self.assertEqual((st, e["id"], e["sid"]), (200, odd, r["results"][0]["sid"]))
            # items and users are separate spaces; users have their own routes
            Xu, cu = T.tie_free_inputs(self.rng, self.tb, 3)
            st, _, ru = assign(srv, ids[:3], Xu, tower="users")
            self.assertEqual(st, 200, ru)
            ub = Book()
            self.check_results(ru, ids[:3], ub, [ub.assign(i, c, "A")[1]
                                                 for i, c in zip(ids[:3], cu)])
            st, _, e = srv.json("GET", "/v1/users/" + ids[0])
            self.assertEqual((st, e["kind"], e["sid"]), (200, "user", ru["results"][0]["sid"]))
            st, _, e = srv.json("GET", "/v1/sids/%s?tower=user" % ru["results"][0]["sid"])
            self.assertEqual((st, e["id"]), (200, ids[0]))
            # not found, and bad sids
            st, _, e = srv.json("GET", "/v1/items/no-such-id")
            self.assertEqual((st, e["error"]["code"]), (404, "not_found"))
            self.assertIn("no-such-id", e["error"]["message"])
            st, _, e = srv.json("GET", "/v1/sids/15-7-4-999")
            self.assertEqual(st, 404)
            for bad in ("12--7", "a-b", "1-02-3-0", "1-2", "1-2-3-4-5"):
                st, _, e = srv.json("GET", "/v1/sids/" + bad)
                self.assertEqual((st, e["error"]["code"]), (400, "invalid_argument"), bad)
            st, _, e = srv.json("GET", "/v1/items/a%00b")
            self.assertEqual(st, 400, e)
            st, _, e = srv.json("GET", "/v1/sids/1-2-3-0?tower=shop")
            self.assertEqual(st, 400)
            m = srv.metrics()
            self.assertEqual(m['semid_registry_assignments_total{tower="item",created="true"}'],
                             41)
            self.assertEqual(m['semid_registry_assignments_total{tower="item",created="false"}'],
                             40)
            self.assertEqual(m["semid_registry_up"], 1)
            self.assertGreaterEqual(m['semid_registry_duration_seconds_count{op="assign"}'], 3)
            st, _, info = srv.json("GET", "/v1/model")
            self.assertEqual(info["registry"]["backend"], "sqlite")
            self.assertEqual(info["registry"]["status"], "ok")
            self.assertEqual(info["registry"]["store"], os.path.join(d, "semid-registry.db"))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_collisions_swap_reassign(self):
        d = self.fresh_dir()
        srv, model = self.start(d, {"item": self.tc}, "C1")
        try:
            X, codes = T.tie_free_inputs(self.rng, self.tc, 30)
            ids = ["c%02d" % k for k in range(30)] + ["c03"]  # c03 again, in the same call
            X = np.vstack([X, X[3:4]])
            codes = np.vstack([codes, codes[3:4]])
            book = Book()
            created = [book.assign(i, c, "C1")[1] for i, c in zip(ids, codes)]
            self.assertFalse(created[-1])
            st, _, res = assign(srv, ids, X)
            self.assertEqual(st, 200, res)
            self.check_results(res, ids, book, created)
            sfx = [r["suffix"] for r in res["results"][:30]]
            for tup in {tuple(c) for c in codes}:
                got = sorted(s for s, c in zip(sfx, codes[:30]) if tuple(c) == tup)
                self.assertEqual(got, list(range(len(got))))  # 0, 1, 2, ...
            # swap in another model (same levels, other codes): known ids keep
            # their stored IDs; new ids get the new model's codes
            T.write_model(model, {"item": self.ta}, "A2")
            deadline = time.monotonic() + 10
            while srv.json("GET", "/readyz")[2].get("model_version") != "A2":
                self.assertLess(time.monotonic(), deadline, "the swap was not seen")
                time.sleep(0.02)
            Xn, cn = T.tie_free_inputs(self.rng, self.ta, 5)
            new = ["n%d" % k for k in range(5)]
            created = [book.assign(i, c, "A2")[1] for i, c in zip(new, cn)]
            st, _, r2 = assign(srv, ids[:10] + new, np.vstack([Xn[:1].repeat(10, 0), Xn]))
            self.assertEqual(st, 200, r2)
            self.assertEqual(r2["model_version"], "A2")
            self.check_results(r2, ids[:10] + new, book, [False] * 10 + created)
            # reassign c05 under the new model: it moves, its old slot frees up
            old = book.by_id["c05"]
            book.assign("c05", cn[0], "A2", reassign=True)
            st, _, r3 = assign(srv, ["c05"], Xn[:1], reassign=True)
            self.assertEqual(st, 200, r3)
            self.check_results(r3, ["c05"], book, [False])
            self.assertTrue(r3["results"][0]["moved"])
            self.assertEqual(r3["results"][0]["previous_sid"], sid_of(old[0], old[1]))
            self.assertNotIn("previous_sid", r2["results"][0])  # not moved
            st, _, e = srv.json("GET", "/v1/sids/" + sid_of(old[0], old[1]))
            self.assertEqual(st, 404, e)
            # an id twice in one reassign (proto/api.md): applied in input order,
            # so it ends at its last occurrence's codes, and the first result
            # names a slot it gave up within the same request
            self.assertNotEqual(tuple(cn[1]), tuple(cn[2]))
            before = book.by_id["c06"]
            first = book.assign("c06", cn[1], "A2", reassign=True)[0]
            last = book.assign("c06", cn[2], "A2", reassign=True)[0]
            st, _, r5 = assign(srv, ["c06", "c06"], Xn[1:3], reassign=True)
            self.assertEqual(st, 200, r5)
            self.assertEqual([(r["sid"], r["moved"], r["created"]) for r in r5["results"]],
                             [(sid_of(*first[:2]), True, False),
                              (sid_of(*last[:2]), True, False)])
            # each occurrence names the ID it left: the stored one, then the first's
            self.assertEqual([r["previous_sid"] for r in r5["results"]],
                             [sid_of(*before[:2]), sid_of(*first[:2])])
            self.assertEqual(srv.json("GET", "/v1/items/c06")[2]["sid"], sid_of(*last[:2]))
            self.assertEqual(srv.json("GET", "/v1/sids/" + sid_of(*first[:2]))[0], 404)
            # back to the colliding model: a new id with c05's old codes takes its slot
            T.write_model(model, {"item": self.tc}, "C3")
            while srv.json("GET", "/readyz")[2].get("model_version") != "C3":
                self.assertLess(time.monotonic(), deadline + 10)
                time.sleep(0.02)
            k = int(np.where((codes[:30] == np.array(old[0])).all(1))[0][0])
            book.assign("late", codes[k], "C3")
            st, _, r4 = assign(srv, ["late"], X[k:k + 1])
            self.assertEqual(st, 200, r4)
            self.check_results(r4, ["late"], book, [True])
            self.assertEqual(r4["results"][0]["sid"], sid_of(old[0], old[1]))
            # prefix paging: every entry once, in (codes, suffix) order
            want = sorted((c, s, i) for i, (c, s, _) in book.by_id.items() if c[0] == 1)
            got, cursor, pages = [], "", 0
            while True:
                q = "/v1/sids?prefix=1&limit=4" + ("&cursor=" + cursor if cursor else "")
                st, _, page = srv.json("GET", q)
                self.assertEqual(st, 200, page)
                self.assertLessEqual(len(page["entries"]), 4)
                got += [(tuple(e["codes"]), e["suffix"], e["id"]) for e in page["entries"]]
                pages += 1
                if page["next_cursor"] is None:
                    break
                cursor = page["next_cursor"]
            self.assertEqual(got, want)
            self.assertGreater(pages, 1)
            for bad in ("/v1/sids?prefix=1--2", "/v1/sids?prefix=1-0-0-0",
                        "/v1/sids?prefix=x", "/v1/sids?limit=0", "/v1/sids?limit=1001",
                        "/v1/sids?cursor=zz"):
                st, _, e = srv.json("GET", bad)
                self.assertEqual((st, e["error"]["code"]), (400, "invalid_argument"), bad)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_bad_input(self):
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A")
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
            good = {"id": "x", "embedding_b64": T.b64_row(X[0])}
            cases = [
                ({"inputs": [{"embedding_b64": T.b64_row(X[0])}]}, "inputs[0] has no id"),
                ({"inputs": [good, {"id": "", "embedding_b64": T.b64_row(X[1])}]},
                 "inputs[1].id"),
                ({"inputs": [good], "top_k": 2}, "unknown field \"top_k\""),
                ({"inputs": [good], "reassign": "yes"}, "reassign must be true or false"),
                ({"inputs": [{"id": "x", "embedding": [1.0, 2.0]}]}, "expects 16"),
                ({"inputs": [{"id": "x\u0001", "embedding_b64": T.b64_row(X[0])}]},
                 "control character"),
            ]
            for b, msg in cases:
                st, _, e = srv.json("POST", "/v1/items:assign", b)
                self.assertEqual((st, e["error"]["code"]), (400, "invalid_argument"), b)
                self.assertIn(msg, e["error"]["message"])
            st, _, e = srv.json("POST", "/v1/users:assign", {"inputs": [good]})
            self.assertEqual(st, 404, e)  # the model has no user tower
            st, h, e = srv.json("DELETE", "/v1/items/x")
            self.assertEqual((st, h.get("allow")), (405, "GET, HEAD"))
            # integer ids are stored as their decimal text
            st, _, r = srv.json("POST", "/v1/items:assign",
                                {"inputs": [{"id": 42, "embedding_b64": T.b64_row(X[0])}]})
            self.assertEqual((st, r["results"][0]["id"]), (200, "42"))
            # nothing of the refused requests was stored
            st, _, page = srv.json("GET", "/v1/sids")
            self.assertEqual([e["id"] for e in page["entries"]], ["42"])
        finally:
            self.assertEqual(srv.stop(), 0)

    def refused_newer_schema(self, d, registry, bump):
        """A store a newer semid wrote (@bump() sets its schema_version to
        2 after a first server made it): the server refuses to start (exit 2)
        naming both versions.  It used to start and answer every assign 503
        while it retried a store this build can never use; on a rollback
        that replaced a fleet's newer servers, that was an outage of assign."""
        srv, model = self.start(d, {"item": self.ta}, "N", ["--registry", registry])
        X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
        self.assertEqual(assign(srv, ["n"], X)[0], 200)
        self.assertEqual(srv.stop(), 0)
        bump()
        p = subprocess.run([T.SERVER, "--model", model, "--listen", "127.0.0.1:0",
                            "--registry", registry], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("schema version 2 is newer than this build's 1", p.stderr)
        self.assertNotIn("event=listening", p.stdout + p.stderr)

    def test_newer_schema_refused_at_start(self):
        d = self.fresh_dir()
        db = os.path.join(d, "r.db")

        def bump():
            import sqlite3
            c = sqlite3.connect(db)
            c.execute("UPDATE semid_meta SET value = '2' WHERE key = 'schema_version'")
            c.commit()
            c.close()
        self.refused_newer_schema(d, db, bump)

    def test_corrupt_and_disabled(self):
        d = self.fresh_dir()
        bad = os.path.join(d, "bad.db")
        with open(bad, "wb") as f:
            f.write(b"this is not a SQLite database at all" * 200)
        X, codes = T.tie_free_inputs(self.rng, self.ta, 2)
        for extra, words in ((["--registry", bad], [bad]),
                             (["--registry", "none"], ["disabled"]),
                             (["--registry", "None"], ["disabled"])):  # not a file 'None'
            srv, _ = self.start(d, {"item": self.ta}, "A", extra)
            try:
                st, h, e = assign(srv, ["a", "b"], X)
                self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
                self.assertIn("retry-after", h)
                for w in words:
                    self.assertIn(w, e["error"]["message"])
                st, _, e = srv.json("GET", "/v1/items/a")
                self.assertEqual(st, 503, e)
                st, _, r = srv.json("POST", "/v1/items:encode", body(["a", "b"], X))
                self.assertEqual(st, 200, r)
                self.assertEqual([x["codes"] for x in r["results"]], codes.tolist())
                self.assertEqual(srv.request("GET", "/readyz")[0], 200)
                st, _, info = srv.json("GET", "/v1/model")
                self.assertEqual(info["registry"]["status"],
                                 "disabled" if bad not in extra else "unavailable")
            finally:
                self.assertEqual(srv.stop(), 0)
        with open(bad, "rb") as f:
            self.assertTrue(f.read().startswith(b"this is not"))  # left alone

    def test_read_only_file(self):
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A")
        X, codes = T.tie_free_inputs(self.rng, self.ta, 3)
        try:
            self.assertEqual(assign(srv, ["a"], X[:1])[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0)
        db = os.path.join(d, "semid-registry.db")
        os.chmod(db, 0o444)
        popen = {}
        if os.geteuid() == 0:  # root ignores file modes: run the server as nobody
            popen = {"user": "nobody"}
            os.chmod(os.path.join(d, "model.safetensors"), 0o644)
        srv = T.Server(["--model", os.path.join(d, "model.safetensors")] + FAST,
                       self.fresh_dir(), **popen)
        try:
            st, _, e = assign(srv, ["b"], X[1:2])
            self.assertEqual(st, 503, e)
            self.assertIn("read-only", e["error"]["message"])
            st, _, r = srv.json("POST", "/v1/items:encode", body(["b"], X[1:2]))
            self.assertEqual((st, r["results"][0]["codes"]), (200, codes[1].tolist()))
            self.assertEqual(srv.metrics()["semid_registry_up"], 0)
        finally:
            self.assertEqual(srv.stop(), 0)
            os.chmod(db, 0o644)

    def test_entry_json_cannot_hold(self):
        """A stored entry whose text is not UTF-8 (a model_version imported
        before import checked it) cannot be written as JSON: its lookup,
        and a page of prefix results holding it, fail naming the id.  The
        page used to leave the entry out and its cursor moved past it, so
        paging skipped it without a word."""
        import sqlite3
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A")
        X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
        try:
            self.assertEqual(assign(srv, ["good", "bad"], X)[0], 200)
            db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)
            db.execute("UPDATE semid_assignment SET model_version = CAST(? AS TEXT)"
                       " WHERE id = 'bad'", (b"v\xff",))
            db.close()
            for path in ("/v1/items/bad", "/v1/sids?prefix=&limit=10"):
                st, _, e = srv.json("GET", path)
                self.assertNotEqual(st, 200, e)
                self.assertIn("entry of id bad cannot be written as JSON",
                              e["error"]["message"])
            self.assertEqual(srv.json("GET", "/v1/items/good")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_locked_store_never_holds_up_encode(self):
        """Another process holds SQLite's write lock: assign waits out the
        busy timeout and answers 503, while encode keeps answering at once
        (store calls run on their own threads)."""
        import sqlite3
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--registry-timeout-ms", "2500"])
        X, codes = T.tie_free_inputs(self.rng, self.ta, 2)
        db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)
        try:
            self.assertEqual(assign(srv, ["a"], X[:1])[0], 200)
            db.execute("BEGIN IMMEDIATE")
            out = {}
            th = threading.Thread(target=lambda: out.update(r=assign(srv, ["b"], X[1:2])))
            t0 = time.monotonic()
            th.start()
            time.sleep(0.2)
            for _ in range(20):
                t1 = time.monotonic()
                st, _, r = srv.json("POST", "/v1/items:encode", body(["b"], X[1:2]))
                self.assertEqual((st, r["results"][0]["codes"]), (200, codes[1].tolist()))
                self.assertLess(time.monotonic() - t1, 1.0)
            # lookups use their own (read-only) connection: not blocked either
            st, _, e = srv.json("GET", "/v1/items/a")
            self.assertEqual(st, 200, e)
            th.join(30)
            st, h, e = out["r"]
            self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
            self.assertIn("locked", e["error"]["message"])
            # it did wait for the lock: registry_timeout_ms, not the 5 s default
            self.assertGreater(time.monotonic() - t0, 2.0)
            self.assertLess(time.monotonic() - t0, 4.5)
            self.assertEqual(srv.metrics()['semid_registry_timeouts_total{reason="busy"}'], 1)
            db.execute("ROLLBACK")
            st, _, r = assign(srv, ["b"], X[1:2])
            self.assertEqual((st, r["results"][0]["created"]), (200, True))
        finally:
            db.close()
            self.assertEqual(srv.stop(), 0)

    def test_swap_while_a_group_waits(self):
        """A model swap between an assign's encode and its store: the id is
        stored, and answered, with the codes and model_version of the model
        that encoded it (A), not the one loaded meanwhile (B); the next new
        id gets B's."""
        import sqlite3
        d = self.fresh_dir()
        srv, model = self.start(d, {"item": self.ta}, "A", ["--registry-timeout-ms", "20000"])
        X, codes_a = T.tie_free_inputs(self.rng, self.ta, 1)
        db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)
        try:
            self.assertEqual(assign(srv, ["first"], X)[0], 200)
            db.execute("BEGIN IMMEDIATE")
            out = {}
            th = threading.Thread(target=lambda: out.update(r=assign(srv, ["s1"], X)))
            th.start()
            deadline = time.monotonic() + 10
            while srv.metrics().get('semid_encoded_total{tower="item"}', 0) < 2:
                self.assertLess(time.monotonic(), deadline, "s1 was not encoded")
                time.sleep(0.02)
            T.write_model(model, {"item": self.tc}, "B")
            while srv.json("GET", "/readyz")[2].get("model_version") != "B":
                self.assertLess(time.monotonic(), deadline, "the swap was not seen")
                time.sleep(0.02)
            self.assertTrue(th.is_alive())  # still waiting for the store
            db.execute("ROLLBACK")
            th.join(30)
            st, _, r = out["r"]
            self.assertEqual(st, 200, r)
            self.assertEqual(r["model_version"], "A")
            self.assertEqual(r["results"][0]["model_version"], "A")
            self.assertEqual(r["results"][0]["codes"], codes_a[0].tolist())
            st, _, e = srv.json("GET", "/v1/items/s1")
            self.assertEqual((st, e["model_version"], e["codes"]), (200, "A", codes_a[0].tolist()))
            Xb, codes_b = T.tie_free_inputs(self.rng, self.tc, 1)
            st, _, r = assign(srv, ["s2"], Xb)
            self.assertEqual(st, 200, r)
            self.assertEqual((r["model_version"], r["results"][0]["model_version"]), ("B", "B"))
            self.assertEqual(r["results"][0]["codes"], codes_b[0].tolist())
        finally:
            db.close()
            self.assertEqual(srv.stop(), 0)

    def test_full_registry_queue_refuses_before_encoding(self):
        """With the store held up (another process holds SQLite's write
        lock) and queue_rows rows already waiting for it, an assign was
        still decoded, batched and encoded - work taken from the encode
        workers other clients share - and only then answered 503.  It is
        now answered 503 (Retry-After, the same message) before it is
        encoded, and encode requests go on meanwhile."""
        srv, X, codes, db = self.start_beside_store("F", ["--max-inputs", "4", "--queue-rows",
                                                          "4"], 12)
        out = {}
        threads = []
        try:
            self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)
            base = srv.metrics()[ENCODED]
            db.execute("BEGIN IMMEDIATE")

            def encoded(n):
                return encoded_since(srv, base, n)
            # the first group waits for the lock, the second waits behind it
            # and fills the queue (4 rows)
            for k, name in enumerate("ab"):
                ids = ["%s%d" % (name, i) for i in range(4)]
                t = threading.Thread(target=lambda n=name, i=ids, x=X[4 * k:4 * k + 4]:
                                     out.update({n: assign(srv, i, x)}))
                t.start()
                threads.append(t)
                self.assertEqual(encoded(4 * (k + 1)), 4 * (k + 1))
            st, h, r = assign(srv, ["c%d" % i for i in range(4)], X[8:12])
            self.assertEqual((st, h.get("retry-after")), (503, "1"), r)
            self.assertEqual(r["error"]["message"], "the registry queue is full; retry later")
            st, _, r = srv.json("POST", "/v1/items:encode", body(["e"], X[8:9]))
            self.assertEqual((st, r["results"][0]["codes"]), (200, codes[8].tolist()))
            # the refused assign was never encoded (the encode request was)
            self.assertEqual(srv.metrics()[ENCODED] - base, 9)
            db.execute("ROLLBACK")
            for t in threads:
                t.join(30)
            self.assertEqual([out[n][0] for n in "ab"], [200, 200], out)
        finally:
            db.close()
            self.assertEqual(srv.stop(), 0)

    def test_rows_waiting_for_the_store_are_bounded(self):
        """The rows of an assign waiting for the store count against
        body_memory_bytes: beside its floats and ids, each row's codes and
        its part of the registry call (a 632-byte entry for the answer)
        were held, uncounted, for as long as the store took, so assigns
        piling up behind a slow store held far more than the bound.  With
        the store held up (another process holds SQLite's write lock) and
        an assign of 250 rows waiting for it, an assign of 100 rows, whose
        body and floats fit beside it but whose rows do not, is refused
        503 with Retry-After before it is encoded; an encode is still
        answered; once the lock goes, the first is stored, the count is
        back to 0 and the second is stored too."""
        srv, X, codes, db = self.start_beside_store(
            "M", ["--max-body-bytes", "100000", "--body-memory-bytes", "250000"], 350)
        out = {}
        t = None
        try:
            self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)
            base = srv.metrics()[ENCODED]
            db.execute("BEGIN IMMEDIATE")
            t = threading.Thread(target=lambda: out.update(
                a=assign(srv, ["a%d" % i for i in range(250)], X[:250])))
            t.start()
            encoded_since(srv, base, 250)
            # encoded, waiting for the lock: its floats (16 x 4 bytes) and
            # more than 600 bytes a row for the store are counted
            held = srv.metrics()["semid_request_body_bytes"]
            self.assertGreaterEqual(held, 250 * (16 * 4 + 600))
            st, h, r = assign(srv, ["b%d" % i for i in range(100)], X[250:])
            self.assertEqual((st, h.get("retry-after")), (503, "1"), r)
            self.assertRegex(r["error"]["message"],
                             r"^the decoded request \(\d+ bytes\) would take the request "
                             r"bodies, decoded requests and answers held past "
                             r"body_memory_bytes \(250000\); retry later$")
            self.assertEqual(srv.metrics()[ENCODED], base + 250)  # never encoded
            st, _, r = srv.json("POST", "/v1/items:encode", body(["e"], X[250:251]))
            self.assertEqual((st, r["results"][0]["codes"]), (200, codes[250].tolist()))
            db.execute("ROLLBACK")
            t.join(30)
            st, _, r = out["a"]
            self.assertEqual((st, [x["codes"] for x in r["results"]]),
                             (200, codes[:250].tolist()))
            deadline = time.monotonic() + 5 * T.SLOW  # let go just after it is sent
            while srv.metrics()["semid_request_body_bytes"] and time.monotonic() < deadline:
                time.sleep(0.02)
            self.assertEqual(srv.metrics()["semid_request_body_bytes"], 0)
            st, _, r = assign(srv, ["b%d" % i for i in range(100)], X[250:])
            self.assertEqual((st, [x["codes"] for x in r["results"]]),
                             (200, codes[250:].tolist()))
        finally:
            if t and t.is_alive():
                db.execute("ROLLBACK")
                t.join(30)
            db.close()
            self.assertEqual(srv.stop(), 0)

    def test_file_moved_away_and_back(self):
        """The SQLite file deleted or moved away under a running server:
        SQLite would go on committing to the file it has open, and every
        assignment acknowledged meanwhile would be gone at the next start.
        Assign and lookups answer 503 naming the file, encode goes on, and
        once the file is back everything acknowledged is there."""
        d = self.fresh_dir()
        srv, model = self.start(d, {"item": self.ta}, "A")
        db = os.path.join(d, "semid-registry.db")
        X, codes = T.tie_free_inputs(self.rng, self.ta, 3)
        acked = {}
        try:
            st, _, r = assign(srv, ["a"], X[:1])
            self.assertEqual(st, 200, r)
            acked["a"] = r["results"][0]["sid"]
            for f in ("", "-wal", "-shm"):
                os.rename(db + f, db + ".away" + f)
            st, _, e = assign(srv, ["b"], X[1:2])
            self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
            self.assertIn(db, e["error"]["message"])
            self.assertIn("deleted or moved away", e["error"]["message"])
            st, _, e = srv.json("GET", "/v1/items/a")
            self.assertEqual(st, 503, e)
            st, _, r = srv.json("POST", "/v1/items:encode", body(["b"], X[1:2]))
            self.assertEqual((st, r["results"][0]["codes"]), (200, codes[1].tolist()))
            self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["status"],
                             "unavailable")
            for f in ("", "-wal", "-shm"):
                os.rename(db + ".away" + f, db + f)
            st, _, r = assign(srv, ["b", "c"], X[1:3])
            self.assertEqual(st, 200, r)
            acked.update((x["id"], x["sid"]) for x in r["results"])
            st, _, e = srv.json("GET", "/v1/items/c")
            self.assertEqual((st, e["sid"]), (200, acked["c"]))
        finally:
            self.assertEqual(srv.stop(), 0)
        srv, _ = self.start(d, {"item": self.ta}, "A")
        try:
            for i, sid in acked.items():
                st, _, e = srv.json("GET", "/v1/items/" + i)
                self.assertEqual((st, e.get("sid")), (200, sid), i)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_concurrent_clients(self):
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.tc}, "C")
        X, codes = T.tie_free_inputs(self.rng, self.tc, 60)
        ids = ["k%02d" % k for k in range(60)]
        try:
            seen, errors = assign_concurrently([srv] * 6, ids, X, rounds=12, per_request=6,
                                               timeout=60)
            self.assertEqual(errors, [])
            self.check_unique(srv, seen, codes, ids)
        finally:
            self.assertEqual(srv.stop(), 0)

    def check_unique(self, srv, seen, codes, ids):
        """Every id answered with one sid, matching its codes; no sid twice;
        the store holds exactly that, with suffixes 0..n-1 per code tuple."""
        for i, sids in seen.items():
            self.assertEqual(len(sids), 1, (i, sids))
        sid = {i: next(iter(s)) for i, s in seen.items()}
        self.assertEqual(len(set(sid.values())), len(sid))
        entries, cursor = [], ""
        while True:
            st, _, page = srv.json("GET", "/v1/sids?limit=1000" +
                                   ("&cursor=" + cursor if cursor else ""))
            self.assertEqual(st, 200, page)
            entries += page["entries"]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        stored = {e["id"]: e["sid"] for e in entries}
        self.assertEqual(len(stored), len(entries))
        self.assertEqual(stored, sid)
        by_codes = {}
        for e in entries:
            k = ids.index(e["id"])
            self.assertEqual(e["codes"], codes[k].tolist())
            by_codes.setdefault(tuple(e["codes"]), []).append(e["suffix"])
        for sfx in by_codes.values():
            self.assertEqual(sorted(sfx), list(range(len(sfx))))

    def test_sigkill_durability(self):
        d = self.fresh_dir()
        srv, model = self.start(d, {"item": self.tc}, "C")
        X, codes = T.tie_free_inputs(self.rng, self.tc, 400)
        ids = ["d%03d" % k for k in range(400)]
        acked, lock, stop = {}, threading.Lock(), threading.Event()

        def client(off):
            conn = srv.conn(timeout=5)
            k = off
            while not stop.is_set() and k < 400:
                pick = list(range(k, min(k + 4, 400)))
                try:
                    st, _, res = assign(srv, [ids[j] for j in pick], X[pick], conn=conn)
                except Exception:
                    return  # the server died under us: this one is not acknowledged
                if st == 200:
                    with lock:
                        for x in res["results"]:
                            acked[x["id"]] = x["sid"]
                k += 8

        threads = [threading.Thread(target=client, args=(o,)) for o in (0, 4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(20)
        srv.log.close()
        self.assertGreaterEqual(len(acked), 100)
        self.assertLess(len(acked), 400, "the kill came after the stream ended")
        srv = T.Server(["--model", model] + FAST, d)
        try:
            for i, s in acked.items():
                st, _, e = srv.json("GET", "/v1/items/" + i)
                self.assertEqual((st, e.get("sid")), (200, s), i)
            # whatever else was committed is consistent too
            seen = {}
            st, _, page = srv.json("GET", "/v1/sids?limit=1000")
            for e in page["entries"]:
                seen.setdefault(e["id"], set()).add(e["sid"])
            self.check_unique(srv, seen, codes, ids)
        finally:
            self.assertEqual(srv.stop(), 0)


class LevelsBase(Base):
    """A model whose item tower has another number of levels than the IDs
    the registry holds (proto/registry.md, "Levels"): the request is fine,
    the server's model and store disagree, so new ids answer 409
    levels_mismatch naming both counts, known ids and lookups still answer,
    and /v1/model, the metric and a log line show it from the reload on."""
    REG = None  # --registry target, or None for the SQLite file beside the model

    def swap(self, srv, model, towers, version):
        T.write_model(model, towers, version)
        deadline = time.monotonic() + 10 * T.SLOW
        while srv.json("GET", "/readyz")[2].get("model_version") != version:
            self.assertLess(time.monotonic(), deadline, "the swap was not seen")
            time.sleep(0.02)

    def wait_for(self, what, pred):
        deadline = time.monotonic() + 10 * T.SLOW
        while not pred():
            self.assertLess(time.monotonic(), deadline, what)
            time.sleep(0.02)

    def mismatch_shown(self, srv, towers):
        """/v1/model's registry.levels_mismatch and the gauge agree on @towers."""
        info = srv.json("GET", "/v1/model")[2]["registry"]
        m = srv.metrics()
        gauge = sorted(t for t in ("item", "user")
                       if m.get('semid_registry_levels_mismatch{tower="%s"}' % t) == 1)
        return info["levels_mismatch"] == towers and gauge == towers

    def check_levels_mismatch(self, reg):
        d = self.fresh_dir()
        two = T.tie_free_tower(self.rng, ks=(16, 8), scales=(10.0, 1.0))
        srv, model = self.start(d, {"item": self.ta, "user": self.tb}, "L3", reg)
        try:
            X, codes = T.tie_free_inputs(self.rng, self.ta, 4)
            ids = ["k%d" % k for k in range(4)]
            st, _, first = assign(srv, ids, X)
            self.assertEqual(st, 200, first)
            sids = [r["sid"] for r in first["results"]]
            info = srv.json("GET", "/v1/model")[2]["registry"]
            self.assertEqual(info["levels"], {"item": 3, "user": None})
            self.assertEqual(info["levels_mismatch"], [])
            self.assertEqual(srv.metrics()['semid_registry_levels_mismatch{tower="item"}'], 0)

            self.swap(srv, model, {"item": two, "user": self.tb}, "L2")
            # seen at the reload, not only by the next assign
            self.wait_for("the mismatch was not shown after the reload",
                          lambda: self.mismatch_shown(srv, ["item"]))
            self.assertRegex(srv.log_text(),
                             r"level=warn event=registry .*item tower gives 2 levels.*"
                             r"item IDs have 3")
            X2, _ = T.tie_free_inputs(self.rng, two, 2)
            # a new id: not the caller's fault, 409 naming both counts and the way out
            for req in ((["new0"], X2[:1], None), (["k0", "new1"], X2, None),
                        (["k1"], X2[:1], True)):
                st, h, e = assign(srv, req[0], req[1], reassign=req[2])
                self.assertEqual((st, e["error"]["code"]), (409, "levels_mismatch"), req)
                msg = e["error"]["message"]
                self.assertIn("gives 2 levels", msg)
                self.assertIn("item IDs have 3", msg)
                self.assertIn("semid registry diff --model", msg)
                self.assertNotIn("retry-after", h)
            # known ids: their stored IDs, unchanged; lookups answer
            st, _, again = assign(srv, ids, X2[[0, 1, 0, 1]])
            self.assertEqual(st, 200, again)
            self.assertEqual([r["sid"] for r in again["results"]], sids)
            self.assertEqual([r["created"] for r in again["results"]], [False] * 4)
            self.assertEqual(srv.json("GET", "/v1/items/k2")[2]["sid"], sids[2])
            self.assertEqual(srv.json("GET", "/v1/sids/" + sids[3])[2]["id"], "k3")
            self.assertEqual(srv.json("GET", "/v1/items/new0")[0], 404)  # nothing stored
            # users are their own space: the user tower still assigns
            Xu, _ = T.tie_free_inputs(self.rng, self.tb, 1)
            st, _, ru = assign(srv, ["u0"], Xu, tower="users")
            self.assertEqual(st, 200, ru)
            self.assertEqual(srv.metrics()['semid_registry_levels_mismatch{tower="item"}'], 1)

            # back to three levels: gone, and new ids assign again
            self.swap(srv, model, {"item": self.ta, "user": self.tb}, "L3b")
            self.wait_for("the mismatch did not clear",
                          lambda: self.mismatch_shown(srv, []))
            st, _, r = assign(srv, ["new0"], X[:1])
            self.assertEqual((st, r["results"][0]["created"]), (200, True), r)
        finally:
            self.assertEqual(srv.stop(), 0)
        # a server that starts with the other model says so at start
        T.write_model(model, {"item": two, "user": self.tb}, "L2s")
        srv = T.Server(["--model", model] + FAST + list(reg), d)
        try:
            self.wait_for("the mismatch was not shown at start",
                          lambda: self.mismatch_shown(srv, ["item"]))
            st, _, e = assign(srv, ["new9"], X2[:1])
            self.assertEqual((st, e["error"]["code"]), (409, "levels_mismatch"), e)
        finally:
            self.assertEqual(srv.stop(), 0)


class TestLevelsMismatchSqlite(LevelsBase):
    def test_levels_mismatch(self):
        self.check_levels_mismatch(())


class TestAssignPostgresSilent(Base):
    """A PostgreSQL address where something accepts connections and never
    answers (a hung host, a proxy with nothing behind it).  libpq's defaults
    wait for ever, which held the server's startup, and every encode, until it
    was killed.  Now a connection attempt gives up after 5 s unless the
    connection string says otherwise: the server listens, encodes, and
    answers assign 503 naming the timeout."""

    def setUp(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)  # the kernel completes the handshakes; nobody reads
        self.addr = "127.0.0.1:%d" % self.listener.getsockname()[1]

    def tearDown(self):
        self.listener.close()

    def check(self, conninfo, timeout_s, extra=()):
        t0 = time.monotonic()
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                            ["--registry", conninfo] + list(extra),
                            start_timeout=4 * timeout_s + 10)
        try:
            self.assertRegex(srv.log_text(), r"level=warn event=registry msg=\"registry \S+: "
                             r"cannot connect: .*timeout expired \(encode serves; assign and "
                             r"lookups answer 503, and each retries\)\"")
            self.assertNotIn("msg=opened", srv.log_text())
            # down from the start, before any call: /v1/model and the gauge
            st, _, m = srv.json("GET", "/v1/model")
            self.assertEqual((m["registry"]["backend"], m["registry"]["status"]),
                             ("postgresql", "unavailable"), m["registry"])
            self.assertIn("timeout expired", m["registry"]["error"])
            self.assertEqual(srv.metrics()["semid_registry_up"], 0)
            X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
            st, _, r = srv.json("POST", "/v1/items:encode",
                                {"inputs": [{"embedding": X[0].tolist()}]})
            self.assertEqual(st, 200, r)
            t1 = time.monotonic()
            st, h, r = assign(srv, ["s1"], X)
            took = time.monotonic() - t1
            self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
            self.assertIn("cannot connect", r["error"]["message"])
            self.assertIn("timeout expired", r["error"]["message"])
            self.assertIn("retry-after", h)
            # gave up at its timeout: not before, and (for ?connect_timeout=2)
            # well before the 5 s default
            self.assertGreater(took, timeout_s - 1)
            if timeout_s < 5:
                self.assertLess(took, 4.5)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_default_connect_timeout(self):
        self.check("postgresql://semid@%s/semid" % self.addr, 5)

    def test_connection_string_timeout_wins(self):
        self.check("postgresql://semid@%s/semid?connect_timeout=2" % self.addr, 2,
                   ["--registry-timeout-ms", "9000"])

    def test_registry_timeout_bounds_connecting(self):
        # 1500 ms rounds up to 2 s
        self.check("postgresql://semid@%s/semid" % self.addr, 2,
                   ["--registry-timeout-ms", "1500"])

    def test_health_answers_while_a_handle_connects(self):
        """GET /v1/model reads the registry's health while a handle is being
        opened (the first lookup opens the reader, which waits for its
        connect timeout here): it used to wait behind that open, since both
        took one mutex.  The proof is in the order: /v1/model has answered
        while the reader's connection is still open, i.e. before libpq gave
        up on it."""
        conninfo = "postgresql://semid@%s/semid?connect_timeout=3" % self.addr
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                            ["--registry", conninfo], start_timeout=30)
        try:
            self.listener.settimeout(10)
            first, _ = self.listener.accept()  # the writer's, at start (given up)
            first.close()
            got = {}
            t = threading.Thread(target=lambda: got.update(
                r=srv.json("GET", "/v1/items/nobody")))
            t.start()
            reader, _ = self.listener.accept()  # the lookup's open is waiting on it
            try:
                st, _, m = srv.json("GET", "/v1/model")
                self.assertEqual(st, 200)
                self.assertEqual(m["registry"]["status"], "unavailable")
                reader.setblocking(False)
                with self.assertRaises(BlockingIOError):  # not closed: still connecting
                    while reader.recv(4096):  # (its startup packet is there to read)
                        pass
            finally:
                t.join(15)
                reader.close()
            self.assertEqual(got["r"][0], 503, got)
        finally:
            self.assertEqual(srv.stop(), 0)


class TestAssignPostgresPassword(Base):
    """GET /v1/model, which needs no token, names the store "without its
    password".  A hand-made strip knew only "user:pw@" and a "password=..."
    word: a URI's ?password=, "password = x" or a quoted value with a space
    were shown to anyone.  The store is now named as libpq parses it, the
    label every registry message uses.  Nothing listens on the port, so the
    store is down and the test needs no PostgreSQL."""

    def test_model_route_never_shows_the_password(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # refused from now on
        label = "postgresql://semid@127.0.0.1:%d/db" % port
        for conninfo in (
                "postgresql://semid@127.0.0.1:%d/db?password=hunter2&connect_timeout=2" % port,
                "postgresql://semid:hunter2@127.0.0.1:%d/db" % port,
                "user=semid host=127.0.0.1 port=%d dbname=db password = hunter2" % port,
                "user=semid host=127.0.0.1 port=%d password='hunter2 x' dbname=db" % port):
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "P",
                                ["--registry", conninfo])
            try:
                st, _, m = srv.json("GET", "/v1/model")
                self.assertEqual(st, 200)
                self.assertEqual(m["registry"]["status"], "unavailable", conninfo)
                self.assertEqual(m["registry"]["store"], label, conninfo)
                self.assertNotIn("hunter2", json.dumps(m), conninfo)
            finally:
                self.assertEqual(srv.stop(), 0)
            self.assertNotIn("hunter2", srv.log_text(), conninfo)


class PgBase(Base):
    """A throwaway cluster per class, started with PG_OPTIONS."""
    PG_OPTIONS = ""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.pg = pg_fixture.PgCluster.start(options=cls.PG_OPTIONS)
        except unittest.SkipTest:
            shutil.rmtree(cls.work, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()
        super().tearDownClass()

    def psql(self, sql, check=False):
        return subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                               str(self.pg.port), "-U", "postgres", "-d", "postgres", "-XAtq",
                               "-c", sql], capture_output=True, text=True, timeout=60,
                              check=check)

    def fresh_db_named(self, name):
        """A new database in the test's own cluster: (its connection string,
        its name)."""
        db = "semid_%s_%d" % (name, os.getpid())
        self.psql("CREATE DATABASE " + db, check=True)
        return self.pg.conninfo.replace("dbname=postgres", "dbname=" + db), db

    def fresh_db(self, name):
        """A new database in the test's own cluster: its connection string."""
        return self.fresh_db_named(name)[0]


class TestAssignPostgres(PgBase):

    def test_two_servers(self):
        d = self.fresh_dir()
        reg = ["--registry", self.pg.conninfo]
        s1, model = self.start(d, {"item": self.tc}, "C", reg)
        s2 = T.Server(["--model", model] + FAST + reg, d)
        X, codes = T.tie_free_inputs(self.rng, self.tc, 50)
        ids = ["p%02d" % k for k in range(50)]
        try:
            seen, errors = assign_concurrently([s1, s2, s1, s2], ids, X, rounds=10,
                                               per_request=5, timeout=90)
            self.assertEqual(errors, [])
            TestAssignSqlite.check_unique(self, s1, seen, codes, ids)
            st, _, info = s2.json("GET", "/v1/model")
            self.assertEqual((info["registry"]["backend"], info["registry"]["status"]),
                             ("postgresql", "ok"))
            # an outage: assign and lookups 503, encode 200; then back
            if self.pg.own:
                self.pg.stop_server()
                try:
                    st, _, e = assign(s1, ["q1"], X[:1])
                    self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
                    self.assertEqual(s1.json("GET", "/v1/items/p01")[0], 503)
                    st, _, r = s1.json("POST", "/v1/items:encode", body(["q1"], X[:1]))
                    self.assertEqual(st, 200, r)
                    self.assertEqual(s1.json("GET", "/v1/model")[2]["registry"]["status"],
                                     "unavailable")
                finally:
                    self.pg.start_server()
                st, _, r = assign(s1, ["q1"], X[:1])
                self.assertEqual(st, 200, r)
                self.assertEqual(s2.json("GET", "/v1/items/q1")[2]["sid"],
                                 r["results"][0]["sid"])
        finally:
            self.assertEqual(s1.stop(), 0)
            self.assertEqual(s2.stop(), 0)

    def test_newer_schema_refused_at_start(self):
        conninfo, db = self.fresh_db_named("newer")

        def bump():
            subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                            str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq", "-c",
                            "UPDATE semid_meta SET value = '2' WHERE key = 'schema_version'"],
                           check=True, capture_output=True, timeout=60)
        TestAssignSqlite.refused_newer_schema(self, self.fresh_dir(), conninfo, bump)

    def test_restart_mid_stream(self):
        """PostgreSQL restarted (pg_ctl stop -m fast, which ends every
        session) under a stream of assigns from several clients: while it is
        down, assign and lookups answer 503, encode 200 and semid_registry_up
        is 0; once it is back the server's handles reconnect by themselves
        (no restart of the server) and every client's next assign succeeds.
        Each client sends every id until it is answered 200 (a 503 may or
        may not have committed), so in the end every id was acknowledged:
        the store then holds exactly those ids, each with the sid its 200
        gave (none lost, no sid given twice, suffixes dense under the one
        collided code tuple), and no id was answered created twice.  A
        restart while nothing is asked is not seen at all: the first calls
        after it find their sessions gone and answer from new ones."""
        if not self.pg.own:
            self.skipTest("needs the test's own cluster (stops and starts it)")
        conninfo, db = self.fresh_db_named("restart")
        srv, _ = self.start(self.fresh_dir(), {"item": self.tc}, "R",
                            ["--registry", conninfo, "--registry-connections", "2",
                             "--registry-timeout-ms", "1000"])
        X, codes = T.tie_free_inputs(self.rng, self.tc, 400)
        lock = threading.Lock()
        acked, created, refused = {}, {}, []
        phase = {"n": 0, "stop": False}

        def client(k):
            conn = srv.conn(60)
            try:
                for j in range(100):
                    i = 100 * k + j
                    while not phase["stop"]:
                        st, _, r = assign(srv, ["r%03d" % i], X[i:i + 1], conn=conn)
                        if st == 200:
                            break
                        self.assertEqual(r["error"]["code"], "unavailable", r)
                        with lock:
                            refused.append(i)
                        time.sleep(0.05)
                    else:
                        return
                    with lock:
                        acked["r%03d" % i] = r["results"][0]["sid"]
                        created["r%03d" % i] = created.get("r%03d" % i, 0) + \
                            r["results"][0]["created"]
                        phase["n"] += 1
            finally:
                conn.close()

        def wait_for(cond, what):
            for _ in range(1200):
                if cond():
                    return
                time.sleep(0.05)
            self.fail("never: " + what)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        try:
            for t in threads:
                t.start()
            wait_for(lambda: phase["n"] >= 40, "40 assigns before the restart")
            self.pg.stop_server("fast")
            try:
                wait_for(lambda: refused, "a 503 while PostgreSQL is down")
                st, _, e = assign(srv, ["down"], X[:1])
                self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
                self.assertEqual(srv.json("GET", "/v1/items/r000")[0], 503)
                st, _, r = srv.json("POST", "/v1/items:encode", body(["down"], X[:1]))
                self.assertEqual(st, 200, r)
                self.assertEqual(srv.metrics()["semid_registry_up"], 0)
                self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["status"],
                                 "unavailable")
                during = phase["n"]
            finally:
                self.pg.start_server()
            wait_for(lambda: phase["n"] >= during + 40, "40 assigns after the restart")
            for t in threads:
                t.join(120)
            self.assertEqual(phase["n"], 400)
            st, _, g = srv.json("GET", "/v1/items/r000")
            self.assertEqual((st, g.get("sid")), (200, acked["r000"]), g)
            self.assertEqual(srv.metrics()["semid_registry_up"], 1)
            self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["status"], "ok")
            # restarted while nothing was asked: the first calls after it
            # find their sessions gone, and answer from new ones
            self.pg.stop_server("fast")
            self.pg.start_server()
            for k in range(4):
                st, _, r = assign(srv, ["idle%d" % k], X[k:k + 1])
                self.assertEqual(st, 200, r)
                acked["idle%d" % k] = r["results"][0]["sid"]
                created["idle%d" % k] = r["results"][0]["created"]
            st, _, g = srv.json("GET", "/v1/items/r001")
            self.assertEqual((st, g.get("sid")), (200, acked["r001"]), g)
        finally:
            phase["stop"] = True
            for t in threads:
                t.join(60)
            self.assertEqual(srv.stop(), 0)
        self.assertTrue(refused)
        out = subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                              str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq", "-F",
                              " ", "-c", "SELECT id, suffix FROM semid_assignment"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        stored = dict(line.split() for line in out.split("\n") if line)
        self.assertEqual(set(stored), set(acked))
        for i, sid in acked.items():
            k = int(i[4:]) if i.startswith("idle") else int(i[1:])
            self.assertEqual(sid, sid_of(codes[k], int(stored[i])), i)
        self.assertEqual(len(set(acked.values())), 404)
        self.assertEqual(max(created.values()), 1)
        per_codes = {}
        for sid in acked.values():
            head, suffix = sid.rsplit("-", 1)
            per_codes.setdefault(head, []).append(int(suffix))
        for head, suffixes in per_codes.items():
            self.assertEqual(sorted(suffixes), list(range(len(suffixes))), head)

    def test_deadlock_is_retried(self):
        """A transaction PostgreSQL aborts as a deadlock victim (40P01) runs
        again instead of failing the request, and /metrics counts the retry.
        Another session holds the id's advisory lock; the assign waits for it
        while holding the store's global key shared; then that session asks
        for the global key exclusive.  After deadlock_timeout the assign, the
        first waiter, is aborted; its second run waits for the other session
        to commit and then succeeds.  The assign's sessions check after 5 s and
        the other session never does, so however slowly the test reaches its
        second lock, the assign is the one PostgreSQL picks."""
        if not self.pg.own:
            self.skipTest("needs the test's own cluster")
        conninfo, db = self.fresh_db_named("deadlock")
        self.psql("ALTER DATABASE %s SET deadlock_timeout = '5s'" % db, check=True)
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "D",
                            ["--registry", conninfo, "--registry-connections", "1",
                             "--registry-timeout-ms", "60000"])  # waits 5 s for a lock
        holder, out = None, {}
        X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
        try:
            self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)  # schema, connection
            m0 = srv.metrics()
            holder = subprocess.Popen([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                                       str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

            def hold(sql):  # advisory locks belong to one database: the store's
                holder.stdin.write("SELECT 1 FROM (SELECT %s) x;\n" % sql)
                holder.stdin.flush()
                self.assertEqual(holder.stdout.readline().strip(), "1")
            holder.stdin.write("SET deadlock_timeout = '1h';\nBEGIN;\n")
            hold("pg_advisory_xact_lock(%d)" % pg_key(0, "i", b"dl"))
            t = threading.Thread(target=lambda: out.update(r=assign(srv, ["dl"], X[1:])))
            t.start()
            for _ in range(200):  # the assign waits for the id's lock
                if self.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND NOT granted").stdout.strip() == "1":
                    break
                time.sleep(0.05)
            else:
                self.fail("the assign never waited for the held lock")
            hold("pg_advisory_xact_lock(%d)" % PG_GLOBAL_KEY)  # returns once the assign is aborted
            holder.stdin.write("COMMIT;\n")
            holder.stdin.flush()
            t.join(60)
            st, _, r = out["r"]
            self.assertEqual(st, 200, r)
            self.assertEqual(r["results"][0]["created"], True)
            self.assertEqual(srv.metrics()["semid_registry_retries_total"],
                             m0["semid_registry_retries_total"] + 1)
        finally:
            if holder:
                release(holder)
            self.assertEqual(srv.stop(), 0)

    def backends(self, db):
        """The pids of the server's sessions on database @db."""
        out = self.psql("SELECT pid FROM pg_stat_activity WHERE datname = '%s' "
                        "AND application_name = 'semid'" % db, check=True).stdout
        return [int(x) for x in out.split()]

    def test_stopped_backend_is_given_up(self):
        """A backend that stops answering while its host keeps the connection
        (SIGSTOP here; a hung host or a stuck process alike) used to hold a
        registry call for ever, and with it every later call on that handle:
        libpq waits without bound and the kernel keeps the TCP connection
        alive.  Now the wait ends registry_timeout_ms + 1 s after the request,
        the connection is dropped, and the call runs again on a new one; the
        lookups' handle alike.  Encoding never waits for the store."""
        if not self.pg.own:
            self.skipTest("needs the test's own cluster (signals its backends)")
        conninfo, db = self.fresh_db_named("stopped")
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                            ["--registry", conninfo, "--registry-connections", "1",
                             "--registry-timeout-ms", "1000"])
        X, _ = T.tie_free_inputs(self.rng, self.ta, 3)
        stopped = []
        try:
            st, _, r0 = assign(srv, ["warm"], X[:1])
            self.assertEqual(st, 200, r0)
            self.assertEqual(srv.json("GET", "/v1/items/warm")[0], 200)  # the reader too
            pids = self.backends(db)
            self.assertEqual(len(pids), 2, pids)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            t0 = time.monotonic()
            st, _, r = assign(srv, ["s1"], X[1:2])
            took = time.monotonic() - t0
            self.assertEqual(st, 200, r)
            self.assertEqual(r["results"][0]["created"], True)
            self.assertGreaterEqual(took, 2.0)  # the answer was waited for 1 + 1 s first
            st, _, r = srv.json("POST", "/v1/items:encode",
                                {"inputs": [{"embedding_b64": T.b64_row(X[2])}]})
            self.assertEqual(st, 200, r)
            st, _, g = srv.json("GET", "/v1/items/warm")
            self.assertEqual((st, g.get("sid")), (200, r0["results"][0]["sid"]), g)
            # both calls now run on new sessions; the stopped ones are left alone
            now = self.backends(db)
            self.assertEqual(len(set(now) - set(pids)), 2, (pids, now))
            self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["status"], "ok")
            m = srv.metrics()
            self.assertEqual(m['semid_registry_timeouts_total{reason="no_answer"}'], 2)
            self.assertEqual(m['semid_registry_timeouts_total{reason="statement_timeout"}'], 0)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            self.assertEqual(srv.stop(), 0)

    def lock_table(self, db):
        """A psql session holding semid_assignment's ACCESS EXCLUSIVE lock in
        database @db until its stdin gets COMMIT (or closes)."""
        holder = subprocess.Popen([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                                   str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holder.stdin.write("BEGIN;\nLOCK TABLE semid_assignment;\nSELECT 1;\n")
        holder.stdin.flush()
        self.assertEqual(holder.stdout.readline().strip(), "1")
        return holder

    def test_group_waits_once(self):
        """A group of assign requests committed together (one store call of
        many) whose store cancels a statement answers all of them after one
        timeout, not one timeout per request: nine 1-item requests queued
        behind a first one used to take 0.8 s each, one after the other."""
        self.wait_once_behind_lock(
            "group", 10, lambda srv, k, X, c: assign(srv, ["g%d" % k], X[k + 1:k + 2], conn=c))

    def wait_once_behind_lock(self, name, n, request):
        """@n requests at once (@request(srv, k, X, conn) -> (status, headers,
        body)) with the table locked elsewhere: each answered 503 (statement
        timeout, Retry-After) after one wait, or two if one came in just as
        it ended, not @n; once the lock is gone, assign and lookup answer."""
        conninfo, db = self.fresh_db_named(name)
        X, _ = T.tie_free_inputs(self.rng, self.ta, 100)
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "Q",
                            ["--registry", conninfo, "--registry-connections", "1",
                             "--registry-timeout-ms", "800"])
        holder = None
        try:
            self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)
            holder = self.lock_table(db)
            out = [None] * n

            def one(k):
                c = srv.conn(60)
                try:
                    out[k] = request(srv, k, X, c)
                finally:
                    c.close()
            threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for st, h, r in out:
                self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
                self.assertIn("canceling statement due to statement timeout",
                              r["error"]["message"])
                self.assertEqual(h.get("retry-after"), "1")
            m = srv.metrics()
            self.assertLessEqual(m['semid_registry_timeouts_total{reason="statement_timeout"}'],
                                 2)
            holder.stdin.write("COMMIT;\n")
            release(holder)
            holder = None
            st, _, r = assign(srv, ["after"], X[:1])
            self.assertEqual((st, r["results"][0]["created"]), (200, True), r)
            st, _, r = srv.json("GET", "/v1/items/warm")
            self.assertEqual((st, r["id"]), (200, "warm"), r)
            return m
        finally:
            if holder:
                release(holder)
            self.assertEqual(srv.stop(), 0)

    def test_queued_lookups_wait_once(self):
        """Lookups run one at a time: with the table locked elsewhere, each
        of ten queued lookups waited out registry_timeout_ms in turn (ten
        statement timeouts, the last answered after 8 s; a hundred would
        hold their connections, and connection_limit, for minutes).  Those
        queued behind the one that timed out now get its 503 at once."""
        m = self.wait_once_behind_lock(
            "lkq", 10, lambda srv, k, X, c: srv.json("GET", "/v1/items/warm", conn=c))
        self.assertEqual(m['semid_registry_errors_total{op="lookup"}'], 10)

    def test_queued_groups_wait_once(self):
        """Groups hold 128 ids at most on PostgreSQL, so requests of 100
        rows are a group each: with the table locked elsewhere, six queued
        behind one another each waited out registry_timeout_ms in turn (six
        statement timeouts; queue_rows of them would take minutes, holding
        their connections).  Those queued behind the group that timed out
        now get its 503 at once."""
        self.wait_once_behind_lock(
            "grq", 6, lambda srv, k, X, c: assign(srv, ["g%d-%d" % (k, i) for i in range(100)],
                                                  X, conn=c))

    def test_start_behind_the_migration_lock(self):
        """A server that starts while another session holds the lock under
        which the schema is created or migrated (a newer semid migrating, a
        second server creating it) waits for it no longer than
        registry_timeout_ms: it starts, encodes, shows the store down and
        answers assign 503; once the lock is let go, the next assign creates
        the schema and succeeds, without a restart."""
        conninfo, db = self.fresh_db_named("miglock")
        X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
        holder = subprocess.Popen([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                                   str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        srv = None
        try:
            holder.stdin.write("BEGIN;\nSELECT 1 FROM (SELECT pg_advisory_xact_lock(%d)) x;\n"
                               % PG_MIGRATE_KEY)
            holder.stdin.flush()
            self.assertEqual(holder.stdout.readline().strip(), "1")
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "M",
                                ["--registry", conninfo, "--registry-timeout-ms", "1000"],
                                start_timeout=30)
            reg = srv.json("GET", "/v1/model")[2]["registry"]
            self.assertEqual(reg["status"], "unavailable", reg)
            self.assertIn("statement timeout", reg["error"])
            st, _, e = assign(srv, ["m"], X)
            self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
            st, _, r = srv.json("POST", "/v1/items:encode", body(["m"], X))
            self.assertEqual(st, 200, r)
            holder.stdin.write("COMMIT;\n")
            release(holder)
            holder = None
            st, _, r = assign(srv, ["m"], X)
            self.assertEqual((st, r["results"][0]["created"]), (200, True), r)
        finally:
            if holder:
                release(holder)
            if srv:
                self.assertEqual(srv.stop(), 0)

    def test_statement_timeout(self):
        """A call that waits on a lock another session holds is cancelled by
        PostgreSQL after registry_timeout_ms (the session's statement_timeout)
        and answered 503, while encode serves; once the lock is gone the same
        assign succeeds.  A statement_timeout the operator set (here through
        PGOPTIONS) is kept instead of the server's, shorter or longer: when
        longer, answers are waited for that long too, so that it is still
        PostgreSQL's cancel (which releases the session's locks) that ends the
        wait, not a dropped connection."""
        conninfo, db = self.fresh_db_named("stmt")
        X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
        for k, (extra, env, bound) in enumerate((
                (["--registry-timeout-ms", "800"], None, (0.7, 3.5)),
                ([], {"PGOPTIONS": "-c statement_timeout=300"}, (0.2, 4.0)),
                (["--registry-timeout-ms", "500"], {"PGOPTIONS": "-c statement_timeout=2500"},
                 (2.3, 10)))):
            tid = "t%d" % k
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "T",
                                ["--registry", conninfo, "--registry-connections", "1"] + extra,
                                env=env)
            holder = None
            try:
                self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)
                holder = self.lock_table(db)
                t0 = time.monotonic()
                st, h, r = assign(srv, [tid], X[1:])
                took = time.monotonic() - t0
                self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
                self.assertIn("canceling statement due to statement timeout",
                              r["error"]["message"])
                self.assertIn("retry-after", h)
                self.assertGreater(took, bound[0])
                self.assertLess(took, bound[1], "not the 5 s default")
                m = srv.metrics()
                self.assertEqual(m['semid_registry_timeouts_total{reason="statement_timeout"}'], 1)
                self.assertEqual(m['semid_registry_timeouts_total{reason="no_answer"}'], 0)
                st, _, e = srv.json("POST", "/v1/items:encode",
                                    {"inputs": [{"embedding_b64": T.b64_row(X[1])}]})
                self.assertEqual(st, 200, e)
                holder.stdin.write("COMMIT;\n")
                release(holder)
                holder = None
                st, _, r = assign(srv, [tid], X[1:])
                self.assertEqual(st, 200, r)
                self.assertEqual(r["results"][0]["created"], True)
            finally:
                if holder:
                    release(holder)
                self.assertEqual(srv.stop(), 0)

    def test_id_reads_use_the_id_index(self):
        """Every call first reads its ids.  That read must probe the (kind, id)
        index however few statistics PostgreSQL has: written as `kind = $1 AND
        id = ANY($2)`, the planner (with no statistics yet, or with the
        generic plan it cached while the table was small) walked every row of
        the kind through the sid index instead, 56 ms per call at about 100k
        rows in bench-assign.  The plans are read from PostgreSQL's own log
        (auto_explain)."""
        if not self.pg.own:
            self.skipTest("needs the test's own cluster and its log")
        reg = ["--registry", self.fresh_db("plan"),
               "--registry-connections", "1"]  # one session: one plan cache
        srv, _ = self.start(self.fresh_dir(), {"item": self.tc}, "P", reg, env={
            "PGOPTIONS": "-c session_preload_libraries=auto_explain "
                         "-c auto_explain.log_min_duration=0"})
        n = 20000
        X, _ = T.tie_free_inputs(self.rng, self.tc, n)
        ids = ["plan%05d" % k for k in range(n)]
        log = os.path.join(self.pg.dir, "pg.log")
        try:
            for k in range(8):  # enough executions for a generic plan
                st, _, r = assign(srv, ids[k:k + 1], X[k:k + 1])
                self.assertEqual(st, 200, r)
            for k in range(8, n, 4000):
                st, _, r = assign(srv, ids[k:k + 4000], X[k:k + 4000])
                self.assertEqual(st, 200, r)
            start = os.path.getsize(log)
            st, _, r = assign(srv, ids[1000:1064], X[1000:1064])
            self.assertEqual(st, 200, r)
            self.assertEqual([e["created"] for e in r["results"]], [False] * 64)
        finally:
            self.assertEqual(srv.stop(), 0)
        with open(log, errors="replace") as f:
            f.seek(start)
            text = f.read()
        plans = [b for b in re.split(r"\n(?=\S)", text) if "WHERE kind = $1 AND id = " in b]
        self.assertTrue(plans, "no plan of the id read in the log:\n" + text[-2000:])
        for p in plans:
            self.assertIn("semid_assignment_id", p)
            self.assertNotIn("semid_assignment_sid", p)

    def test_groups_never_lock_the_store_alone(self):
        """The server commits the assign calls that wait for a writer
        together.  On PostgreSQL a transaction of more than 256 advisory locks
        (two per new id) takes the store's global lock exclusive and so runs
        alone, stalling every other writer: the server keeps its groups at
        128 ids.  Six clients send 64-id requests to one writer connection, so
        calls queue; PostgreSQL's log (log_statement) must show the shared
        locks and never the exclusive one."""
        if not self.pg.own:
            self.skipTest("needs the test's own cluster and its log")
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "G",
                            ["--registry", self.fresh_db("groups"), "--registry-connections", "1"],
                            env={"PGOPTIONS": "-c log_statement=all"})
        X, _ = T.tie_free_inputs(self.rng, self.ta, 64)
        log = os.path.join(self.pg.dir, "pg.log")
        start = os.path.getsize(log)
        errors = []

        def client(k):
            conn = srv.conn()
            for r in range(5):
                ids = ["g%d-%d-%02d" % (k, r, i) for i in range(64)]
                st, _, res = assign(srv, ids, X, conn=conn)
                if st != 200:
                    errors.append((st, res))
        try:
            threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(errors, [])
        finally:
            self.assertEqual(srv.stop(), 0)
        with open(log, errors="replace") as f:
            f.seek(start)
            text = f.read()
        self.assertIn("pg_advisory_xact_lock_shared(u.k)", text)
        self.assertNotIn("SELECT pg_advisory_xact_lock(%d)" % PG_GLOBAL_KEY, text)


class TestAssignPostgresSecrets(PgBase):
    """The registry's password, wherever it is given, never shows in the
    server's log or stderr, in an answer, /v1/model or /metrics, whether
    the connection is refused (a wrong password) or made.  The ways that
    keep it out of the process list work: PGPASSWORD, a password file
    (PGPASSFILE), a service file (service=NAME, PGSERVICEFILE; the store is
    then named by the service, not "postgresql:///" as before), and the
    config file; a --registry flag that holds one, or a config file other
    users may read (deploy/systemd installs it 0644), is still taken, with a
    warning (there was none).  "user=... password=..." with the host from
    PGHOST was taken for a SQLite file's name, shown everywhere.  A URI libpq cannot parse is refused (exit 2)
    without quoting its password."""
    PASSWORD = "Pw-s3cret-99"
    WRONG = "Wr0ng-guess-77"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not cls.pg.own:
            return
        cls.pg.trust_only_postgres()
        for sql in ("CREATE ROLE semid_app LOGIN PASSWORD '%s'" % cls.PASSWORD,
                    "CREATE DATABASE semid_secrets OWNER semid_app"):
            subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                            str(cls.pg.port), "-U", "postgres", "-d", "postgres", "-XAtq",
                            "-c", sql], check=True, capture_output=True, timeout=60)

    def run_server(self, d, args, env=None):
        """Start, assign one id, read /v1/model and /metrics, stop: (assign
        status, its body, /v1/model's registry, everything seen as text)."""
        srv, _ = self.start(d, {"item": self.ta}, "S", args, env=env)
        X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
        try:
            st, _, r = assign(srv, ["sec"], X)
            _, _, m = srv.json("GET", "/v1/model")
            _, _, metrics = srv.request("GET", "/metrics")
            _, _, lookup = srv.request("GET", "/v1/items/sec")
        finally:
            self.assertEqual(srv.stop(), 0)
        seen = "\n".join((json.dumps(r), json.dumps(m), metrics.decode(), lookup.decode(),
                          srv.log_text()))
        return st, r, m["registry"], seen

    def assert_secret(self, seen, what):
        for secret in (self.PASSWORD, self.WRONG):
            self.assertNotIn(secret, seen, what)
            self.assertNotIn(urllib.parse.quote(secret), seen, what)

    def test_password_never_shown(self):
        if not self.pg.own:
            self.skipTest("needs the test's own cluster (its pg_hba.conf)")
        d = self.fresh_dir()
        hostport = "127.0.0.1:%d" % self.pg.port
        label = "postgresql://semid_app@%s/semid_secrets" % hostport
        plain = ["--registry", label]
        passfile = os.path.join(d, "pgpass")
        with open(passfile, "w") as f:
            f.write("127.0.0.1:%d:semid_secrets:semid_app:%s\n" % (self.pg.port, self.PASSWORD))
        os.chmod(passfile, 0o600)
        services = os.path.join(d, "pg_service.conf")
        with open(services, "w") as f:
            f.write("[semid]\nhost=127.0.0.1\nport=%d\ndbname=semid_secrets\nuser=semid_app\n"
                    "password=%s\n" % (self.pg.port, self.PASSWORD))
        config = os.path.join(d, "server.json")
        with open(config, "w") as f:
            json.dump({"registry": "postgresql://semid_app:%s@%s/semid_secrets"
                       % (self.PASSWORD, hostport)}, f)
        os.chmod(config, 0o644)  # as deploy/systemd installs it
        private = os.path.join(d, "private.json")
        shutil.copy(config, private)
        os.chmod(private, 0o600)
        flag = "the --registry connection string holds a password"
        readable = ("the config file %s gives registry a connection string that holds a "
                    "password, and other users may read the file (mode 0644)" % config)
        cases = (  # (what, flags, environment, assign status, store label, warning)
            ("in the URI", ["--registry", "postgresql://semid_app:%s@%s/semid_secrets"
                            % (self.PASSWORD, hostport)], None, 200, label, flag),
            ("password=", ["--registry", "host=127.0.0.1 port=%d dbname=semid_secrets "
                           "user=semid_app password=%s" % (self.pg.port, self.PASSWORD)],
             None, 200, label, flag),
            ("password= with the host from PGHOST", ["--registry", "user=semid_app password=%s"
                                                      % self.PASSWORD],
             {"PGHOST": "127.0.0.1", "PGPORT": str(self.pg.port), "PGDATABASE": "semid_secrets"},
             200, "postgresql://semid_app@/", flag),
            ("wrong, in the URI", ["--registry=postgresql://semid_app:%s@%s/semid_secrets"
                                   % (self.WRONG, hostport)], None, 503, label, flag),
            ("PGPASSWORD", plain, {"PGPASSWORD": self.PASSWORD}, 200, label, None),
            ("wrong PGPASSWORD", plain, {"PGPASSWORD": self.WRONG}, 503, label, None),
            ("PGPASSFILE", plain, {"PGPASSFILE": passfile}, 200, label, None),
            ("service", ["--registry", "service=semid"], {"PGSERVICEFILE": services}, 200,
             "postgresql:///?service=semid", None),
            ("config file", ["--config", config], None, 200, label, readable),
            ("config file 0600", ["--config", private], None, 200, label, None))
        for what, args, env, want, store, warned in cases:
            st, r, reg, seen = self.run_server(d, args, env)
            self.assertEqual(st, want, (what, r))
            self.assertEqual(reg["store"], store, what)
            self.assertEqual(reg["status"], "ok" if want == 200 else "unavailable", what)
            if want != 200:
                self.assertIn("password authentication failed", r["error"]["message"], what)
            for warning in (flag, readable):
                self.assertEqual(warning in seen, warning == warned, (what, seen[-3000:]))
            self.assert_secret(seen, what)
        # a URI libpq cannot parse: refused at start, its password unquoted
        p = subprocess.run([T.SERVER, "--model", os.path.join(d, "model.safetensors"),
                            "--registry", "postgresql://semid_app:%s%%zz@%s/db"
                            % (self.PASSWORD, hostport)], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("bad connection string", p.stderr)
        self.assert_secret(p.stdout + p.stderr, "unparsable")


class TestAssignPostgresTls(PgBase):
    """The registry over TLS (sslmode=require), where semid waits for answers
    in poll on a non-blocking connection: a big pipelined assign (64 ids with
    their embeddings, several TLS records per answer), lookups and a list page
    all answer, on sessions PostgreSQL reports as TLS; and a stopped backend
    is still given up and replaced.  (The wait reads before it polls because
    a record libpq has already decrypted does not wake poll; a wait that
    polled first also passed this test three times out of three, so it shows
    the TLS path works, not that particular case.)"""

    @classmethod
    def setUpClass(cls):
        import pwd
        certs = tempfile.mkdtemp(prefix="semid-pg-tls-")
        try:
            pw = pwd.getpwnam("postgres")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", certs + "/key.pem", "-out", certs + "/cert.pem",
                            "-days", "2", "-subj", "/CN=localhost"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            for f in (certs, certs + "/key.pem", certs + "/cert.pem"):
                os.chown(f, pw.pw_uid, pw.pw_gid)
            os.chmod(certs + "/key.pem", 0o600)
        except (KeyError, OSError, subprocess.SubprocessError) as e:
            shutil.rmtree(certs, ignore_errors=True)
            raise unittest.SkipTest("no TLS certificate for PostgreSQL: %s" % e)
        cls.certs = certs
        cls.PG_OPTIONS = ("-c ssl=on -c ssl_cert_file=%s/cert.pem -c ssl_key_file=%s/key.pem"
                          % (certs, certs))
        try:
            super().setUpClass()
        except unittest.SkipTest:
            shutil.rmtree(certs, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.certs, ignore_errors=True)

    def ssl_sessions(self, db):
        out = self.psql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                        " WHERE a.datname = '%s' AND a.application_name = 'semid'" % db,
                        check=True).stdout
        return out.split()

    def test_assign_and_lookups_over_tls(self):
        if not self.pg.own:
            self.skipTest("needs the test's own cluster (with TLS on)")
        conninfo, db = self.fresh_db_named("tls")
        conninfo += " sslmode=require"
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "L",
                            ["--registry", conninfo, "--registry-connections", "1",
                             "--registry-timeout-ms", "1000"])
        X, codes = T.tie_free_inputs(self.rng, self.ta, 66)
        ids = ["tls%02d" % k for k in range(64)]
        stopped = []
        try:
            st, _, r = assign(srv, ids, X[:64])
            self.assertEqual(st, 200, r)
            self.assertEqual([e["codes"] for e in r["results"]], codes[:64].tolist())
            sids = {e["id"]: e["sid"] for e in r["results"]}
            self.assertEqual(len(set(sids.values())), 64)
            st, _, r = assign(srv, ids, X[:64])  # known: read back over TLS
            self.assertEqual({e["id"]: e["sid"] for e in r["results"]}, sids)
            self.assertEqual([e["created"] for e in r["results"]], [False] * 64)
            st, _, g = srv.json("GET", "/v1/items/tls07")
            self.assertEqual((st, g.get("sid")), (200, sids["tls07"]), g)
            st, _, g = srv.json("GET", "/v1/sids/" + sids["tls07"])
            self.assertEqual((st, g.get("id")), (200, "tls07"), g)
            st, _, page = srv.json("GET", "/v1/sids?prefix=&limit=1000")
            self.assertEqual(st, 200, page)
            self.assertEqual(sorted(e["id"] for e in page["entries"]), sorted(ids))
            self.assertEqual(self.ssl_sessions(db), ["t", "t"])  # writer and reader
            self.assertEqual(srv.metrics()['semid_registry_timeouts_total{reason="no_answer"}'],
                             0)
            # a stopped backend over TLS: given up after 1 + 1 s, replaced
            pids = [int(p) for p in self.psql(
                "SELECT pid FROM pg_stat_activity WHERE datname = '%s' AND "
                "application_name = 'semid'" % db, check=True).stdout.split()]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            t0 = time.monotonic()
            st, _, r = assign(srv, ["tls-late"], X[64:65])
            self.assertEqual(st, 200, r)
            self.assertGreaterEqual(time.monotonic() - t0, 2.0)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            self.assertEqual(srv.stop(), 0)


class TestAssignPostgresAsyncCommit(PgBase):
    """A cluster (or database, or role) set to synchronous_commit = off
    acknowledges a commit before its WAL is written, so an assign answered
    200 could vanish in a crash.  The registry's sessions turn it back on.
    With the WAL writer asleep for 10 s, a crash (immediate stop) right after
    the answer loses the assignment unless the commit waited for its WAL."""
    PG_OPTIONS = "-c synchronous_commit=off -c wal_writer_delay=10000"

    def test_acknowledged_survives_a_crash(self):
        if not self.pg.own:
            self.skipTest("needs a cluster of its own settings")
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                            ["--registry", self.fresh_db("async")])
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
            self.assertEqual(assign(srv, ["warm"], X[:1])[0], 200)
            st, _, r = assign(srv, ["crash"], X[1:])
            self.assertEqual((st, r["results"][0]["created"]), (200, True), r)
            self.pg.stop_server()  # immediate: a crash, WAL buffers lost
            self.pg.start_server()
            deadline = time.monotonic() + 30
            while True:
                st, _, e = srv.json("GET", "/v1/items/crash")
                if st != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(st, 200, e)
            self.assertEqual(e["sid"], r["results"][0]["sid"])
        finally:
            # once (CI, sanitized build) this exit was -6: keep its log in the report
            rc = srv.stop()
            self.assertEqual(rc, 0, srv.log_text()[-6000:])


class TestAssignPostgresFullLockTable(PgBase):
    """PostgreSQL's lock table is shared by every connection (by default 64 x
    max_connections entries).  When the advisory locks a transaction needs do
    not fit, it runs again holding the store's global lock alone instead of
    failing.  A cluster with a tiny lock table, most of it held by another
    session: a 128-id assign (129 locks) is answered 200, not 503."""
    PG_OPTIONS = "-c max_locks_per_transaction=10 -c max_connections=10"

    def test_full_lock_table(self):
        if not self.pg.own:
            self.skipTest("needs a cluster of its own settings")
        srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "F",
                            ["--registry", self.pg.conninfo, "--registry-connections", "1"])
        holder = None
        try:
            st, _, r = assign(srv, ["warm"], T.tie_free_inputs(self.rng, self.ta, 1)[0])
            self.assertEqual(st, 200, r)  # the schema exists, the connections are open
            # how many locks fit now, then hold all but 100 of them
            lo, hi = 1, 20000
            while lo < hi:
                mid = (lo + hi + 1) // 2
                ok = self.psql("SELECT count(pg_advisory_xact_lock(g)) FROM "
                               "generate_series(1, %d) g" % mid).returncode == 0
                lo, hi = (mid, hi) if ok else (lo, mid - 1)
            holder = subprocess.Popen([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                                       str(self.pg.port), "-U", "postgres", "-d", "postgres",
                                       "-XAtq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
            holder.stdin.write("SELECT count(pg_advisory_lock(g)) FROM generate_series(1, %d) g;"
                               "\n" % (lo - 100))
            holder.stdin.flush()
            self.assertEqual(holder.stdout.readline().strip(), str(lo - 100))
            self.assertNotEqual(self.psql("SELECT count(pg_advisory_xact_lock(g)) FROM "
                                          "generate_series(900001, 900200) g").returncode, 0,
                                "the lock table still has room for 200")
            full = 'semid_registry_global_lock_total{reason="lock_table_full"}'
            m0 = srv.metrics()
            self.assertEqual(m0[full], 0)
            X, _ = T.tie_free_inputs(self.rng, self.ta, 128)
            ids = ["full%03d" % i for i in range(128)]
            st, _, r = assign(srv, ids, X)
            self.assertEqual(st, 200, r)
            self.assertEqual([e["created"] for e in r["results"]], [True] * 128)
            # operators see the fallback; it is not counted as a lost race
            m1 = srv.metrics()
            self.assertEqual(m1[full], 1)
            self.assertEqual(m1['semid_registry_global_lock_total{reason="size"}'], 0)
            self.assertEqual(m1["semid_registry_retries_total"],
                             m0["semid_registry_retries_total"])
        finally:
            if holder:
                release(holder)
            self.assertEqual(srv.stop(), 0)


class TestLevelsMismatchPostgres(LevelsBase, PgBase):
    def test_levels_mismatch(self):
        self.check_levels_mismatch(["--registry", self.fresh_db("levels")])


if __name__ == "__main__":
    unittest.main(verbosity=2)
