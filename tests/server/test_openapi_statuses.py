#!/usr/bin/python3
"""Each status proto/openapi.json declares for an operation is one the server
sends for it, and the other way round.  For every (operation, status,
content type) of the document a request that yields it is sent to a live
semid-server, and the answer must validate against the documented schema;
a declared one no request here produced fails the test, unless it is on
IMPRACTICAL below (real, with the code that sends it, but not to be caused
from outside).  No operation declares 405: a path's other methods get it,
which its description tells with the Allow header, checked here too, as is
the 204 OPTIONS gets with the same Allow.

Servers: the demo model with an SQLite registry, an admin token and small
limits (max_inputs 2, max_body_bytes 4096), reloaded into a model with
other towers for the 404s and the 409; a server with connection_limit 1 for
the 503 of every operation; one with --registry none for the 501 of the
registry's.  libmicrohttpd's own answers (414, 431, 505 and
a 400 for a malformed header line) are HTML without a Content-Type header:
they count as the text/html the document declares for them.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_openapi_statuses.py
"""
import json
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402
import test_openapi as O  # noqa: E402

# Real but impractical to cause from a test: (method, template, status) ->
# the code path that sends it.
IMPRACTICAL = {
    ("POST", "/v1/items:encode", "500"):
        "server/batcher.c: an encode that fails other than out of memory, a tower gone "
        "from the model under a batch, or a job left without an answer (bugs)",
    ("POST", "/v1/users:encode", "500"): "as /v1/items:encode (server/batcher.c)",
    ("GET", "/v1/model", "500"):
        "server/http.c route_model: sid_model_describe_json gave no JSON object (a bug)",
}

EMB = [0.12, -0.5, 0.33, 0.9]
ADMIN = {"Authorization": "Bearer t"}
# a concrete request path per operation
CONCRETE = {"/v1/items/{id}": "/v1/items/sku-1", "/v1/users/{id}": "/v1/users/u-1",
            "/v1/sids/{sid}": "/v1/sids/1-2-3-0"}


def parse(raw):
    """An HTTP response's bytes -> (status, headers (lower-case), body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    st = int(lines[0].split()[1])
    h = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        h[k.strip().lower()] = v.strip()
    if "content-length" in h:
        body = body[:int(h["content-length"])]
    return st, h, body


def raw_request(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(data)
        return parse(T.read_to_eof(s))
    finally:
        s.close()


class TestStatuses(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = O.load_spec()
        cls.v = O.Validator(cls.spec)
        cls.ops = O.operations(cls.spec)
        cls.reached = set()  # (method, template, status, content type)
        cls.work = tempfile.mkdtemp(prefix="semid-openapi-st-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def find(self, method, path):
        bare = path.partition("?")[0]
        hits = [(t, op) for m, t, rx, op in self.ops if m == method and rx.match(bare)]
        self.assertEqual(len(hits), 1, (method, path))
        return hits[0]

    def note(self, method, path, st, h, body, want):
        """Record and check one answer: declared for the operation, with a
        body the schema accepts."""
        template, op = self.find(method, path)
        where = "%s %s -> %d" % (method, path, st)
        self.assertEqual(st, want, "%s, not %d: %r" % (where, want, body[:300]))
        resp = O.response(self.spec, op, st)
        self.assertIsNotNone(resp, "%s: a status the document does not declare" % where)
        content = resp.get("content", {})
        ctype = h.get("content-type", "").partition(";")[0]
        if not ctype and body.startswith(b"<html>"):
            ctype = "text/html"  # libmicrohttpd's own pages carry none
        self.assertIn(ctype, content, where)
        try:
            O.check_headers(self.v, self.spec, resp, h, where)
        except O.Invalid as e:
            self.fail(str(e))
        value = json.loads(body) if ctype == "application/json" else body.decode()
        try:
            self.v.validate(value, content[ctype]["schema"])
        except O.Invalid as e:
            self.fail("%s: %s" % (where, e))
        self.reached.add((method, template, str(st), ctype))

    def call(self, srv, method, path, want, body=None, headers=None):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = dict(headers or {})
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        st, got_h, got = srv.request(method, path, data, h)
        self.note(method, path, st, got_h, got, want)
        return json.loads(got) if got_h.get("content-type", "").startswith(
            "application/json") else got

    def raw(self, srv, method, path, want, head=b"Host: x\r\n", version=b"HTTP/1.1", body=b""):
        st, h, got = raw_request(srv.port, method.encode() + b" " + path.encode() + b" " +
                                 version + b"\r\n" + head + b"\r\n" + body)
        self.note(method, path, st, h, got, want)

    def every_op(self):
        for method, template, _, _ in self.ops:
            yield method, CONCRETE.get(template, template)

    def test_statuses(self):
        model = os.path.join(self.work, "model.safetensors")
        towers = T.doc_model(model)
        demo = os.path.join(self.work, "demo.safetensors")
        shutil.copy(model, demo)  # (the first server's is replaced)
        db = os.path.join(self.work, "semid-registry.db")
        srv = T.Server(["--model", model, "--admin-token", "t", "--max-inputs", "2",
                        "--max-body-bytes", "4096", "--watch=false"], self.work)
        try:
            self.main_server(srv, model, towers, db)
        finally:
            self.assertEqual(srv.stop(), 0)

        # connection_limit 1: a second connection is answered 503 at once
        srv = T.Server(["--model", demo, "--admin-token", "t", "--connection-limit", "1",
                        "--watch=false"], self.work)
        try:
            # the one connection, served and kept open; until the server has
            # seen the start-up probe's connection close, it is a second one
            deadline = time.monotonic() + 20
            while True:
                held = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
                held.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                got = held.recv(4096)
                if b" 503 " not in got or time.monotonic() > deadline:
                    break
                held.close()
                time.sleep(0.05)
            self.assertIn(b" 200 ", got)
            for method, path in self.every_op():
                self.raw(srv, method, path, 503)
            held.close()
        finally:
            self.assertEqual(srv.stop(), 0)

        # --registry none: every registry operation 501, without Retry-After
        srv = T.Server(["--model", demo, "--admin-token", "t", "--registry", "none",
                        "--watch=false"], self.work)
        try:
            for method, path in self.every_op():
                if "501" in self.find(method, path)[1]["responses"]:
                    self.call(srv, method, path, 501,
                              {"inputs": []} if method == "POST" else None, ADMIN)
        finally:
            self.assertEqual(srv.stop(), 0)

        declared = set()
        for method, template, _, op in self.ops:
            for code in op["responses"]:
                self.assertNotEqual(code, "405", "%s %s: no operation answers 405; a path's "
                                    "other methods do (its description)" % (method, template))
                for ctype in O.response(self.spec, op, code).get("content", {}):
                    declared.add((method, template, code, ctype))
        missing = {d for d in declared - self.reached if d[:3] not in IMPRACTICAL}
        self.assertEqual(sorted(missing), [], "declared, but no request here produced it")
        stale = {k for k in IMPRACTICAL if k not in {d[:3] for d in declared}}
        self.assertEqual(stale, set(), "IMPRACTICAL lists statuses the document does not")

    def main_server(self, srv, model, towers, db):
        # what every operation can get, whatever its route
        for method, path in self.every_op():
            with self.subTest(method=method, path=path):
                self.raw(srv, method, path, 400, head=b"")  # HTTP/1.1 without Host: JSON
                self.raw(srv, method, path, 400, head=b"Host: x\r\nno colon\r\n")  # MHD: HTML
                # (refused from Content-Length before the body is read: one
                # that passes the token and Content-Type checks)
                self.raw(srv, method, path, 413, head=b"Host: x\r\nContent-Length: 5000\r\n"
                         b"Content-Type: application/json\r\nAuthorization: Bearer t\r\n")
                self.raw(srv, method, path + "?" + "a" * 40000, 414)
                self.raw(srv, method, path, 431, head=b"Host: x\r\nX-Big: %s\r\n" % (b"a" * 40000))
                self.raw(srv, method, path, 505, version=b"HTTP/2.0")
        # 405: on a path's other methods, with the Allow its description names
        for template, item in self.spec["paths"].items():
            m = re.search(r"with Allow: ([A-Z, ]+[A-Z])", item.get("description", ""))
            self.assertIsNotNone(m, "%s: its description tells no 405 and Allow" % template)
            st, h, got = srv.request("PUT", CONCRETE.get(template, template), b"{}",
                                     {"Content-Type": "application/json"})
            self.assertEqual((st, h.get("allow")), (405, m.group(1)), template)
            self.v.validate(json.loads(got), {"$ref": "#/components/schemas/Error"})
            # and OPTIONS, as the description says: 204, the same Allow, no body
            self.assertIn("OPTIONS is answered 204 with the same Allow and no body",
                          item["description"], template)
            st, h, got = srv.request("OPTIONS", CONCRETE.get(template, template))
            self.assertEqual((st, h.get("allow"), got), (204, m.group(1), b""), template)

        inp = [{"id": "sku-1", "embedding": EMB}]
        for tower in ("items", "users"):
            one = "sku-1" if tower == "items" else "u-1"
            inp = [{"id": one, "embedding": EMB}]
            for verb in ("encode", "assign"):
                path = "/v1/%s:%s" % (tower, verb)
                self.call(srv, "POST", path, 200, {"inputs": inp})
                self.call(srv, "POST", path, 400, {"inputs": [{"id": one, "embedding": [1]}]})
                self.call(srv, "POST", path, 413, {"inputs": inp * 3})
                self.call(srv, "POST", path, 415, b"{}", {"Content-Type": "text/plain"})
            path = "/v1/%s/%s" % (tower, one)
            self.call(srv, "GET", path, 200)
            self.call(srv, "GET", path + "?x=1", 400)
            self.call(srv, "GET", "/v1/%s/nobody" % tower, 404)
            self.call(srv, "DELETE", path, 403)
            self.call(srv, "DELETE", path + "?x=1", 400, headers=ADMIN)
            self.call(srv, "DELETE", path, 200, headers=ADMIN)
            self.call(srv, "DELETE", path, 404, headers=ADMIN)
            path = "/v1/%s:delete" % tower
            self.call(srv, "POST", path, 200, {"ids": [one]}, ADMIN)
            self.call(srv, "POST", path, 400, {"ids": []}, ADMIN)
            self.call(srv, "POST", path, 403, {"ids": [one]})
            self.call(srv, "POST", path, 413, {"ids": ["a"] * 3}, ADMIN)
            self.call(srv, "POST", path, 415, b"{}", dict(ADMIN, **{"Content-Type": "text/plain"}))
        sid = self.call(srv, "POST", "/v1/items:assign", 200,
                        {"inputs": [{"id": "sku-2", "embedding": EMB}]})["results"][0]["sid"]
        self.call(srv, "GET", "/v1/sids/" + sid, 200)
        self.call(srv, "GET", "/v1/sids/1-2", 400)
        self.call(srv, "GET", "/v1/sids/0-0-0-9", 404)
        self.call(srv, "GET", "/v1/sids?limit=2", 200)
        self.call(srv, "GET", "/v1/sids?limit=0", 400)
        for path in ("/healthz", "/readyz", "/v1/model", "/metrics"):
            self.call(srv, "GET", path, 200)
        self.call(srv, "POST", "/v1/admin/reload", 200, None, ADMIN)
        self.call(srv, "POST", "/v1/admin/reload?x=1", 400, None, ADMIN)
        self.call(srv, "POST", "/v1/admin/reload", 403)

        # 500: stored entries that cannot be read (codes damaged) or written
        # as JSON (a model_version that is not UTF-8)
        for tower in ("items", "users"):
            self.call(srv, "POST", "/v1/%s:assign" % tower, 200,
                      {"inputs": [{"id": "bad-codes", "embedding": EMB}]})
        sid = self.call(srv, "POST", "/v1/items:assign", 200,
                        {"inputs": [{"id": "bad-text", "embedding": [0.9, 0.1, -0.3, 0.2]}]}
                        )["results"][0]["sid"]
        with sqlite3.connect(db) as c:
            c.execute("UPDATE semid_assignment SET codes = X'01' WHERE id = 'bad-codes'")
            c.execute("UPDATE semid_assignment SET model_version = CAST(X'FF' AS TEXT)"
                      " WHERE id = 'bad-text'")
        for tower in ("items", "users"):
            self.call(srv, "GET", "/v1/%s/bad-codes" % tower, 500)
            self.call(srv, "POST", "/v1/%s:assign" % tower, 500,
                      {"inputs": [{"id": "bad-codes", "embedding": EMB}]})
        self.call(srv, "GET", "/v1/sids/" + sid, 500)
        self.call(srv, "GET", "/v1/sids", 500)

        # towers of fewer levels than the stored IDs have: 409 for a new id
        rng = np.random.default_rng(7)

        def fewer(name, levels):
            cbs = [(np.round(rng.standard_normal((8, 4)) * 64) / 64).astype(np.float32)
                   for _ in range(levels)]
            return T.Tower(towers[name].layers, cbs, "relu", "none")

        T.write_model(model, {"item": fewer("item", 2), "user": fewer("user", 1)}, "fewer")
        self.call(srv, "POST", "/v1/admin/reload", 200, None, ADMIN)
        for tower in ("items", "users"):
            self.call(srv, "POST", "/v1/%s:assign" % tower, 409,
                      {"inputs": [{"id": "new", "embedding": EMB}]})
        # no user tower: the user routes that encode 404 (a delete is the
        # store's alone: its 404 is an id not stored)
        T.write_model(model, {"item": towers["item"]}, "items-only")
        self.call(srv, "POST", "/v1/admin/reload", 200, None, ADMIN)
        for path, body in (("/v1/users:encode", {"inputs": inp}),
                           ("/v1/users:assign", {"inputs": inp})):
            self.call(srv, "POST", path, 404, body, ADMIN)
        self.call(srv, "POST", "/v1/users:delete", 200, {"ids": ["u-1"]}, ADMIN)
        self.call(srv, "DELETE", "/v1/users/u-1", 404, headers=ADMIN)
        # a user tower alone: the item routes 404
        T.write_model(model, {"user": towers["user"]}, "users-only")
        self.call(srv, "POST", "/v1/admin/reload", 200, None, ADMIN)
        for verb in ("encode", "assign"):
            self.call(srv, "POST", "/v1/items:" + verb, 404,
                      {"inputs": [{"id": "x", "embedding": EMB}]})
        # a file that does not load: 422, the previous model serving on
        with open(model, "r+b") as f:
            f.truncate(100)
        self.call(srv, "POST", "/v1/admin/reload", 422, None, ADMIN)


if __name__ == "__main__":
    unittest.main(verbosity=2)
