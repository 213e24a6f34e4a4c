#!/usr/bin/python3
"""The operations port (ops_listen, server/http.h): a second, small listener
for /healthz, /readyz, /metrics and GET /v1/model.

- With the main port held at connection_limit (new connections there are
  answered 503 before their request is read), the probes and the scrape on
  the operations port still answer 200, and the scrape counts the main
  port's refusals; every other route there is 404.
- Bad ops_listen values are refused at start with exit 2 and a message
  naming the key: not HOST:PORT, a bad port, a unix socket, listen's own
  port (the same address or a wildcard over it), a port in use, an address
  the host does not have; before the model loads.
- SIGTERM drains both ports: a request in flight on either is answered, a
  new connection to either gets the 503 "shutting down", and the exit is 0.

Real server, real sockets, 127.0.0.1 only; every wait is bounded.
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_ops_listen.py
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

SHUTTING_DOWN = "the server is shutting down; retry later"


def setUpModule():
    global WORK, MODEL
    WORK = tempfile.mkdtemp(prefix="semid-ops-test-")
    MODEL = os.path.join(WORK, "demo.safetensors")
    T.doc_model(MODEL)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def ops_port(srv):
    m = re.search(r"event=listening .* ops_port=(\d+) ", srv.log_text())
    assert m, srv.log_text()
    return int(m.group(1))


def get(port, path, method="GET", body=None, headers=None):
    """-> (status, headers dict (lower-case names), body bytes) on a new connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return 0.0


def first_answer(port, request=b""):
    """Connect to @port, send @request, and read until the server closes (or
    5 s of silence): what a refused connection is told."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if request:
            s.sendall(request)
        return T.read_to_eof(s)
    except socket.timeout:
        return b""
    finally:
        s.close()


class TestOpsListen(unittest.TestCase):
    def refused(self, args, needle):
        T.refused_start(self, args, needle, timeout=20)

    def saturate(self, port, limit):
        """Hold @limit connections to @port, each served (a first byte of a
        request sent and not finished), until a new connection there is
        turned away with a 503.  Returns the held sockets."""
        held = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            s = socket.create_connection(("127.0.0.1", port), timeout=0.3)
            s.sendall(b"G")
            try:
                data = s.recv(100)
            except socket.timeout:
                held.append(s)  # served: it holds a place
                continue
            s.close()
            if data.startswith(b"HTTP/1.1 503") and len(held) >= limit:
                return held
        self.fail("port %d never turned a connection away over %d" % (port, limit))

    def test_probes_and_metrics_answer_while_the_main_port_is_full(self):
        """A pod whose clients hold connection_limit connections answered its
        liveness probe 503 (refused at accept, before the route is known),
        so Kubernetes could kill it for being busy, and the scrape failed
        just when the metrics mattered.  The operations port has places of
        its own."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-limit", "2",
                        "--ops-listen", "127.0.0.1:0"], WORK)
        held = []
        try:
            port = ops_port(srv)
            self.assertNotEqual(port, srv.port)
            held = self.saturate(srv.port, 2)
            # the main port: every route is turned away, the probe's too
            answer = first_answer(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
            self.assertIn(b"too many open connections (connection_limit 2); retry later", answer)
            # the operations port answers
            st, _, body = get(port, "/healthz")
            self.assertEqual((st, json.loads(body)), (200, {"status": "ok"}))
            st, _, body = get(port, "/readyz")
            self.assertEqual((st, json.loads(body)),
                             (200, {"status": "ready", "model_version": "demo-1"}))
            st, _, body = get(port, "/v1/model")
            self.assertEqual((st, json.loads(body)["version"]), (200, "demo-1"))
            st, h, body = get(port, "/metrics")
            self.assertEqual(st, 200)
            self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
            text = body.decode()
            # the main port's connections and refusals, not the scrape's own
            self.assertEqual(metric(text, "semid_connections_open"), 2)
            self.assertGreaterEqual(
                metric(text, 'semid_connections_closed_total{reason="limit"}'), 2)
            # its requests count under their routes
            self.assertGreaterEqual(metric(text, 'semid_requests_total{route="/healthz",'
                                                 'code="200"}'), 2)
            self.assertEqual(metric(text, 'semid_requests_total{route="/readyz",code="200"}'), 1)
            # the rest of the API is not served there; a path with an id or
            # sid is named by its route, in the answer and the log line (an
            # erasure pipeline pointed at this port wrote every id it erased
            # into the log, which the main port never does)
            secret = "erased-user-7f3a"
            for method, path, shown in (
                    ("POST", "/v1/items:encode", None), ("POST", "/v1/admin/reload", None),
                    ("GET", "/v1/sids", None), ("GET", "/v1/items/a", "/v1/items/{id}"),
                    ("DELETE", "/v1/users/" + secret, "/v1/users/{id}"),
                    ("GET", "/v1/users/%s%%2Fx" % secret, "/v1/users/{id}"),
                    ("GET", "/v1/sids/1-2-3-0", "/v1/sids/{sid}"), ("GET", "/", None)):
                st, _, body = get(port, path, method, b"{}" if method == "POST" else None,
                                  {"Content-Type": "application/json"})
                self.assertEqual(st, 404, (method, path))
                err = json.loads(body)["error"]
                self.assertEqual(err["code"], "not_found")
                self.assertEqual(err["message"],
                                 "no route %s %s on the operations port (ops_listen): it serves "
                                 "GET /healthz, /readyz, /metrics and /v1/model" % (
                                     method, shown or path))
            self.assertIn("route=/v1/users/{id} status=404", srv.log_text())
            self.assertNotIn(secret, srv.log_text())
            st, h, _ = get(port, "/healthz", "POST")
            self.assertEqual((st, h["allow"]), (405, "GET, HEAD, OPTIONS"))
            self.assertIn("listener=ops", srv.log_text())
            # and the main port serves again once its clients let go
            for s in held:
                s.close()
            held = []
            deadline = time.monotonic() + 10
            while True:
                try:
                    st = srv.request("GET", "/healthz")[0]
                except (ConnectionError, http.client.HTTPException):
                    st = None
                if st == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            self.assertEqual(st, 200)
        finally:
            for s in held:
                s.close()
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_the_operations_port_has_a_limit_of_its_own(self):
        """16 connections: a 17th is turned away there, and the main port
        serves on."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--ops-listen", "127.0.0.1:0"],
                       WORK)
        held = []
        try:
            port = ops_port(srv)
            held = self.saturate(port, 16)
            answer = first_answer(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
            self.assertIn(b"too many open connections to the operations port (16 at most); "
                          b"retry later", answer)
            self.assertEqual(srv.request("GET", "/healthz")[0], 200)
            # not the main port's refusals
            self.assertEqual(srv.metrics()['semid_connections_closed_total{reason="limit"}'], 0)
        finally:
            for s in held:
                s.close()
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertRegex(srv.log_text(), r'event=connection msg="refused \d+ connections? to the '
                                         r'operations port \(127.0.0.1:%d\) over its limit of 16 '
                                         r'\(503\)"' % port)

    def test_ops_listen_from_the_config_file(self):
        cfg = os.path.join(WORK, "ops.json")
        with open(cfg, "w") as f:
            json.dump({"ops_listen": "127.0.0.1:0"}, f)
        srv = T.Server(["--model", MODEL, "--registry", "none", "--config", cfg], WORK)
        try:
            self.assertEqual(get(ops_port(srv), "/healthz")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        # off by default: one address in the listening line
        srv = T.Server(["--model", MODEL, "--registry", "none"], WORK)
        try:
            self.assertNotIn("ops_", re.search(r"event=listening .*", srv.log_text()).group(0))
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_ports_with_leading_zeros(self):
        """A port with leading zeros is its number: with 15 digits or more
        the server listened on another port (the text was cut to 15 digits
        and read again: "0000000000000018080" bound port 1)."""
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        main, ops = ports
        srv = T.Server(["--model", MODEL, "--registry", "none",
                        "--listen", "127.0.0.1:" + "0" * 16 + str(main),
                        "--ops-listen", "127.0.0.1:0" + str(ops)], WORK)
        try:
            self.assertEqual((srv.port, ops_port(srv)), (main, ops))
            self.assertEqual(get(main, "/healthz")[0], 200)
            self.assertEqual(get(ops, "/healthz")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_bad_ops_listen_refuses_to_start(self):
        # the model is not there: each refusal comes before it would load
        missing = os.path.join(WORK, "missing.safetensors")
        base = ["--model", missing, "--registry", "none", "--listen", "127.0.0.1:0"]
        self.refused(base + ["--ops-listen", "localhost"],
                     'semid-server: --ops-listen: ops_listen "localhost" must be HOST:PORT '
                     '(127.0.0.1:8080, [::1]:8080)\n')
        # no host in the brackets: it listened on every address
        self.refused(base + ["--ops-listen", "[]:0"],
                     'semid-server: --ops-listen: ops_listen "[]:0" must be HOST:PORT '
                     '(127.0.0.1:8080, [::1]:8080)\n')
        self.refused(base + ["--ops-listen", "127.0.0.1:65536"],
                     'semid-server: --ops-listen: ops_listen "127.0.0.1:65536": bad port '
                     "(digits 0..65535 after the last ':')\n")
        self.refused(base + ["--ops-listen=unix:/run/semid.sock"],
                     'semid-server: --ops-listen: ops_listen "unix:/run/semid.sock": a unix '
                     "socket is not supported; give HOST:PORT\n")
        cfg = os.path.join(WORK, "bad-ops.json")
        with open(cfg, "w") as f:
            json.dump({"ops_listen": "9090"}, f)
        self.refused(base + ["--config", cfg],
                     'semid-server: %s: ops_listen "9090" must be HOST:PORT' % cfg)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            p = taken.getsockname()[1]
            # a port in use: named as ops_listen's, in MHD's words as listen's are
            self.refused(base + ["--ops-listen", "127.0.0.1:%d" % p],
                         "semid-server: ops_listen: cannot listen on 127.0.0.1:%d: Failed to "
                         "bind to port %d: Address already in use\n" % (p, p))
        # listen's own port: the same address, or a wildcard over it (the
        # bind check alone lets both through: neither socket listens yet)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        for main, ops in (("127.0.0.1:%d" % p, "127.0.0.1:%d" % p),
                          ("127.0.0.1:%d" % p, "0.0.0.0:%d" % p),
                          ("0.0.0.0:%d" % p, "127.0.0.1:%d" % p)):
            with self.subTest(listen=main, ops_listen=ops):
                self.refused(["--model", missing, "--listen", main, "--ops-listen", ops],
                             'semid-server: ops_listen "%s" is on listen\'s port (listen "%s"): '
                             "the operations port needs a port of its own\n" % (ops, main))
        # an address this host does not have (TEST-NET-1)
        self.refused(base + ["--ops-listen", "192.0.2.1:0"],
                     "semid-server: ops_listen: cannot listen on 192.0.2.1:0: Failed to bind to "
                     "port 0: Cannot assign requested address\n")
        # port 0 on both picks two ports: not the same one
        srv = T.Server(["--model", MODEL, "--registry", "none", "--ops-listen", "127.0.0.1:0"],
                       WORK)
        try:
            self.assertEqual(get(ops_port(srv), "/healthz")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_sigterm_drains_both_ports(self):
        """A request in flight on either port is answered after SIGTERM
        (Connection: close), a new connection to either gets the 503 of a
        drain, /readyz on a kept-alive operations connection says 503, and
        the server exits 0 once both are done."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--shutdown-timeout-ms",
                        "20000", "--ops-listen", "127.0.0.1:0"], WORK)
        port = ops_port(srv)
        body = json.dumps({"inputs": [{"embedding": [0.0] * 4}]}).encode()
        main = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        ops = socket.create_connection(("127.0.0.1", port), timeout=10)
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            self.assertEqual(srv.request("GET", "/healthz", conn=keep)[0], 200)
            # a request in flight on each port: its body stalls half way
            main.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) +
                         body[:10])
            ops.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            time.sleep(0.2)
            srv.signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while "event=shutdown" not in srv.log_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            for p in (srv.port, port):
                answer = first_answer(p)
                with self.subTest(port=p):
                    self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
                    self.assertIn(SHUTTING_DOWN.encode(), answer)
            st, h, data = srv.request("GET", "/readyz", conn=keep)
            self.assertEqual((st, h.get("connection")), (503, "close"))
            self.assertEqual(json.loads(data)["error"]["message"], SHUTTING_DOWN)
            main.sendall(body[10:])
            r = http.client.HTTPResponse(main)
            r.begin()
            self.assertEqual((r.status, r.getheader("Connection")), (200, "close"))
            self.assertEqual(len(json.loads(r.read())["results"]), 1)
            # the main port is done; the drain still waits for the
            # operations port's request (it used to exit here, cutting it)
            time.sleep(0.3)
            self.assertIsNone(srv.proc.poll(), "the server left before its requests ended")
            ops.sendall(b"67890")
            r = http.client.HTTPResponse(ops)
            r.begin()
            self.assertEqual((r.status, r.getheader("Connection")), (200, "close"))
            self.assertEqual(json.loads(r.read()), {"status": "ok"})
            self.assertEqual(srv.wait(10), 0, srv.log_text()[-2000:])
            for p in (srv.port, port):
                with self.assertRaises(OSError):
                    socket.create_connection(("127.0.0.1", p), timeout=2).close()
        finally:
            main.close()
            ops.close()
            keep.close()
            if srv.proc.poll() is None:
                srv.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
