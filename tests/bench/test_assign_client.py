#!/usr/bin/python3
"""make bench-assign's client: its wrk Lua script and wrk() run against a
small HTTP server of this test that keeps every request's ids, so that what
the benchmark sends is checked, not only that its report has its rows.

- "assign new" with a pool (POOL=N: the first N requests built in init,
  before the run, the rest as it goes): one wrk thread, every id sent once,
  the request counters 1 (or 2: wrk calls request() once before the run to
  check it), 2, 3, ... with none skipped or sent twice where
  the pool ends, and each item's row the one the script's formula picks for
  its counter, prebuilt or not; wrk() counts the requests past the pool.
- "assign known" (KNOWN=1, no pool): the same ids in every request of a
  thread.

Needs wrk (`make test` installs it).  Standalone: /usr/bin/python3
tests/bench/test_assign_client.py
"""
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "server"))
import bench_assign  # noqa: E402

ROWS = ["QUFB", "QkJC", "Q0ND", "RERE", "RUVF"]  # base64 rows (any text will do)
ITEMS = 3


class Keep(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    disable_nagle_algorithm = True  # the body's write not held for an ACK

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # wrk resets its connections when it stops


@unittest.skipUnless(shutil.which("wrk"), "needs wrk (make test installs it)")
class AssignClient(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_assign_client.")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.lua = os.path.join(self.tmp, "assign.lua")
        with open(self.lua, "w") as f:
            f.write(bench_assign.LUA)
        self.rows = os.path.join(self.tmp, "rows.txt")
        with open(self.rows, "w") as f:
            f.write("\n".join(ROWS) + "\n")
        self.srv = Server(("127.0.0.1", 0), Keep)
        self.srv.bodies, self.srv.lock = [], threading.Lock()
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)

    def run_wrk(self, **env):
        env = dict({"ROWS_FILE": self.rows, "ITEMS": str(ITEMS), "RUN": "r7"}, **env)
        r = bench_assign.wrk(self.srv.server_address[1], "/v1/items:assign", self.lua, env, 2, 1)
        sent = []  # [(tid, counter, k, row)] in the order the server read them
        for body in self.srv.bodies:
            inputs = json.loads(body)["inputs"]
            self.assertEqual(len(inputs), ITEMS)
            for inp in inputs:
                m = re.fullmatch(r"r7-(\d+)-(\d+)-(\d+)", inp["id"])
                self.assertIsNotNone(m, inp["id"])
                sent.append(tuple(int(x) for x in m.groups()) + (inp["embedding_b64"],))
        return r, sent

    def test_pool_then_built(self):
        pool = 5
        r, sent = self.run_wrk(KNOWN="0", POOL=str(pool))
        done = len(self.srv.bodies)
        self.assertGreater(done, 2 * pool, "too few requests to pass the pool")
        self.assertEqual({t for t, _, _, _ in sent}, {0}, "one wrk thread with a pool")
        ids = [(c, k) for _, c, k, _ in sent]
        self.assertEqual(len(ids), len(set(ids)), "an id sent twice")
        # from 2 when wrk called request() once to check it before the run
        counters = sorted({c for c, _ in ids})
        self.assertIn(counters[0], (1, 2))
        self.assertEqual(counters, list(range(counters[0], counters[0] + len(counters))))
        for _, c, k, row in sent:  # the script's row for (thread 0, c, k)
            self.assertEqual(row, ROWS[(c * ITEMS + k) % len(ROWS)], (c, k))
        # wrk() counts what its "requests in" line says past the pool;
        # the server may have read a few more (answered after the stop)
        self.assertGreater(r["built"], 0)
        self.assertLessEqual(r["built"], done - pool)

    def test_known_ids_repeat(self):
        _, sent = self.run_wrk(KNOWN="1")
        self.assertGreater(len(self.srv.bodies), 4)
        ids = {(t, c, k) for t, c, k, _ in sent}
        self.assertEqual(ids, {(t, 0, k) for t in (0, 1) for k in range(1, ITEMS + 1)})


if __name__ == "__main__":
    unittest.main()
