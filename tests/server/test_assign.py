#!/usr/bin/python3
"""semid-server's ID registry routes (issue 5) on its SQLite store, against a
real server on 127.0.0.1: POST /v1/{items,users}:assign, GET
/v1/{items,users}/{id}, GET /v1/sids/{sid}, GET /v1/sids?prefix=, DELETE
/v1/{items,users}/{id}.
(test_assign_pg.py and test_assign_pg_down.py run the PostgreSQL store;
assign_testlib.py holds what they share.)

Expectations are computed here, independently of the C code: the codes from
how the inputs were built (tie-free towers: each input sits next to one
codeword per level), and the suffixes from the rule of proto/registry.md
(a new id takes the smallest suffix its codes do not hold yet, in input
order).  Covered: idempotence, colliding codes, stability across a model
swap, reassign, lookups and prefix paging, bad input, a corrupt and a
read-only SQLite file (503 while encode answers 200), a store whose schema a
newer semid wrote (refused at start, exit 2), the SQLite file moved away
under the server and back, several clients assigning overlapping colliding
ids at once, a store locked by another process (assign waits and answers
503, encode and lookups are not held up), SIGKILL in the middle of a stream
of assigns, and a model of another number of levels than the stored IDs
(409 levels_mismatch), and DELETE /v1/{items,users}/{id} (the slot freed,
the embedding gone, admin token, 404, 405 Allow, 503 on a store that is
down, metrics, and SIGKILL right after a 200).

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_assign.py
"""

import json
import os
import re
import signal
import sys
import threading
import time
import unittest
import urllib.parse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402
from assign_testlib import (  # noqa: E402
    FAST, ENCODED, body, assign, assign_concurrently, encoded_since, sid_of, Book, Base,
    LevelsBase)


ADMIN = {"Authorization": "Bearer t"}


def not_a_store(d):
    """A file in @d that no SQLite open takes: a store that cannot be opened."""
    bad = os.path.join(d, "bad.db")
    with open(bad, "wb") as f:
        f.write(b"this is not a SQLite database at all" * 200)
    return bad


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


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
            # (not named: the request log would keep an erased id asked for)
            self.assertEqual(e["error"]["message"], "no such item id")
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

    def test_sid_of_the_other_tower(self):
        """A user's sid looked up without ?tower=user (items of 3 levels,
        users of 2) was told "codes alone? the first ID under them is
        S-0", which sent the client to an item's ID: the answer names the
        tower whose IDs have that many levels."""
        d = self.fresh_dir()
        tu = T.tie_free_tower(self.rng, ks=(16, 8))
        srv, _ = self.start(d, {"item": self.ta, "user": tu}, "A")
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
            Xu, _ = T.tie_free_inputs(self.rng, tu, 1)
            item = assign(srv, ["i"], X)[2]["results"][0]["sid"]
            user = assign(srv, ["u"], Xu, tower="users")[2]["results"][0]["sid"]
            self.assertEqual((item.count("-"), user.count("-")), (3, 2))
            for path, msg in (
                    ("/v1/sids/" + user,
                     'sid "%s" has 2 levels and a suffix, as user IDs have, but item IDs have '
                     '3: look it up with ?tower=user (or, if it is the codes alone of an '
                     'item, the first ID under them is %s-0)' % (user, user)),
                    ("/v1/sids/%s?tower=user" % item,
                     'sid "%s" has 3 levels and a suffix, as item IDs have, but user IDs have '
                     '2: look it up with ?tower=item' % item),
                    ("/v1/sids/1-2-3-4-0",  # neither tower's: as before
                     'sid "1-2-3-4-0" has 4 levels and a suffix; item IDs have 3 levels and '
                     'a suffix')):
                st, _, e = srv.json("GET", path)
                self.assertEqual((st, e["error"]), (400, {"code": "invalid_argument",
                                                          "message": msg}), path)
            self.assertEqual(srv.json("GET", "/v1/sids/%s?tower=user" % user)[2]["id"], "u")
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_list_of_the_other_tower(self):
        """Paging /v1/sids for users' IDs without ?tower=user (items of 2
        levels, users of 3): the prefix of a user's codes was told
        'prefix "a-b-c" has 3 levels; item IDs have 2', and a user page's
        cursor sent on without ?tower=user the same, with no word of
        ?tower=user; a sid looked up while no item is stored was "not found
        (no item IDs stored yet)".  Each now names the tower that fits, and
        only when one does."""
        d = self.fresh_dir()
        ti = T.tie_free_tower(self.rng, ks=(16, 8), scales=(10.0, 1.0))
        srv, _ = self.start(d, {"item": ti, "user": self.ta}, "A")

        def err(path, status, msg):
            st, _, e = srv.json("GET", path)
            self.assertEqual((st, e.get("error")), (status, {
                "code": "invalid_argument" if status == 400 else "not_found",
                "message": msg}), path)
        try:
            Xu, _ = T.tie_free_inputs(self.rng, self.ta, 3)
            users = sorted((r["sid"] for r in
                            assign(srv, ["u1", "u2", "u3"], Xu, tower="users")[2]["results"]),
                           key=lambda sid: [int(c) for c in sid.split("-")])  # paging's order
            user = users[0]
            codes = user.rsplit("-", 1)[0]
            # no item stored yet: a user's sid is 404, a prefix an empty page
            err("/v1/sids/" + user, 404,
                "sid %s: not found (no item IDs stored yet), but it has 3 levels and a "
                "suffix, as user IDs have: look it up with ?tower=user" % user)
            err("/v1/sids/1-2-0", 404, "sid 1-2-0: not found (no item IDs stored yet)")
            st, _, page = srv.json("GET", "/v1/sids?prefix=" + codes)
            self.assertEqual((st, page["entries"]), (200, []))
            X, _ = T.tie_free_inputs(self.rng, ti, 1)
            item = assign(srv, ["i"], X)[2]["results"][0]["sid"]
            self.assertEqual((item.count("-"), user.count("-")), (2, 3))
            err("/v1/sids?prefix=" + codes, 400,
                'prefix "%s" has 3 levels; item IDs have 2 (a prefix is codes only, without '
                'the suffix), but user IDs have 3: list those with ?tower=user' % codes)
            st, _, page = srv.json("GET", "/v1/sids?tower=user&prefix=" + codes)
            self.assertEqual([e["sid"] for e in page["entries"]], [user])
            st, _, page = srv.json("GET", "/v1/sids?limit=1&tower=user")
            self.assertEqual((st, page["next_cursor"]), (200, user), page)
            err("/v1/sids?limit=1&cursor=" + user, 400,
                'cursor "%s" has 3 levels; item IDs have 2, but user IDs have 3: a cursor '
                'goes on the listing it came from, so send ?tower=user with it' % user)
            err("/v1/sids?limit=1&tower=user&cursor=" + item, 400,
                'cursor "%s" has 2 levels; user IDs have 3, but item IDs have 2: a cursor '
                'goes on the listing it came from, so send ?tower=item with it' % item)
            st, _, page = srv.json("GET", "/v1/sids?limit=1&tower=user&cursor=" + user)
            self.assertEqual([e["sid"] for e in page["entries"]], users[1:2])
            # neither tower's: as before
            err("/v1/sids?prefix=1-2-3-4", 400,
                'prefix "1-2-3-4" has 4 levels; item IDs have 2')
            err("/v1/sids?prefix=1-2-3-4&tower=user", 400,
                'prefix "1-2-3-4" has 4 levels; user IDs have 3 (a prefix is codes only, '
                'without the suffix)')
            err("/v1/sids?cursor=1-2-3-4-0", 400,
                'cursor "1-2-3-4-0" has 4 levels; item IDs have 2')
            err("/v1/sids?cursor=7-0", 400, 'cursor "7-0" has 1 level; item IDs have 2')
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_ids_in_the_path(self):
        """proto/api.md's rules for {id} in the path, as a client reads them:
        an id percent-encoded as a path segment (quote(id, safe=""),
        encodeURIComponent) comes back as the id assigned in JSON, for GET
        and DELETE; decoded once; '+' a plus (so a form encoder's "a+b" for
        "a b" names the id "a+b", another one); '/' raw or as %2F; a '%'
        without two hex digits 400 (it was taken as itself), so a '%' of an
        id is sent as %25; bytes that are not UTF-8 400; HEAD is GET
        without the body."""
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
        try:
            # (byte for byte, proto/registry.md: NFC and NFD, case, spaces)
            ids = ["a b", "a+b", "sku/1", "a%2Fb", "100%", "q?x=1#f", "\u00e9\u20ac\U0001d11e",
                   " lead", "trail ", "..", "e" * 256, "\u00e9" * 128, "caf\u00e9", "cafe\u0301",
                   "SKU/1", "sku/1 "]
            X, _ = T.tie_free_inputs(self.rng, self.ta, len(ids))
            st, _, res = assign(srv, ids, X)
            self.assertEqual(st, 200, res)
            sid = {r["id"]: r["sid"] for r in res["results"]}
            self.assertEqual(sorted(sid), sorted(ids))
            self.assertEqual(len(set(sid.values())), len(ids))  # each its own ID
            for i in ids:
                st, _, e = srv.json("GET", "/v1/items/" + urllib.parse.quote(i, safe=""))
                self.assertEqual((st, e.get("id"), e.get("sid")), (200, i, sid[i]), i)
            # HEAD: GET's status and headers, no body
            st, h, e = srv.request("GET", "/v1/items/sku%2F1")
            self.assertEqual(st, 200)
            st, hh, data = srv.request("HEAD", "/v1/items/sku%2F1")
            self.assertEqual((st, data, hh["content-length"]), (200, b"", str(len(e))))
            self.assertEqual(hh["content-type"], h["content-type"])
            self.assertEqual(srv.request("HEAD", "/v1/items/sku%2F2")[0], 404)
            for path, want in (("a+b", "a+b"), ("a%20b", "a b"), ("sku/1", "sku/1"),
                               ("sku%2f1", "sku/1"), ("a%252Fb", "a%2Fb"), ("100%25", "100%"),
                               ("%2e%2E", "..")):
                st, _, e = srv.json("GET", "/v1/items/" + path)
                self.assertEqual((st, e.get("id")), (200, want), path)
            for path, msg in (("%FF", "id: invalid UTF-8 at byte offset 0"),
                              ("%C3", "id: invalid UTF-8 at byte offset 0"),
                              ("e" * 257, "id is 257 bytes, the limit is 256"),
                              ("100%", 'the path has "%", a "%" not followed by two hex digits '
                                       '(RFC 3986 2.1); send a "%" of an id or parameter as %25')):
                st, _, e = srv.json("GET", "/v1/items/" + path)
                self.assertEqual((st, e["error"]["message"]), (400, msg), path)
                # a DELETE's the same (it said "input 0: id: ...")
                st, _, e = srv.json("DELETE", "/v1/items/" + path, headers=ADMIN)
                self.assertEqual((st, e["error"]["message"]), (400, msg), path)
            # a form encoder's "a+b" for "a b" deletes the id "a+b"
            st, _, e = srv.json("DELETE", "/v1/items/" + urllib.parse.quote_plus("a b"),
                                headers=ADMIN)
            self.assertEqual((st, e["id"], e["sid"]), (200, "a+b", sid["a+b"]))
            for i in ids:
                if i == "a+b":
                    continue
                st, _, e = srv.json("DELETE", "/v1/items/" + urllib.parse.quote(i, safe=""),
                                    headers=ADMIN)
                self.assertEqual((st, e.get("id"), e.get("deleted")), (200, i, True), i)
            st, _, page = srv.json("GET", "/v1/sids")
            self.assertEqual((st, page["entries"]), (200, []))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_requests_refused_before_routing_log_no_id(self):
        """An erasure (DELETE /v1/users/ID) refused before it was routed, by
        libmicrohttpd itself (a malformed header line, a bad Content-Length,
        headers too long) or for its framing (no Host, two), was logged with
        route=/v1/users/ID: the request log, which never names an id, held
        the one being erased.  Such a line names the route,
        /v1/users/{id}."""
        import socket
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
        try:
            for target, head in (
                    (b"/v1/users/erase-me-0", b"Host: x\r\nbad header line\r\n"),
                    (b"/v1/items/erase-me-1", b"Host: x\r\nContent-Length: -5\r\n"),
                    (b"/v1/users/erase-me-2?x=1", b"Host: x\r\nX: " + b"a" * 40000 + b"\r\n"),
                    (b"/v1/users/erase-me-3", b""), (b"/v1/sids/1-2-3-4", b"Host: x\r\nHost: y\r\n")):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                try:
                    s.sendall(b"DELETE %s HTTP/1.1\r\nAuthorization: Bearer t\r\n%s\r\n" % (
                        target, head))
                    answer = T.read_to_eof(s)
                except ConnectionError:  # closed with the long header unread
                    answer = b"HTTP/1.1 431 "
                finally:
                    s.close()
                self.assertRegex(answer, rb"^HTTP/1.1 4(00|31) ")
            self.until(lambda: len(re.findall(r"event=request method=\S* route=/v1/(users|items|"
                                              r"sids)/", srv.log_text())) >= 5,
                       "the five request lines")
            log = srv.log_text()
            self.assertNotIn("erase-me", log)
            self.assertNotIn("1-2-3-4", log)
            self.assertEqual(log.count("route=/v1/users/{id} status=4"), 3, log)
            self.assertEqual(log.count("route=/v1/items/{id} status=400"), 1, log)
            self.assertEqual(log.count("route=/v1/sids/{sid} status=400"), 1, log)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_invalid_id_not_logged(self):
        """An erasure's id with a line's end left on it (a CRLF file read
        line by line) is 400, and neither its answer nor the request log
        names it (the log never holds an id, proto/api.md), nor an
        assign's: the message
        said 'id "alice@example.com\\r": control character ...', and the
        log kept every id of the erasure."""
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
        try:
            ctl = "id: control character 0x0d at byte offset 17"
            for method, path, req, msg in (
                    ("DELETE", "/v1/users/alice%40example.com%0D", None, ctl),
                    ("GET", "/v1/users/alice%40example.com%0D", None, ctl),
                    ("DELETE", "/v1/items/alice%40example.com" + "x" * 250, None,
                     "id is 267 bytes, the limit is 256"),
                    ("POST", "/v1/users:delete", {"ids": ["ok", "alice@example.com\r"]},
                     "ids[1]: " + ctl),
                    ("POST", "/v1/items:assign",  # (no user tower: items')
                     {"inputs": [{"id": "alice@example.com\r", "embedding": [0] * 16}]},
                     "inputs[0].id: " + ctl)):
                st, _, e = srv.json(method, path, req, headers=ADMIN)
                self.assertEqual((st, e["error"]), (400, {"code": "invalid_argument",
                                                          "message": msg}), path)
            self.until(lambda: srv.log_text().count("status=400") >= 5, "the five request lines")
            self.assertNotIn("alice", srv.log_text())
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
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
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
            st, h, e = srv.json("PUT", "/v1/items/x")
            self.assertEqual((st, h.get("allow")), (405, "GET, HEAD, DELETE, OPTIONS"))
            st, h, e = srv.json("DELETE", "/v1/sids/1-2-3-0", headers=ADMIN)
            self.assertEqual((st, h.get("allow")), (405, "GET, HEAD, OPTIONS"))
            # delete is an admin route; a user id needs no user tower
            # (test_delete_needs_no_tower): its 404 is the id's
            st, _, e = srv.json("DELETE", "/v1/items/x")
            self.assertEqual((st, e["error"]["code"]), (403, "permission_denied"), e)
            st, _, e = srv.json("DELETE", "/v1/users/x", headers=ADMIN)
            self.assertEqual((st, e["error"]["message"]),
                             (404, "no such user id: nothing deleted"), e)
            st, _, e = srv.json("DELETE", "/v1/items/x?tower=user", headers=ADMIN)
            self.assertEqual(st, 400, e)
            # integer ids are stored as their decimal text
            st, _, r = srv.json("POST", "/v1/items:assign",
                                {"inputs": [{"id": 42, "embedding_b64": T.b64_row(X[0])}]})
            self.assertEqual((st, r["results"][0]["id"]), (200, "42"))
            # nothing of the refused requests was stored
            st, _, page = srv.json("GET", "/v1/sids")
            self.assertEqual([e["id"] for e in page["entries"]], ["42"])
        finally:
            self.assertEqual(srv.stop(), 0)

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
        """A store that cannot be opened is an outage: 503 with Retry-After.
        --registry none is no outage: 501 unimplemented without Retry-After
        on every registry route (a client retried the 503 it was for ever),
        decided from the route alone; encode and readiness unaffected."""
        d = self.fresh_dir()
        bad = not_a_store(d)
        X, codes = T.tie_free_inputs(self.rng, self.ta, 2)
        disabled = ("the ID registry is disabled on this server (semid-server --registry "
                    "none): it encodes, but assigns, looks up and deletes no ids; send this "
                    "request to a server started with a registry")
        for extra in (["--registry", bad], ["--registry", "none"],
                      ["--registry", "None"]):  # not a file 'None'
            srv, _ = self.start(d, {"item": self.ta}, "A", extra + ["--admin-token", "t"])
            try:
                st, h, e = assign(srv, ["a", "b"], X)
                if bad in extra:
                    self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
                    self.assertIn("retry-after", h)
                    self.assertIn(bad, e["error"]["message"])
                    st, _, e = srv.json("GET", "/v1/items/a")
                    self.assertEqual(st, 503, e)
                    st, _, e = srv.json("DELETE", "/v1/items/a", headers=ADMIN)
                    self.assertEqual((st, e["error"]["code"]), (503, "unavailable"), e)
                else:
                    self.assertEqual((st, e["error"]["code"], e["error"]["message"]),
                                     (501, "unimplemented", disabled), e)
                    self.assertNotIn("retry-after", h)
                    one = body(["a"], X[:1])
                    for method, path, req, hdrs in (
                            ("POST", "/v1/users:assign", one, {}),  # no user tower: still 501
                            ("GET", "/v1/items/a", None, {}), ("HEAD", "/v1/users/a", None, {}),
                            ("GET", "/v1/sids/1-2-0", None, {}),
                            ("GET", "/v1/sids?towr=user", None, {}),  # before the query
                            ("GET", "/v1/sids", None, {}),
                            ("DELETE", "/v1/items/a", None, ADMIN),
                            ("POST", "/v1/items:delete", {"ids": ["a"]}, ADMIN),
                            ("POST", "/v1/users:delete", b"not json", ADMIN)):
                        st, h, raw = srv.request(method, path, req, hdrs)
                        self.assertEqual((st, "retry-after" in h), (501, False), (method, path))
                        if method != "HEAD":
                            self.assertEqual(json.loads(raw)["error"]["message"], disabled)
                    # the method, and the admin token, first
                    st, h, _ = srv.request("GET", "/v1/items:assign")
                    self.assertEqual((st, h.get("allow")), (405, "POST, OPTIONS"))
                    self.assertEqual(srv.request("DELETE", "/v1/items/a")[0], 403)
                    # a 501 counts as a server error in the request metrics,
                    # not as a registry call
                    m = srv.metrics()
                    self.assertEqual(m['semid_requests_total{route="/v1/items/{id}",code="501"}'],
                                     2)
                    self.assertNotIn("semid_registry_up", m)
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

    def test_malformed_lookup_refused_while_store_down(self):
        """An id, sid, prefix or cursor that can never be valid is 400 also
        while the store cannot be opened, as a bad assign or POST :delete
        is: it was 503 with Retry-After, which a client retries for ever.
        Well-formed ones still get the 503."""
        d = self.fresh_dir()
        bad = not_a_store(d)
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--registry", bad, "--admin-token", "t"])
        try:
            field = "(fields are non-negative integers joined by '-')"
            for method, path, msg in (
                    ("GET", "/v1/items/%FF", "id: invalid UTF-8 at byte offset 0"),
                    ("HEAD", "/v1/users/%C3", None),
                    ("DELETE", "/v1/users/%FF", "id: invalid UTF-8 at byte offset 0"),
                    ("DELETE", "/v1/items/" + "e" * 257, "id is 257 bytes, the limit is 256"),
                    ("GET", "/v1/items/a%09", "id: control character 0x09 at byte offset 1"),
                    ("GET", "/v1/sids/7--1-0", 'sid "7--1-0": field 2 is empty ' + field),
                    ("GET", "/v1/sids/1-02-0?tower=user", 'sid "1-02-0": field 2 has a leading zero'),
                    ("GET", "/v1/sids?prefix=7-", 'prefix "7-": ends with \'-\''),
                    ("GET", "/v1/sids?cursor=zz&tower=user",
                     'cursor: sid "zz": field 1 is not a non-negative decimal integer')):
                st, h, raw = srv.request(method, path, None,
                                         ADMIN if method == "DELETE" else {})
                self.assertEqual((st, "retry-after" in h), (400, False), (method, path, raw))
                if msg is not None:
                    self.assertEqual(json.loads(raw)["error"], {"code": "invalid_argument",
                                                                "message": msg}, path)
            for method, path in (("GET", "/v1/items/a"), ("DELETE", "/v1/items/a"),
                                 ("GET", "/v1/sids/7-1-0"), ("GET", "/v1/sids?prefix=7&cursor=7-1-0")):
                st, h, raw = srv.request(method, path, None, ADMIN if method == "DELETE" else {})
                self.assertEqual((st, "retry-after" in h), (503, True), (method, path, raw))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_every_route_flagged_registry_answers_501_without_one(self):
        """Which routes --registry none answers 501 is the registry flag of
        server/http.c's route tables (it was a hand list beside them, which
        a new registry route could miss: served on a server with no store).
        Read from the tables here: every route there is asked, with each of
        its methods, and a flagged one answers 501 unimplemented, another
        never does; the flags agree with proto/openapi.json's "registry"
        tag and its 501s."""
        with open(os.path.join(ROOT, "server", "http.c")) as f:
            src = f.read()
        table = re.search(r"\} routes\[\] = \{(.*?)\n\};", src, re.S).group(1)
        params = re.search(r"\} param_routes\[\] = \{(.*?)\n\};", src, re.S).group(1)
        # (template, methods, registry flag)
        routes = [(p, ["POST"] if post == "1" else ["GET", "HEAD"], flag == "1")
                  for p, post, flag in re.findall(
                      r"\{\"([^\"]+)\", SRV_ROUTE_\w+, ([01]), [01], ([01])\}", table)]
        routes += [(p + "{x}", ["GET", "HEAD"] + (["DELETE"] if p != "/v1/sids/" else []),
                    flag == "1")
                   for p, flag in re.findall(r"\{\"([^\"]+)\", SRV_ROUTE_\w+, ([01])\}", params)]
        self.assertEqual(len(routes), table.count("SRV_ROUTE_") + params.count("SRV_ROUTE_"))
        self.assertGreaterEqual(sum(r[2] for r in routes), 8)  # the scan found the flags
        with open(os.path.join(ROOT, "proto", "openapi.json")) as f:
            spec = json.load(f)
        for template, methods, flag in routes:
            doc = [(m.upper(), op) for t, item in spec["paths"].items()
                   if re.sub(r"\{\w+\}$", "{x}", t) == template
                   for m, op in item.items() if isinstance(op, dict) and "responses" in op]
            self.assertTrue(doc, template)
            for method, op in doc:
                self.assertEqual(("registry" in op.get("tags", []), "501" in op["responses"]),
                                 (flag, flag), (method, template))
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--registry", "none",
                                                         "--admin-token", "t"])
        try:
            for template, methods, flag in routes:
                path = template.replace("{x}", "a-1")
                for method in methods:
                    st, h, raw = srv.request(method, path, b"{}" if method == "POST" else None,
                                             dict(ADMIN, **{"Content-Type": "application/json"}))
                    if flag:
                        self.assertEqual((st, "retry-after" in h), (501, False),
                                         (method, path, raw))
                        if method != "HEAD":
                            self.assertEqual(json.loads(raw)["error"]["code"], "unimplemented")
                    else:
                        self.assertNotEqual(st, 501, (method, path, raw))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_calls_refused_before_the_store_are_timed(self):
        """A store call that fails before it reaches the store (no handle:
        a file that cannot be opened, and the second between two attempts
        to open it) counted in semid_registry_errors_total but not in
        semid_registry_duration_seconds, so failed calls outnumbered calls
        and the share that failed, errors / duration_count, passed 1.  Each
        is a call of its own, timed with what it took."""
        d = self.fresh_dir()
        bad = not_a_store(d)
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--registry", bad, "--admin-token", "t"])
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
            for _ in range(3):
                self.assertEqual(assign(srv, ["a"], X)[0], 503)
                self.assertEqual(srv.json("GET", "/v1/items/a")[0], 503)
                self.assertEqual(srv.json("DELETE", "/v1/items/a", headers=ADMIN)[0], 503)
            m = srv.metrics()
            # three assigns and three deletes (the writes), three lookups
            for op, n in (("assign", 6), ("lookup", 3)):
                self.assertEqual((m['semid_registry_errors_total{op="%s"}' % op],
                                  m['semid_registry_duration_seconds_count{op="%s"}' % op]),
                                 (n, n), op)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_registry_errors_count_store_failures_only(self):
        """semid_registry_errors_total counts the store's failures: an entry
        it cannot read (500; an outage is counted too, test_assign_pg).  A
        miss (an unknown id or sid, a delete of one) or a bad request was
        counted as an error, so a dashboard showed the clients' misses as
        the store failing; they are in semid_requests_total by code."""
        import sqlite3
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A",
                            ["--admin-token", "t", "--registry-timeout-ms", "5000"])
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
            self.assertEqual(assign(srv, ["a"], X)[0], 200)
            for method, path, req, want in (
                    ("GET", "/v1/items/nope", None, 404), ("GET", "/v1/users/nope", None, 404),
                    ("HEAD", "/v1/items/nope", None, 404),
                    ("GET", "/v1/sids/0-0-0-9", None, 404), ("GET", "/v1/sids/x-1", None, 400),
                    ("GET", "/v1/sids?prefix=x", None, 400),
                    ("DELETE", "/v1/items/nope", None, 404),
                    ("POST", "/v1/items:delete", {"ids": ["nope"]}, 200),
                    ("GET", "/v1/items/a", None, 200)):
                st, _, r = srv.request(method, path, req, ADMIN)
                self.assertEqual(st, want, (method, path, r))
            m = srv.metrics()
            self.assertEqual((m['semid_registry_errors_total{op="lookup"}'],
                              m['semid_registry_errors_total{op="assign"}']), (0, 0))
            self.assertEqual(m['semid_requests_total{route="/v1/items/{id}",code="404"}'], 3)
            with sqlite3.connect(os.path.join(d, "semid-registry.db")) as c:
                c.execute("UPDATE semid_assignment SET codes = X'01' WHERE id = 'a'")
            self.assertEqual(srv.json("GET", "/v1/items/a")[0], 500)
            self.assertEqual(assign(srv, ["a"], X)[0], 500)
            m = srv.metrics()
            self.assertEqual((m['semid_registry_errors_total{op="lookup"}'],
                              m['semid_registry_errors_total{op="assign"}']), (1, 1))
            self.assertEqual(m["semid_registry_up"], 1)
            # two requests that meet the damaged entry in one group's call
            # are one failed call (they were two errors for one call timed)
            db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                out = []
                th = [threading.Thread(target=lambda ids: out.append(
                    assign(srv, ids, X, conn=srv.conn(60))), args=(ids,))
                    for ids in (["b"], ["a"], ["a"])]
                th[0].start()
                time.sleep(0.4)  # "b"'s group waits on the lock; the others queue
                th[1].start()
                th[2].start()
                time.sleep(0.4)
                db.execute("ROLLBACK")
                for t in th:
                    t.join(60)
            finally:
                db.close()
            self.assertEqual(sorted(st for st, _, _ in out), [200, 500, 500], out)
            m = srv.metrics()
            self.assertEqual((m['semid_registry_errors_total{op="assign"}'],
                              m['semid_registry_duration_seconds_count{op="assign"}']), (2, 6))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_post_routes_take_no_query(self):
        """The POST routes' options are in the body: a query was taken and
        quietly ignored, so ?reassign=true answered the stored ID unmoved,
        ?top_k=4 gave no alternatives and an admin's items:delete?tower=user
        deleted from the item tower.  Refused now, as the lookups' unknown
        parameters are, before anything is done."""
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
        X, codes = T.tie_free_inputs(self.rng, self.ta, 2)
        none = 'unknown query parameter "%s" (this route takes none)'
        try:
            self.assertEqual(assign(srv, ["a"], X[:1])[0], 200)
            for method, path, payload, headers, name in (
                    ("POST", "/v1/items:assign?reassign=true", body(["a"], X[1:2]), {}, "reassign"),
                    ("POST", "/v1/items:encode?top_k=4", body(["a"], X[:1]), {}, "top_k"),
                    ("POST", "/v1/items:delete?tower=user", {"ids": ["a"]}, ADMIN, "tower"),
                    ("POST", "/v1/admin/reload?now", None, ADMIN, "now")):
                with self.subTest(path=path):
                    st, _, e = srv.json(method, path, payload, headers=headers)
                    self.assertEqual((st, e["error"]["code"], e["error"]["message"]),
                                     (400, "invalid_argument", none % name))
            st, _, e = srv.json("POST", "/v1/items:encode?x=%00", body(["a"], X[:1]))
            self.assertEqual((st, e["error"]["message"]),
                             (400, "the path or query has %00 (a NUL byte), which no id, sid "
                              "or parameter may hold"))
            # nothing was moved or deleted
            st, _, r = srv.json("GET", "/v1/items/a")
            self.assertEqual((st, r["codes"]), (200, codes[0].tolist()))
        finally:
            self.assertEqual(srv.stop(), 0)

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
            popen = T.as_nobody(T.SERVER)
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

    def test_calls_queued_behind_a_timeout_are_no_calls(self):
        """Requests queued behind a store call that waited out
        registry_timeout_ms get its 503 at once, without a call of their
        own.  Assigns so answered were not counted in
        semid_registry_errors_total, while lookups and deletes were, one
        each: four assigns refused were one error, four lookups four, and
        the errors of the lookups' lane outnumbered its timed calls.  The
        counter counts store calls, as semid_registry_duration_seconds does,
        for every op; the requests refused are in semid_requests_total."""
        import sqlite3
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A",
                            ["--registry-timeout-ms", "2000", "--registry-probe-s", "0",
                             "--admin-token", "t"])
        X, _ = T.tie_free_inputs(self.rng, self.ta, 4)
        db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None)

        def queue(first, rest):
            out = [None] * (1 + len(rest))

            def run(k, f):
                out[k] = f(srv.conn(60))
            th = [threading.Thread(target=run, args=(0, first))]
            th[0].start()
            time.sleep(0.3)  # the first waits on the lock; the rest queue behind it
            for k, f in enumerate(rest, 1):
                th.append(threading.Thread(target=run, args=(k, f)))
                th[-1].start()
            for t in th:
                t.join(60)
            for st, _, r in out:
                self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
                self.assertIn("locked", r["error"]["message"])

        try:
            self.assertEqual(assign(srv, ["a"], X[:1])[0], 200)
            db.execute("BEGIN IMMEDIATE")

            def delete(c):
                return srv.json("DELETE", "/v1/items/a", headers=ADMIN, conn=c)

            def get(c):
                return srv.json("GET", "/v1/items/a", conn=c)
            queue(delete, [get, delete] * 4)
            queue(lambda c: assign(srv, ["b"], X[1:2], conn=c),
                  [lambda c, k=k: assign(srv, ["c%d" % k], X[2:3], conn=c) for k in range(4)])
            # a request is counted once its last byte is written, which may
            # be after its client read the answer
            self.until(lambda: sum(v for k, v in srv.metrics().items()
                                   if k.startswith("semid_requests_total{")
                                   and 'code="503"' in k) >= 14, "the 14 503s counted")
            m = srv.metrics()
            self.assertEqual(m['semid_registry_timeouts_total{reason="busy"}'], 2)
            self.assertEqual((m['semid_requests_total{route="/v1/items/{id}",code="503"}'],
                              m['semid_requests_total{route="/v1/items:assign",code="503"}']),
                             (9, 5))
            # a delete and an assign group failed; the assign "a" went through
            self.assertEqual((m['semid_registry_errors_total{op="assign"}'],
                              m['semid_registry_duration_seconds_count{op="assign"}'],
                              m['semid_registry_errors_total{op="lookup"}'],
                              m['semid_registry_duration_seconds_count{op="lookup"}']),
                             (2, 3, 0, 0))
            self.assertEqual(m["semid_registry_up"], 0)
            db.execute("ROLLBACK")
            self.assertEqual(srv.json("GET", "/v1/items/a")[0], 200)
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

    def test_delete_ids_waiting_for_the_store_are_bounded(self):
        """POST /v1/items:delete holds an entry (632 bytes) for each id
        while its store call runs, counted in body_memory_bytes as an
        assign's rows are: with the store held up and a delete of 250 ids
        waiting for it, a delete of 200 more is refused 503 with Retry-After
        (uncounted, the two held 280 KB beside a 250 KB bound); once the lock
        goes, the first is answered, the count is back to 0, and the second
        goes through."""
        srv, X, codes, db = self.start_beside_store(
            "M", ["--admin-token", "t", "--max-body-bytes", "100000", "--body-memory-bytes",
                  "250000", "--max-inputs", "1000"], 450)
        out = {}
        t = None
        try:
            ids = ["d%d" % i for i in range(450)]
            for k in range(0, 450, 150):
                self.assertEqual(assign(srv, ids[k:k + 150], X[k:k + 150])[0], 200)
            db.execute("BEGIN IMMEDIATE")
            t = threading.Thread(target=lambda: out.update(a=srv.json(
                "POST", "/v1/items:delete", {"ids": ids[:250]}, headers=ADMIN)))
            t.start()
            deadline = time.monotonic() + 20 * T.SLOW
            while (srv.metrics()["semid_request_body_bytes"] < 250 * 632
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            self.assertGreaterEqual(srv.metrics()["semid_request_body_bytes"], 250 * 632)
            st, h, r = srv.json("POST", "/v1/items:delete", {"ids": ids[250:]}, headers=ADMIN)
            self.assertEqual((st, h.get("retry-after")), (503, "1"), r)
            self.assertRegex(r["error"]["message"],
                             r"^the decoded request \(\d+ bytes\) would take the request "
                             r"bodies, decoded requests and answers held past "
                             r"body_memory_bytes \(250000\); retry later$")
            db.execute("ROLLBACK")
            t.join(30)
            st, _, r = out["a"]
            self.assertEqual((st, r["deleted"]), (200, 250), r)
            deadline = time.monotonic() + 5 * T.SLOW
            while srv.metrics()["semid_request_body_bytes"] and time.monotonic() < deadline:
                time.sleep(0.02)
            self.assertEqual(srv.metrics()["semid_request_body_bytes"], 0)
            st, _, r = srv.json("POST", "/v1/items:delete", {"ids": ids[250:]}, headers=ADMIN)
            self.assertEqual((st, r["deleted"]), (200, 200), r)
        finally:
            if t:
                t.join(30)
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

    def test_idle_outage_seen_by_the_probe(self):
        """With no request coming, an outage of the store showed nowhere:
        semid_registry_up stayed 1 and GET /v1/model said "ok" until some
        request failed.  After registry_probe_s without a store call the
        server reads the store: the file moved away while nothing is asked
        turns the gauge to 0 and /v1/model to unavailable, naming the file,
        with a warn line; moved back, both recover, again with no request
        (a scrape is not a store call)."""
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--registry-probe-s", "1"])
        db = os.path.join(d, "semid-registry.db")
        X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
        probes = 'semid_registry_probes_total{result="%s"}'
        until = self.until
        try:
            self.assertEqual(assign(srv, ["a"], X[:1])[0], 200)
            until(lambda: srv.metrics()[probes % "ok"] >= 1, "a probe of the healthy store")
            self.assertEqual(srv.metrics()["semid_registry_up"], 1)
            for f in ("", "-wal", "-shm"):
                os.rename(db + f, db + ".away" + f)
            until(lambda: srv.metrics()["semid_registry_up"] == 0, "the outage seen")
            self.assertGreaterEqual(srv.metrics()[probes % "unavailable"], 1)
            reg = srv.json("GET", "/v1/model")[2]["registry"]
            self.assertEqual(reg["status"], "unavailable", reg)
            self.assertIn("deleted or moved away", reg["error"])
            until(lambda: "probe of the idle store: registry " in srv.log_text(), "its log line")
            self.assertIn("level=warn event=registry", srv.log_text())
            for f in ("", "-wal", "-shm"):
                os.rename(db + ".away" + f, db + f)
            until(lambda: srv.metrics()["semid_registry_up"] == 1, "the store back")
            self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["status"], "ok")
            until(lambda: "it answers reads again" in srv.log_text(), "its log line")
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

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


class TestDeleteSqlite(Base):
    def assign_four(self, srv):
        """Ids a, b, c and e given one code tuple (suffixes 0..3): -> its
        input and codes."""
        X, codes = T.tie_free_inputs(self.rng, self.ta, 1)
        st, _, r = assign(srv, ["a", "b", "c", "e"], np.repeat(X, 4, axis=0))
        self.assertEqual([x["suffix"] for x in r["results"]], [0, 1, 2, 3], r)
        return X, codes

    def test_emptied_kind_keeps_its_levels(self):
        """proto/api.md: a kind's number of levels, once its first ID is
        stored, is kept after every ID of it is deleted (GET /v1/model,
        a sid of another length 400, not the 404 of a kind never given
        an ID)."""
        d = self.fresh_dir()
        srv, _ = self.start(d, {"item": self.ta}, "A", ["--admin-token", "t"])
        try:
            self.assertEqual(srv.json("GET", "/v1/sids/1-2-0")[0], 404)  # none yet
            self.assign_four(srv)
            st, _, r = srv.json("POST", "/v1/items:delete", {"ids": ["a", "b", "c", "e"]},
                                headers=ADMIN)
            self.assertEqual((st, r["deleted"]), (200, 4), r)
            self.assertEqual(srv.json("GET", "/v1/sids")[2]["entries"], [])
            self.assertEqual(srv.json("GET", "/v1/model")[2]["registry"]["levels"],
                             {"item": 3, "user": None})
            st, _, e = srv.json("GET", "/v1/sids/1-2-0")
            self.assertEqual((st, e["error"]["message"]),
                             (400, 'sid "1-2-0" has 2 levels and a suffix; item IDs have 3 '
                                   'levels and a suffix (codes alone? the first ID under '
                                   'them is 1-2-0-0)'))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_delete_needs_no_tower(self):
        """A delete is a store operation, as a lookup is: a user's erasure
        goes through whatever model is served.  With a model without a user
        tower (a retrain that dropped it) DELETE /v1/users/ID answered 404
        not_found "model ... has no user tower" while GET /v1/users/ID
        answered 200: an erasure pipeline, which reads a 404 as "not stored"
        (a retried delete's answer), counted the user erased and the store
        kept it.  POST /v1/users:delete the same; with no model at all both
        answered 503, while the item routes deleted."""
        d = self.fresh_dir()
        extra = ["--admin-token", "t", "--watch=false"]
        srv, model = self.start(d, {"item": self.ta, "user": self.tb}, "A", extra)
        try:
            Xu, _ = T.tie_free_inputs(self.rng, self.tb, 3)
            st, _, r = assign(srv, ["u1", "u2", "u3"], Xu, tower="users")
            self.assertEqual(st, 200, r)
            sids = {x["id"]: x["sid"] for x in r["results"]}
            T.write_model(model, {"item": self.ta}, "items-only")
            st, _, body = srv.json("POST", "/v1/admin/reload", headers=ADMIN)
            self.assertEqual((st, body["model_version"]), (200, "items-only"), body)
            st, _, e = srv.json("GET", "/v1/users/u1")
            self.assertEqual((st, e["sid"]), (200, sids["u1"]), e)
            st, _, e = srv.json("DELETE", "/v1/users/u1", headers=ADMIN)
            self.assertEqual((st, e["id"], e["sid"], e["deleted"]), (200, "u1", sids["u1"], True))
            st, _, e = srv.json("DELETE", "/v1/users/u1", headers=ADMIN)
            self.assertEqual((st, e["error"]["message"]),
                             (404, "no such user id: nothing deleted"))
            st, _, e = srv.json("POST", "/v1/users:delete", {"ids": ["u2", "nope"]},
                                headers=ADMIN)
            self.assertEqual(st, 200, e)
            self.assertEqual([(x["id"], x["deleted"], x.get("sid")) for x in e["results"]],
                             [("u2", True, sids["u2"]), ("nope", False, None)])
        finally:
            self.assertEqual(srv.stop(), 0)
        # no model at all (--allow-empty, the file gone): the same
        os.unlink(model)
        srv = T.Server(["--model", model, "--allow-empty"] + FAST + extra, d)
        try:
            st, _, e = srv.json("DELETE", "/v1/users/u3", headers=ADMIN)
            self.assertEqual((st, e["id"], e["sid"]), (200, "u3", sids["u3"]), e)
            st, _, e = srv.json("POST", "/v1/users:delete", {"ids": ["u3"]}, headers=ADMIN)
            self.assertEqual((st, e["deleted"]), (200, 0), e)
            st, _, page = srv.json("GET", "/v1/sids?tower=user")
            self.assertEqual((st, page["entries"]), (200, []))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_delete(self):
        """DELETE /v1/{items,users}/{id}: the entry it removed, then 404 for
        the id, its sid and in prefix pages; the freed slot goes to the next
        new id of those codes (the smallest free suffix); the embedding row
        is gone from the file; metrics and the request log; and a SIGKILL
        right after the answer does not bring the id back."""
        import sqlite3
        d = self.fresh_dir()
        extra = ["--admin-token", "t"]
        srv, model = self.start(d, {"item": self.ta, "user": self.tb}, "A", extra)
        db = os.path.join(d, "semid-registry.db")
        try:
            X, codes = self.assign_four(srv)
            sid_b = sid_of(codes[0], 1)
            st, _, e = srv.json("DELETE", "/v1/items/b", headers=ADMIN)
            self.assertEqual(st, 200, e)
            self.assertEqual((e["id"], e["kind"], e["sid"], e["suffix"], e["deleted"]),
                             ("b", "item", sid_b, 1, True))
            self.assertEqual(e["codes"], codes[0].tolist())
            self.assertEqual(e["embedding_dim"], 16)
            st, _, e = srv.json("GET", "/v1/items/b")
            self.assertEqual(st, 404, e)
            st, _, e = srv.json("GET", "/v1/sids/" + sid_b)
            self.assertEqual(st, 404, e)
            st, _, page = srv.json("GET", "/v1/sids?prefix=%d" % codes[0][0])
            self.assertEqual([x["id"] for x in page["entries"]], ["a", "c", "e"])
            with sqlite3.connect(db) as c:
                self.assertEqual(c.execute("SELECT count(*) FROM semid_embedding").fetchone()[0],
                                 3)
            # again: not found; unknown ids too; the log never names them
            for i in ("b", "nope"):
                st, _, e = srv.json("DELETE", "/v1/items/" + i, headers=ADMIN)
                self.assertEqual((st, e["error"]["code"]), (404, "not_found"), e)
                self.assertNotIn('"%s"' % i, e["error"]["message"])
            # the freed slot is the smallest free: the next new id takes it
            st, _, r = assign(srv, ["f"], X)
            self.assertEqual((r["results"][0]["sid"], r["results"][0]["created"]), (sid_b, True))
            # users: their own space
            Xu, _ = T.tie_free_inputs(self.rng, self.tb, 1)
            st, _, ru = assign(srv, ["a"], Xu, tower="users")
            st, _, e = srv.json("DELETE", "/v1/users/a", headers=ADMIN)
            self.assertEqual((st, e["kind"], e["sid"]), (200, "user", ru["results"][0]["sid"]))
            st, _, e = srv.json("GET", "/v1/items/a")
            self.assertEqual(st, 200, e)
            m = srv.metrics()
            self.assertEqual(m['semid_registry_deletions_total{tower="item"}'], 1)
            self.assertEqual(m['semid_registry_deletions_total{tower="user"}'], 1)
            # the four DELETEs logged (a line follows its answer by a
            # moment), none naming an id that was not stored
            self.until(lambda: srv.log_text().count("method=DELETE") >= 4,
                       "the four DELETE lines")
            self.assertEqual(srv.log_text().count("method=DELETE"), 4, srv.log_text())
            self.assertNotIn("nope", srv.log_text())
            # durable before the answer: SIGKILL right after it
            st, _, e = srv.json("DELETE", "/v1/items/c", headers=ADMIN)
            self.assertEqual(st, 200, e)
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(10)
            srv.log.close()
            srv = T.Server(["--model", model] + FAST + extra, d)
            st, _, e = srv.json("GET", "/v1/items/c")
            self.assertEqual(st, 404, e)
            st, _, e = srv.json("GET", "/v1/items/e")
            self.assertEqual((st, e["suffix"]), (200, 3), e)
        finally:
            self.assertEqual(srv.stop(), 0)


    def test_delete_many(self):
        """POST /v1/{items,users}:delete: the ids of the body in one
        transaction, a result each in their order (an id not stored, or given
        a second time: deleted false; an entry that cannot be read: its kind
        and id, deleted), the freed slots taken by the next new ids, the
        deletions counted; the admin token, the content type, malformed
        bodies (each named), more ids than max_inputs (413, also when there
        are so many the body never reaches the JSON parser) and a model
        without a user tower (404)."""
        import sqlite3
        d = self.fresh_dir()
        extra = ["--admin-token", "t", "--max-inputs", "4"]
        srv, _ = self.start(d, {"item": self.ta}, "A", extra)
        db = os.path.join(d, "semid-registry.db")
        try:
            X, codes = self.assign_four(srv)
            with sqlite3.connect(db) as c:
                c.execute("UPDATE semid_assignment SET codes = X'01' WHERE id = 'c'")
            st, _, r = srv.json("POST", "/v1/items:delete", {"ids": ["b", "nope", "b", "c"]},
                                headers=ADMIN)
            self.assertEqual(st, 200, r)
            self.assertEqual((r["tower"], r["deleted"]), ("item", 2))
            res = r["results"]
            self.assertEqual([(x["id"], x["deleted"]) for x in res],
                             [("b", True), ("nope", False), ("b", False), ("c", True)])
            self.assertEqual((res[0]["sid"], res[0]["kind"]), (sid_of(codes[0], 1), "item"))
            self.assertEqual(res[1], {"kind": "item", "id": "nope", "deleted": False})
            self.assertEqual(res[3], {"kind": "item", "id": "c", "deleted": True})
            for i in ("b", "c"):
                st, _, e = srv.json("GET", "/v1/items/" + i)
                self.assertEqual(st, 404, e)
            # the smallest free suffixes, 1 then 2, go to the next new ids
            st, _, r = assign(srv, ["f", "g"], np.repeat(X, 2, axis=0))
            self.assertEqual([x["suffix"] for x in r["results"]], [1, 2], r)
            # an integer id is its decimal text, as assign's
            st, _, r = assign(srv, ["17"], X)
            st, _, r = srv.json("POST", "/v1/items:delete", {"ids": [17]}, headers=ADMIN)
            self.assertEqual((st, r["results"][0]["id"], r["deleted"]), (200, "17", 1), r)
            m = srv.metrics()
            self.assertEqual(m['semid_registry_deletions_total{tower="item"}'], 3)
            # a request is counted once it has completed, which may be just
            # after its client read the answer (seen under valgrind)
            key = 'semid_requests_total{route="/v1/items:delete",code="200"}'
            self.until(lambda: srv.metrics().get(key) == 2, "both deletes counted")
            self.until(lambda: "route=/v1/items:delete status=200 items=4" in srv.log_text(),
                       "the request line with its count of ids")

            def refused(body, headers=ADMIN, path="/v1/items:delete"):
                headers = dict({"Content-Type": "application/json"}, **headers)
                st, h, data = srv.request("POST", path, body, headers)
                return st, json.loads(data)["error"]["message"]

            self.assertEqual(refused({"ids": ["a"]}, {})[0], 403)
            self.assertEqual(refused({"ids": ["a"]}, {"Authorization": "Bearer x"})[0], 403)
            self.assertEqual(refused(b'{"ids": ["a"]}', dict(ADMIN, **{
                "Content-Type": "text/plain"}))[0], 415)
            for bad, said in ((b'{"ids": ["a"', "malformed JSON at line 1"),
                              ({}, 'missing field "ids"'),
                              ({"ids": "a"}, "ids must be an array, not a string"),
                              ({"ids": []}, "ids is empty"),
                              ({"ids": ["a", {"id": "b"}]}, "ids[1] must be a string or an "
                               "integer, not an object"),
                              ({"ids": ["a", 2.5]}, "ids[1] must be a string or an integer, "
                               "not a number with a fraction or an exponent"),
                              ({"ids": ["a", ""]}, "ids[1]: id is empty"),
                              ({"ids": ["a"], "reassign": True}, 'unknown field "reassign"'),
                              ([1], "the body must be a JSON object, not an array")):
                with self.subTest(body=bad):
                    st, msg = refused(bad)
                    self.assertEqual(st, 400, msg)
                    self.assertIn(said, msg)
            st, msg = refused({"ids": ["a", "b", "c", "d", "e"]})
            self.assertEqual((st, msg), (413, "5 ids; at most 4 are allowed per request"))
            # counted before the parser sees the body: still 413 for the ids
            st, msg = refused({"ids": [str(i) for i in range(500)]})
            self.assertEqual((st, msg), (413, "500 ids; at most 4 are allowed per request"))
            # a few ids and a flood elsewhere is a bad body, not a long list
            for bad in ({"ids": ["a"], "x": [0] * 70},
                        b'{"ids": [' + b"[" * 80 + b"]" * 80 + b"]}"):
                with self.subTest(body=bad):
                    st, msg = refused(bad)
                    self.assertEqual(st, 400, msg)
                    self.assertIn("a request of at most 4 ids has no more than 68", msg)
            # no user tower: a store operation all the same
            # (test_delete_needs_no_tower), nothing of it stored
            st, _, e = srv.json("POST", "/v1/users:delete", {"ids": ["a"]}, headers=ADMIN)
            self.assertEqual((st, e["deleted"], e["results"]),
                             (200, 0, [{"kind": "user", "id": "a", "deleted": False}]))
            st, _, e = srv.json("GET", "/v1/items/a")
            self.assertEqual(st, 200, e)  # nothing refused deleted anything
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_delete_entry_json_cannot_hold(self):
        """A stored entry JSON cannot hold (a model_version that is not
        UTF-8, from before it was checked) is deleted all the same: the 200
        says so with its kind and id, where the answer was an error naming
        the erased id in the request log (and a retry said 404).  So is an
        entry that cannot be read at all (its codes damaged): the answer was
        an error, and the row stayed.  Until then, a request that meets it
        is 500 naming it, alone (the store is not down: semid_registry_up
        stays 1, and other assigns go on); it was 503 "unavailable", with
        the store marked down."""
        import sqlite3
        d = self.fresh_dir()
        extra = ["--admin-token", "t"]
        srv, _ = self.start(d, {"item": self.ta}, "A", extra)
        db = os.path.join(d, "semid-registry.db")
        try:
            X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
            st, _, r = assign(srv, ["legacy-7", "legacy-8"], X)
            self.assertEqual(st, 200, r)
            with sqlite3.connect(db) as c:
                c.execute("UPDATE semid_assignment SET model_version = CAST(X'FF' AS TEXT)"
                          " WHERE id = 'legacy-7'")
                c.execute("UPDATE semid_assignment SET codes = X'01' WHERE id = 'legacy-8'")
            st, _, e = srv.json("GET", "/v1/items/legacy-8")
            self.assertEqual((st, e["error"]["code"]), (500, "internal"), e)
            self.assertIn('"legacy-8") cannot be read', e["error"]["message"])
            X2, _ = T.tie_free_inputs(self.rng, self.ta, 2)
            st, _, e = assign(srv, ["fresh-1", "legacy-8"], X2)
            self.assertEqual((st, e["error"]["code"]), (500, "internal"), e)
            st, _, r = assign(srv, ["fresh-2"], X2[:1])
            self.assertEqual(st, 200, r)
            st, _, e = srv.json("GET", "/v1/items/fresh-1")
            self.assertEqual(st, 404, e)
            self.assertEqual(srv.metrics()["semid_registry_up"], 1)
            st, _, e = srv.json("DELETE", "/v1/items/legacy-8", headers=ADMIN)
            self.assertEqual(st, 200, e)
            self.assertEqual(e, {"kind": "item", "id": "legacy-8", "deleted": True})
            with sqlite3.connect(db) as c:
                self.assertEqual(c.execute("SELECT count(*) FROM semid_assignment WHERE"
                                           " id = 'legacy-8'").fetchone()[0], 0)
            st, _, e = srv.json("DELETE", "/v1/items/legacy-7", headers=ADMIN)
            self.assertEqual(st, 200, e)
            self.assertEqual((e["kind"], e["id"], e["deleted"]), ("item", "legacy-7", True))
            self.until(lambda: "method=DELETE" in srv.log_text(), "the DELETE line")
            self.assertNotIn("legacy-7", srv.log_text())
            st, _, e = srv.json("DELETE", "/v1/items/legacy-7", headers=ADMIN)
            self.assertEqual(st, 404, e)
            # a GET of the erased id is 404 too, and its log line does not
            # name it either (it did: error="item id \"legacy-7\": not found")
            st, _, e = srv.json("GET", "/v1/items/legacy-7")
            self.assertEqual((st, e["error"]["message"]), (404, "no such item id"), e)
            self.until(lambda: "method=GET route=/v1/items/{id}" in srv.log_text(),
                       "the GET line")
            self.assertNotIn("legacy-7", srv.log_text())
        finally:
            self.assertEqual(srv.stop(), 0)


class TestLevelsMismatchSqlite(LevelsBase):
    def test_levels_mismatch(self):
        self.check_levels_mismatch(())


if __name__ == "__main__":
    unittest.main(verbosity=2)
