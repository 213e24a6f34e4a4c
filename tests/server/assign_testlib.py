#!/usr/bin/python3
"""What test_assign.py (SQLite) and test_assign_pg.py (PostgreSQL) share: the
request helpers, the book of expected assignments, the servers' base class,
the levels-mismatch check both backends run, and the base class that gives
a PostgreSQL test class its own throwaway cluster.  (Split so that the two
halves run as two suites at once: together they were the longest suite.)
"""
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

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

    def until(self, cond, what, secs=10):
        """Wait for cond() (polled every 0.1 s), failing with @what after
        @secs (times T.SLOW)."""
        deadline = time.monotonic() + secs * T.SLOW
        while not cond():
            self.assertLess(time.monotonic(), deadline, "never: " + what)
            time.sleep(0.1)

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
            self.until(lambda: self.mismatch_shown(srv, ["item"]),
                       "the mismatch was not shown after the reload")
            # logged just after /v1/model and the gauge show it
            warn = (r"level=warn event=registry .*item tower gives 2 levels.*"
                    r"item IDs have 3")
            self.until(lambda: re.search(warn, srv.log_text()),
                       "the mismatch was not logged after the reload")
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
            self.until(lambda: self.mismatch_shown(srv, []),
                       "the mismatch did not clear")
            st, _, r = assign(srv, ["new0"], X[:1])
            self.assertEqual((st, r["results"][0]["created"]), (200, True), r)
        finally:
            self.assertEqual(srv.stop(), 0)
        # a server that starts with the other model says so at start
        T.write_model(model, {"item": two, "user": self.tb}, "L2s")
        srv = T.Server(["--model", model] + FAST + list(reg), d)
        try:
            self.until(lambda: self.mismatch_shown(srv, ["item"]),
                       "the mismatch was not shown at start")
            st, _, e = assign(srv, ["new9"], X2[:1])
            self.assertEqual((st, e["error"]["code"]), (409, "levels_mismatch"), e)
        finally:
            self.assertEqual(srv.stop(), 0)
        # a model without a user tower still shows the stored user IDs'
        # levels (it showed null, until a model with the tower came by)
        T.write_model(model, {"item": self.ta}, "L3i")
        srv = T.Server(["--model", model] + FAST + list(reg), d)
        try:
            self.until(lambda: srv.json("GET", "/v1/model")[2]["registry"]["levels"] ==
                       {"item": 3, "user": len(ru["results"][0]["codes"])},
                       "the user IDs' levels were not shown")
        finally:
            self.assertEqual(srv.stop(), 0)


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

    def psql_db(self, db, sql):
        """@sql in database @db of the test's cluster: its output, stripped."""
        return subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                               str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq", "-c",
                               sql], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()

    def fresh_db_named(self, name):
        """A new database in the test's own cluster: (its connection string,
        its name)."""
        db = "semid_%s_%d" % (name, os.getpid())
        self.psql("CREATE DATABASE " + db, check=True)
        return self.pg.conninfo.replace("dbname=postgres", "dbname=" + db), db

    def fresh_db(self, name):
        """A new database in the test's own cluster: its connection string."""
        return self.fresh_db_named(name)[0]
