#!/usr/bin/python3
"""Abusive clients against bin/semid-server (issue 6): slow bodies and slow
headers, a flood of idle connections up to and beyond connection_limit,
oversized headers, malformed HTTP.  Each case asserts what the client sees
(status, a closed connection, how soon), that well-behaved clients are
still answered correctly meanwhile, and what the server logs (no crash, no
500).  Real server, real sockets, 127.0.0.1 only; every wait is bounded.

What the server does (proto/api.md "Life cycle"):
- connection_timeout_s bounds both silence (libmicrohttpd's idle timeout)
  and the time a request may take to arrive in full, headers and body,
  counted from the connection's start or its previous response: a client
  trickling a byte a second is closed after connection_timeout_s.  So is
  one whose answer has not been taken in full connection_timeout_s after
  it was ready: a client reading it at a trickle.
- A connection over connection_limit is answered 503 with Retry-After at
  once; it never waits unanswered in the kernel's accept queue.  What its
  client sends is then read and dropped, for at most 2 s and 1 MiB, before
  the connection is closed, so that a client still sending its request
  reads the 503 rather than a reset.
- Framing the server cannot trust (two Content-Lengths, Transfer-Encoding
  other than chunked or beside Content-Length, no HTTP version) is a 400
  followed by a close.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_abuse.py
"""
import contextlib
import datetime
import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

TIMEOUT = 2  # connection_timeout_s of the servers here
S = T.SLOW  # time bounds stretch under SEMID_SERVER_WRAPPER (valgrind)


def setUpModule():
    global WORK, MODEL, TOWER, SRV, FLOOD
    # the floods hold many sockets at once: lift our soft open-files limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    FLOOD = min(1500, soft - 200)
    WORK = tempfile.mkdtemp(prefix="semid-abuse-")
    rng = np.random.default_rng(61)
    TOWER = T.tie_free_tower(rng)
    MODEL = os.path.join(WORK, "model.safetensors")
    T.write_model(MODEL, {"item": TOWER}, "abuse-1")
    SRV = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s",
                    str(TIMEOUT), "--max-body-bytes", "100000"], WORK)


def tearDownModule():
    SRV.stop()
    shutil.rmtree(WORK, ignore_errors=True)


def complete(resp):
    """Does @resp hold a whole response (headers and Content-Length body)?"""
    head, sep, body = resp.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    return bool(sep and m and len(body) >= int(m.group(1)))


def finish(sock, rest):
    """Send @rest of a request begun on @sock and read its whole response."""
    sock.sendall(rest)
    out = b""
    while not complete(out):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed before a whole response: %r" % out[:300])
        out += chunk
    return out


def recv_or_end(sock, n):
    """recv(@n) on @sock -> (bytes, None), or (b"", "eof" | "reset") at the
    end of the stream."""
    try:
        chunk = sock.recv(n)
    except ConnectionResetError:
        return b"", "reset"
    return chunk, None if chunk else "eof"


def raw(port, data, timeout=5.0 * S, keep=False):
    """Send @data on a fresh connection and read until the server closes it
    (or @timeout; with @keep, until one whole response is in).
    -> (bytes received, "eof" | "reset" | "open", seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    out, how = b"", "open"
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending (e.g. a 431 mid-upload)
        while True:
            try:
                chunk, end = recv_or_end(s, 65536)
            except socket.timeout:
                break
            if end:
                how = end
                break
            out += chunk
            if keep and complete(out):
                break
    finally:
        s.close()
    return out, how, time.monotonic() - t0


def status_of(resp):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
    return int(m.group(1)) if m else None


def head_and_body(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    return headers, body


class Checker(threading.Thread):
    """A well-behaved client encoding tie-free rows in a loop; every answer
    must be 200 with the codes known by construction."""

    def __init__(self, srv, seed):
        super().__init__(daemon=True)
        self.srv, self.rng = srv, np.random.default_rng(seed)
        self.stop, self.ok, self.bad = threading.Event(), 0, []

    def run(self):
        while not self.stop.is_set():
            x, codes = T.tie_free_inputs(self.rng, TOWER, 4)
            body = {"inputs": [{"embedding_b64": T.b64_row(r)} for r in x]}
            try:
                st, _, r = self.srv.json("POST", "/v1/items:encode", body)
                if st != 200 or [q["codes"] for q in r["results"]] != codes.tolist():
                    self.bad.append((st, r))
                else:
                    self.ok += 1
            except OSError as e:
                self.bad.append(repr(e))
            time.sleep(0.02)

    def finish(self, test):
        self.stop.set()
        self.join(10)
        test.assertEqual(self.bad, [])
        test.assertGreater(self.ok, 10)


def no_server_errors(test, srv):
    text = srv.log_text()
    test.assertIsNone(re.search(r"event=request [^\n]*status=500", text))
    for mark in ("Segmentation fault", "AddressSanitizer", "runtime error:", "MHD_PANIC",
                 "Fatal error"):
        test.assertFalse(mark in text, mark)
    test.assertEqual(srv.proc.poll(), None, "the server exited:\n" + text[-3000:])
    test.assertEqual(srv.request("GET", "/healthz")[0], 200)
    metrics = srv.metrics()
    test.assertEqual([k for k in metrics if 'code="500"' in k], [])


def metric_settle(srv, name, want):
    """Metric @name once it is @want, or as it is after 5 s: the value of the
    last scrape, not of one more (semid_connections_open counts the scrape's
    own connection, and may count the one before it too, until the server
    has seen it close)."""
    deadline = time.monotonic() + 5 * S
    while True:
        got = srv.metrics()[name]
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.05)


def body_bytes_settle(srv, want):
    """semid_request_body_bytes once it is @want (a request's memory is let
    go just after its client has the answer), or as it is after 5 s."""
    return metric_settle(srv, "semid_request_body_bytes", want)


def metrics_on(srv, conn):
    """/metrics over @conn (a connection inside the limit), as a dict."""
    st, _, data = srv.request("GET", "/metrics", conn=conn)
    assert st == 200, st
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in
            data.decode().splitlines() if line and not line.startswith("#"))}


@contextlib.contextmanager
def limit_one(test):
    """A server at connection_limit 1 and the one connection it serves (a
    keep-alive client, answered once); stopped at the end, exit status 0."""
    srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-limit", "1"], WORK)
    try:
        time.sleep(0.2)  # the start-up probe's connection is gone
        held = srv.conn()
        test.assertEqual(srv.request("GET", "/healthz", conn=held)[0], 200)
        yield srv, held
    finally:
        test.assertEqual(srv.stop(), 0)


def garbage(srv, n):
    """@n connections one after another, each sending a request that is not
    HTTP and reading to the end of the stream."""
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.settimeout(2)
            try:
                s.sendall(b"HELLO THERE\r\n\r\n")
                T.read_to_eof(s)
            except OSError:
                pass


DEADLINE = 'semid_connections_closed_total{reason="deadline"}'
LIMIT = 'semid_connections_closed_total{reason="limit"}'
SEND_DEADLINE = 'semid_connections_closed_total{reason="send_deadline"}'
IDLE = 'semid_connections_closed_total{reason="idle"}'
OPEN = "semid_connections_open"


class TestSlowClients(unittest.TestCase):
    def test_slow_body_and_slow_headers_are_cut(self):
        """A body at one byte a second and headers at one byte a second are
        both closed about connection_timeout_s after they began, while other
        clients are answered correctly the whole time."""
        checker = Checker(SRV, 1)
        checker.start()
        results = {}
        cut0 = SRV.metrics()[DEADLINE]

        def trickle(name, head, drip):
            s = socket.create_connection(("127.0.0.1", SRV.port), timeout=10)
            t0 = time.monotonic()
            s.sendall(head)
            how = "open"
            try:
                for _ in range(4 * TIMEOUT + 4):
                    s.sendall(drip)
                    r, _, _ = select.select([s], [], [], 1.0)
                    if r:
                        data = s.recv(4096)
                        how = "eof" if not data else "data: %r" % data[:80]
                        break
            except (BrokenPipeError, ConnectionResetError):
                how = "reset"
            results[name] = (how, time.monotonic() - t0)
            s.close()

        body = threading.Thread(target=trickle, args=(
            "body", b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\nContent-Length: 1000\r\n\r\n{", b" "))
        heads = threading.Thread(target=trickle, args=(
            "headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X"))
        body.start()
        heads.start()
        body.join(30)
        heads.join(30)
        checker.finish(self)
        for name in ("body", "headers"):
            how, secs = results[name]
            self.assertIn(how, ("eof", "reset"), name)
            # the deadline plus the sweeper's 0.2 s and one drip interval
            self.assertGreaterEqual(secs, TIMEOUT - 0.1, name)
            self.assertLess(secs, TIMEOUT + 2.0 * S, name)
        log = SRV.log_text()
        self.assertTrue(re.search(r"event=request method=POST route=/v1/items:encode "
                                  r"status=499 [^\n]*termination=timeout", log))
        self.assertTrue(re.search(r"event=connection msg=\"closed \d+ connections? that took "
                                  r"over connection_timeout_s 2 s", log))
        self.assertGreaterEqual(SRV.metrics()[DEADLINE] - cut0, 2)  # both trickles
        no_server_errors(self, SRV)

    def test_stalled_requests_are_counted_and_idle_connections_not(self):
        """A request that stops arriving (its headers or its body half in,
        then silence) is closed at connection_timeout_s and counted in
        semid_connections_closed_total{reason="deadline"}, each one, and
        said by an event=connection line; a connection that sent nothing,
        or is idle between requests, is closed then as well but is no
        request cut short: reason="idle", each one.  libmicrohttpd's own
        timeout on silence mostly closed the stalled ones before the sweeper
        looked, uncounted, and the sweeper counted idle ones as deadline
        when it came first."""
        cases = {
            "nothing": b"",
            "keep-alive": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            "body": (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100\r\n\r\n{"),
        }
        mark = len(SRV.log_text())
        for name, data in cases.items():
            with self.subTest(name):
                before = SRV.metrics()
                socks = []
                for _ in range(6):
                    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=10 * S)
                    s.sendall(data)
                    socks.append(s)
                try:
                    for s in socks:
                        got = T.read_to_eof(s)
                        if name == "keep-alive":
                            self.assertEqual(status_of(got), 200, got[:200])
                        else:
                            self.assertEqual(got, b"")
                except ConnectionResetError:
                    self.fail("%s: reset" % name)
                finally:
                    for s in socks:
                        s.close()
                stalled = name in ("headers", "body")
                want = before[DEADLINE] + (6 if stalled else 0)
                self.assertEqual(metric_settle(SRV, DEADLINE, want), want)
                want = before[IDLE] + (0 if stalled else 6)
                self.assertEqual(metric_settle(SRV, IDLE, want), want)
                self.assertEqual(metric_settle(SRV, OPEN, 1), 1)
        deadline = time.monotonic() + 3 * S
        said = 0
        while time.monotonic() < deadline and said < 12:
            said = sum(int(n) for n in re.findall(
                r"event=connection msg=\"closed (\d+) connections? that took over "
                r"connection_timeout_s 2 s to send a request\"", SRV.log_text()[mark:]))
            time.sleep(0.1)
        self.assertEqual(said, 12)
        no_server_errors(self, SRV)

    def test_keepalive_between_requests_is_not_cut(self):
        """The deadline restarts with every response: a keep-alive client
        making a request every 0.6 s for longer than the timeout is served
        throughout on one connection."""
        c = SRV.conn()
        x, codes = T.tie_free_inputs(np.random.default_rng(2), TOWER, 1)
        body = {"inputs": [{"embedding": x[0].tolist()}]}
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < TIMEOUT + 1.0:
            st, _, r = SRV.json("POST", "/v1/items:encode", body, conn=c)
            self.assertEqual((st, r["results"][0]["codes"]), (200, codes[0].tolist()))
            n += 1
            time.sleep(0.6)
        c.close()
        self.assertGreaterEqual(n, 4)

    def big_answer_request(self):
        """An encode of 512 base64 rows (56 kB) with top_k 16 and
        return_quantized, whose answer is about 0.5 MB."""
        x = np.random.default_rng(5).standard_normal((512, TOWER.D)).astype(np.float32)
        body = json.dumps({"inputs": [{"embedding_b64": T.b64_row(r)} for r in x],
                           "top_k": 16, "return_quantized": True}).encode()
        return (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    @staticmethod
    def narrow_socket(srv=None):
        """A client socket through which the server can queue little: a
        4 kB receive buffer and 536-byte segments (on loopback the server's
        send buffer starts sized from the segment size, and grows as its
        client reads fast; with 64 kB segments it takes megabytes of an
        answer before a byte is read)."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        s.settimeout(10 * S)
        s.connect(("127.0.0.1", (srv or SRV).port))
        return s

    @staticmethod
    def read_answer(s, pause=0.0, limit=None):
        """Read one response from @s, 4 kB at a time, @pause s between reads,
        for at most @limit s. -> (bytes read, "whole" | "eof" | "reset" |
        "open", seconds)."""
        t0 = time.monotonic()
        data, how = b"", "open"
        while limit is None or time.monotonic() - t0 < limit:
            if select.select([s], [], [], 1.0)[0]:
                chunk, end = recv_or_end(s, 4096)
                if end:
                    how = end
                    break
                data += chunk
                if complete(data):
                    how = "whole"
                    break
            time.sleep(pause)
        return data, how, time.monotonic() - t0

    def test_slow_reader_is_cut_at_the_send_deadline(self):
        """A client that takes its answer slowly, 4 kB every 0.25 s (enough
        for libmicrohttpd to write some of it more often than its idle
        timeout, so that timeout never fires, while a 0.5 MB answer would
        take half a minute), held its connection, its place under
        connection_limit and the answer's memory as long as it went on.
        The answer not taken in full connection_timeout_s after it was
        queued closes the connection (reason send_deadline, an
        event=connection line, termination=timeout on the request's line),
        its memory and its place are let go while its client still holds
        its socket, and other clients are served meanwhile.  On a server of
        its own: the shared one's open connections include other tests'
        kept-alive ones, which close when they will."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s",
                        str(TIMEOUT), "--max-body-bytes", "100000"], WORK)
        try:
            self.slow_reader_is_cut(srv)
        finally:
            srv.stop()

    def slow_reader_is_cut(self, srv):
        m0 = srv.metrics()
        checker = Checker(srv, 3)
        checker.start()
        s = self.narrow_socket(srv)
        try:
            s.sendall(self.big_answer_request())
            data, how, secs = self.read_answer(s, 0.25, TIMEOUT + 6.0 * S)
            checker.finish(self)
            self.assertEqual(status_of(data), 200, data[:300])
            headers, body = head_and_body(data)
            self.assertGreater(int(headers["content-length"]), 400000)
            self.assertLess(len(body), int(headers["content-length"]))
            self.assertIn(how, ("eof", "reset"))
            # the deadline (counted from the answer, after the request was
            # sent) plus the sweeper's 0.2 s, and the reads of what our own
            # receive buffer still held (about 0.5 s); whole, the answer
            # took 30 s
            self.assertGreaterEqual(secs, TIMEOUT - 0.1)
            self.assertLess(secs, TIMEOUT + 3.0 * S)
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            # the scrape's own connection alone
            self.assertEqual(metric_settle(srv, OPEN, 1), 1)
            m1 = srv.metrics()
        finally:
            s.close()
        self.assertEqual(m1[SEND_DEADLINE] - m0[SEND_DEADLINE], 1)
        self.assertEqual(m1[DEADLINE] - m0[DEADLINE], 0)
        log = srv.log_text()
        self.assertTrue(re.search(r"event=request method=POST route=/v1/items:encode "
                                  r"status=200 items=512 [^\n]*termination=timeout", log))
        self.assertTrue(re.search(r"event=connection msg=\"closed 1 connection whose answer "
                                  r"was not taken in full connection_timeout_s 2 s after it "
                                  r"was ready\"", log), log[-2000:])
        no_server_errors(self, srv)

    def test_full_speed_reader_and_keepalive_are_not_cut(self):
        """Through the same narrow socket, the same answer read at full
        speed is taken in full, and the connection kept alive serves the
        next request.  Then, on a fresh one, an answer left unread for 0.4 *
        connection_timeout_s and then read at full speed is taken in full
        too, and the connection, idle until 1.3 * connection_timeout_s
        after that answer was queued (under the idle timeout, which counts
        from its last byte written), serves the next: the send deadline
        ends when the answer is written out."""
        m0 = SRV.metrics()
        for wait in (0, 0.4 * TIMEOUT):
            s = self.narrow_socket()
            try:
                s.sendall(self.big_answer_request())
                t0 = time.monotonic()
                time.sleep(wait)
                data, how, _ = self.read_answer(s)
                self.assertEqual((status_of(data), how), (200, "whole"), wait)
                self.assertEqual(len(json.loads(head_and_body(data)[1])["results"]), 512)
                if wait:
                    time.sleep(max(0.0, t0 + 1.3 * TIMEOUT - time.monotonic()))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                data, how, _ = self.read_answer(s)
                self.assertEqual((status_of(data), how), (200, "whole"), wait)
            finally:
                s.close()
        m1 = SRV.metrics()
        self.assertEqual(m1[SEND_DEADLINE] - m0[SEND_DEADLINE], 0)
        self.assertEqual(m1[DEADLINE] - m0[DEADLINE], 0)


def healthz_soon(srv, secs=1.0 * S):
    """GET /healthz until 200 or @secs pass; the last status."""
    deadline = time.monotonic() + secs
    while True:
        st = srv.request("GET", "/healthz")[0]
        if st == 200 or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def rss_kib(pid):
    return T.rss_bytes(pid) // 1024


class TestConnectionFlood(unittest.TestCase):
    def test_refusals_logged_at_most_once_a_second(self):
        """Refusals that go on for a while are summed into one log line a
        second at most (config/README.md); the sweeper, which looks five
        times a second, wrote one at each look."""
        with limit_one(self) as (srv, held):
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.6:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                    s.settimeout(2)
                    try:
                        self.assertTrue(T.read_to_eof(s).startswith(b"HTTP/1.1 503"))
                    except ConnectionResetError:
                        pass
                time.sleep(0.05)
            time.sleep(1.3)  # the last summary
            lines = [ln for ln in srv.log_text().splitlines()
                     if re.search(r'event=connection msg="refused \d+ connections? over '
                                  r'connection_limit 1 \(503\)"', ln)]
            self.assertGreaterEqual(len(lines), 2, lines)
            stamps = [datetime.datetime.strptime(re.search(r"ts=(\S+)Z", ln).group(1),
                                                 "%Y-%m-%dT%H:%M:%S.%f") for ln in lines]
            for a, b in zip(stamps, stamps[1:]):
                self.assertGreaterEqual((b - a).total_seconds(), 0.95, lines)
            held.close()

    def test_libmicrohttpd_lines_are_bounded(self):
        """libmicrohttpd writes a line or two per malformed request, and a
        refused connection's request is now read: 1000 refused clients
        sending garbage wrote 1580 event=mhd lines in 0.1 s.  At most 10 a
        second are logged, and a line a second says how many more came."""
        with limit_one(self) as (srv, held):
            t0 = time.monotonic()
            garbage(srv, 300)
            secs = time.monotonic() - t0
            time.sleep(1.3)  # the last summary
            log = srv.log_text()
            mhd = [ln for ln in log.splitlines() if "event=mhd" in ln]
            said = [ln for ln in mhd if "more libmicrohttpd line" in ln]
            self.assertLessEqual(len(mhd) - len(said), 10 * (int(secs) + 2), mhd[:20])
            self.assertGreaterEqual(len(said), 1, mhd[:20])
            self.assertLessEqual(len(said), int(secs) + 3, said)
            self.assertRegex(said[0], r'msg="\d+ more libmicrohttpd lines? not logged '
                             r'\(at most 10 a second\)"')
            self.assertEqual(srv.request("GET", "/healthz", conn=held)[0], 200)
            held.close()

    def test_lines_not_logged_are_counted_at_shutdown(self):
        """The count of libmicrohttpd lines not logged is written at shutdown
        too: it was lost when SIGTERM came within a second of them.  (Not
        every refused garbage request makes a line: a client that closes
        first ends it quietly.)"""
        with limit_one(self) as (srv, held):
            garbage(srv, 100)
            held.close()
        lines = srv.log_text().splitlines()
        stop = [i for i, ln in enumerate(lines) if "event=shutdown" in ln]
        said = [i for i, ln in enumerate(lines)
                if re.search(r'event=mhd msg="\d+ more libmicrohttpd lines? not logged', ln)]
        self.assertTrue(stop, lines[-5:])
        if not said and T.WRAPPER:
            # 10 lines a second are logged: under valgrind the garbage came
            # slower than that, and no line was left out to count
            self.skipTest("under %s no libmicrohttpd line was left out" % T.WRAPPER[0])
        # the last count comes after the shutdown began: written as it ends
        self.assertTrue(said and said[-1] > stop[0], lines[-5:])

    def test_refused_client_still_sending_reads_the_503(self):
        """A client over the limit whose request is still arriving when the
        503 is written - a 200 KB body sent after its headers, at once by a
        plain HTTP client or a moment later - sends all of it and reads the
        whole 503 and the end of the stream.  The server closed such a
        connection at once, and the kernel answered the rest of the request
        with RST: the client's send failed with a broken pipe or a reset."""
        body = b"x" * 200000  # dropped unread: it need not be JSON
        head = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        error = {"code": "unavailable",
                 "message": "too many open connections (connection_limit 1); retry later"}
        with limit_one(self) as (srv, held):
            for i in range(10):
                c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5 * S)
                try:
                    c.request("POST", "/v1/items:encode", body,
                              {"Content-Type": "application/json"})
                    r = c.getresponse()
                    data = r.read()
                except OSError as e:
                    self.fail("attempt %d, http.client: %r" % (i, e))
                finally:
                    c.close()
                self.assertEqual((r.status, r.getheader("Retry-After"),
                                  r.getheader("Connection")), (503, "1", "close"))
                self.assertEqual(json.loads(data)["error"], error)
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5 * S)
                try:
                    s.sendall(head)
                    time.sleep(0.05)  # the 503 is written meanwhile
                    for k in range(0, len(body), 16384):
                        s.sendall(body[k:k + 16384])
                    resp = T.read_to_eof(s)
                except OSError as e:
                    self.fail("attempt %d, body after a pause: %r" % (i, e))
                finally:
                    s.close()
                self.assertTrue(complete(resp), resp)
                self.assertEqual(status_of(resp), 503)
                self.assertEqual(json.loads(head_and_body(resp)[1])["error"], error)
            # the served connection kept its place; every refusal counted
            self.assertEqual(srv.request("GET", "/healthz", conn=held)[0], 200)
            self.assertEqual(metrics_on(srv, held)[LIMIT], 20)
            # MHD's own lines about connections closed mid-request say nothing
            self.assertNotIn("event=mhd", srv.log_text())
            held.close()

    def test_refused_clients_are_read_for_a_bounded_time_and_size(self):
        """What a refused client sends is read for 2 s and 1 MiB at most: one
        trickling its body is cut about 2 s after it connected, one pouring
        out a 128 MB body once the server has read 1 MiB of it (it gets no
        more in than the kernel's buffers hold), each having read the 503
        at once; and while they linger they do not take the place of a
        served connection."""
        head = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n")
        results = {}

        def refused(name, length, piece, pause):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10 * S)
            t0 = time.monotonic()
            sent = 0
            try:
                s.sendall(head % length)
                first = T.read_to_eof(s)  # the 503 and our end of the stream
                got = time.monotonic() - t0
                try:
                    while sent < length:
                        s.sendall(piece)
                        sent += len(piece)
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                results[name] = (first, got, sent, time.monotonic() - t0)
            finally:
                s.close()

        with limit_one(self) as (srv, held):
            threads = [threading.Thread(target=refused, args=a) for a in (
                ("trickle", 10 ** 6, b"y" * 1000, 0.1),
                ("pour", 128 << 20, b"z" * (1 << 20), 0))]
            for t in threads:
                t.start()
            time.sleep(0.5)
            held.close()
            self.assertEqual(healthz_soon(srv), 200)  # the trickle still lingers
            for t in threads:
                t.join(20 * S)
            for name in ("trickle", "pour"):
                first, got, _, _ = results[name]
                self.assertEqual(status_of(first), 503, name)
                self.assertTrue(complete(first), name)
                self.assertLess(got, 1.0 * S, name)
            _, _, sent, secs = results["trickle"]
            self.assertGreaterEqual(secs, 2.0 - 0.1)
            self.assertLess(secs, 2.0 + 1.0 * S)
            self.assertLess(sent, 30000)
            _, _, sent, secs = results["pour"]
            self.assertLess(sent, 64 << 20)
            self.assertEqual(healthz_soon(srv), 200)
            self.assertIsNone(srv.proc.poll())
            self.assertNotIn("event=mhd", srv.log_text())

    def test_flood_beyond_the_limit(self):
        limit = 40
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s",
                        str(TIMEOUT), "--connection-limit", str(limit), "--retry-after-s", "3"],
                       WORK)
        socks = []
        try:
            time.sleep(0.2)  # the start-up probe's connection is gone
            checker_conn = srv.conn()  # a keep-alive client inside the limit
            self.assertEqual(srv.request("GET", "/healthz", conn=checker_conn)[0], 200)
            rss0 = rss_kib(srv.proc.pid)
            # Up to the limit: idle connections, some with half a request.
            for i in range(limit - 1):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                if i % 2:
                    s.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            time.sleep(0.3)
            t_full = time.monotonic()
            # Beyond it: each newcomer is answered 503 at once and closed.
            extra = [socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                     for _ in range(400)]
            answers = []
            for s in extra:
                s.settimeout(2)
                try:
                    answers.append(T.read_to_eof(s))
                except ConnectionResetError:
                    answers.append(b"reset")
                except socket.timeout:
                    answers.append(b"hang")
                s.close()
            self.assertNotIn(b"hang", answers)
            full = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            self.assertGreater(len(full), 0.9 * len(answers))
            headers, body = head_and_body(full[0])
            self.assertEqual(headers["retry-after"], "3")
            self.assertEqual(headers["connection"], "close")
            self.assertEqual(json.loads(body)["error"], {
                "code": "unavailable",
                "message": "too many open connections (connection_limit 40); retry later"})
            # A plain client gets the same at once, not a hang...
            resp, how, secs = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status_of(resp), 503)
            self.assertLess(secs, 1.0 * S)
            # ...while the keep-alive client inside the limit is still served.
            self.assertEqual(srv.request("GET", "/healthz", conn=checker_conn)[0], 200)
            # The metrics count every refusal (400 + 1) and, once the server
            # has reaped the refused ones, the 40 connections it holds.
            deadline = time.monotonic() + 2 * S
            while True:
                m = metrics_on(srv, checker_conn)
                if m["semid_connections_open"] == limit or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(m[LIMIT], len(extra) + 1)
            self.assertEqual(m["semid_connections_open"], limit)
            # The idle ones are closed once connection_timeout_s has passed.
            for s in socks:
                s.settimeout(TIMEOUT + 3 * S)
                try:
                    self.assertEqual(s.recv(100), b"")
                except ConnectionResetError:
                    pass
            self.assertLess(time.monotonic() - t_full, TIMEOUT + 2.5 * S)
            # Room again: new clients are served (once the server has reaped
            # the idle ones, a moment after their clients saw the close).
            self.assertEqual(healthz_soon(srv), 200)
            x, codes = T.tie_free_inputs(np.random.default_rng(3), TOWER, 2)
            st, _, r = srv.json("POST", "/v1/items:encode",
                                {"inputs": [{"embedding": v.tolist()} for v in x]})
            self.assertEqual([q["codes"] for q in r["results"]], codes.tolist())
            self.assertLess(rss_kib(srv.proc.pid) - rss0, 64 * 1024)
            time.sleep(0.3)  # the sweeper's summary line
            self.assertTrue(re.search(r"event=connection msg=\"refused \d+ connections "
                                      r"over connection_limit 40 \(503\)\"", srv.log_text()))
            no_server_errors(self, srv)
            checker_conn.close()
        finally:
            for s in socks:
                s.close()
            self.assertEqual(srv.stop(), 0)

    def test_flood_within_a_low_open_files_limit(self):
        """Under an open-files limit below what connection_limit needs
        (ulimit -n 600 against the default 1024), a flood of connections
        used to run the process out of descriptors before the limit was
        reached: no client got the 503, neither port answered, and the main
        one stayed dead until connection_timeout_s.  connection_limit now
        comes down to what the limit leaves, (600 - 320) * 8 / 9 = 248, said
        at start, and the flood is answered 503 while both ports stay up;
        a limit that leaves fewer than 16 refuses to start."""
        def nofile(n):
            return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        p = subprocess.run([T.SERVER, "--model", MODEL, "--listen", "127.0.0.1:0",
                            "--registry", "none"], preexec_fn=nofile(330),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("semid-server: open files limit 330 leaves room for fewer than 16 "
                      "connections (320 descriptors are kept for the rest); raise LimitNOFILE / "
                      "ulimit -n to 338 at least\n", p.stderr)
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s",
                        str(TIMEOUT), "--ops-listen", "127.0.0.1:0"], WORK,
                       preexec_fn=nofile(600))
        socks = []
        try:
            ops = int(re.search(r"event=listening .* ops_port=(\d+) ", srv.log_text()).group(1))
            # 600, or less the descriptors valgrind keeps for itself
            m = re.search(r"open files limit (\d+) is low for connection_limit 1024 \(want "
                          r"1472\): connection_limit lowered to (\d+), so that connections "
                          r"over it are answered 503", srv.log_text())
            self.assertTrue(m, srv.log_text())
            limit, lowered = int(m.group(1)), int(m.group(2))
            self.assertEqual((limit if T.WRAPPER else 600, lowered), (limit, (limit - 320) * 8 // 9))
            for _ in range(lowered + 150):
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            resp, how, secs = raw(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status_of(resp), 503, how)
            self.assertLess(secs, 1.0 * S)
            resp, how, secs = raw(ops, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status_of(resp), 200, how)
            for s in socks:
                s.close()
            socks = []
            self.assertEqual(healthz_soon(srv), 200)
            no_server_errors(self, srv)
        finally:
            for s in socks:
                s.close()
            self.assertEqual(srv.stop(), 0)

    @unittest.skipIf(os.environ.get("SEMID_SANITIZE") == "thread",
                     "ThreadSanitizer's shadow memory counts in the resident size")
    def test_memory_bounded_under_a_big_flood(self):
        """1500 connections (fewer if our open-files limit is low), each
        holding up to 16 KiB of unfinished headers, two thirds of them inside
        the limit: resident memory grows by far less than 64 MiB, and the
        server returns to service."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s",
                        str(TIMEOUT), "--connection-limit", str(FLOOD * 2 // 3)], WORK)
        socks = []
        try:
            rss0 = rss_kib(srv.proc.pid)
            junk = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 16000 + b"\r\n"
            for _ in range(FLOOD):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.setblocking(False)
                try:
                    s.send(junk)
                except OSError:
                    pass  # refused over the limit and already closed
                socks.append(s)
            time.sleep(0.5)
            peak = rss_kib(srv.proc.pid)
            self.assertLess(peak - rss0, 64 * 1024, "RSS %d -> %d KiB" % (rss0, peak))
            for s in socks:
                s.close()
            socks = []
            self.assertEqual(healthz_soon(srv, TIMEOUT + 3 * S), 200)
            no_server_errors(self, srv)
        finally:
            for s in socks:
                s.close()
            self.assertEqual(srv.stop(), 0)


class TestAmplification(unittest.TestCase):
    def test_small_json_values_do_not_blow_up_memory(self):
        """A body of millions of tiny JSON values is refused before it is
        decoded into a tree of them: 15 MB of "[]," took about 700 MB of
        memory to find it had too many inputs.  As millions of inputs it is
        413 with their count; as the numbers of one input's embedding, in a
        body with another fault (so that only the full decoder would name
        it), 400."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--max-body-bytes", "20000000"],
                       WORK)
        try:
            rss0 = rss_kib(srv.proc.pid)
            for body, status, msg in (
                    (b'{"inputs": [' + b"[]," * 5000000 + b"[]]}", 413,
                     b'"5000001 inputs; at most 4096 are allowed per request"'),
                    (b'{"inputs": [{"embedding": [' + b"0," * 5000000 + b'0]}], "x": 1}', 400,
                     b'"the body has 5000005 JSON brackets and commas; a request of at most '
                     b'4096 inputs of 16 numbers has no more than 81984"')):
                st, _, data = srv.request("POST", "/v1/items:encode", body,
                                          {"Content-Type": "application/json"})
                with open("/proc/%d/status" % srv.proc.pid) as f:
                    hwm = int(next(ln for ln in f if ln.startswith("VmHWM")).split()[1])
                # the 15 MB body itself is held once; a tree of its values is not
                self.assertLess(hwm - rss0, 100 * 1024, "peak RSS %d -> %d KiB" % (rss0, hwm))
                self.assertEqual(st, status, data[:300])
                self.assertIn(b'"message": ' + msg, data)
        finally:
            self.assertEqual(srv.stop(), 0)


    def test_many_object_members_do_not_blow_up_memory(self):
        """Object members cost jansson about 150 bytes each (a hash table
        entry, its key, its value), so a body of a million unknown keys -
        within the bracket-and-comma bound of a 256-wide tower - took
        160 MB to find its first unknown field (a valid request of that
        size: 11 MB).  Members are bounded apart, 8 an input: past that
        the body is refused undecoded, while a body with an unknown field
        in each of 4096 inputs is still told which."""
        tower = T.tie_free_tower(np.random.default_rng(71), D=256)
        model = os.path.join(WORK, "wide.safetensors")
        T.write_model(model, {"item": tower}, "wide-1")
        srv = T.Server(["--model", model, "--registry", "none", "--max-body-bytes", "20000000"],
                       WORK)
        try:
            rss0 = rss_kib(srv.proc.pid)
            row = "[" + ",".join(["0.125"] * 256) + "]"
            wide = ('{"inputs": [{"embedding": %s}], ' % row +
                    ", ".join('"k%d": 0' % i for i in range(1000000)) + "}").encode()
            st, _, data = srv.request("POST", "/v1/items:encode", wide,
                                      {"Content-Type": "application/json"})
            with open("/proc/%d/status" % srv.proc.pid) as f:
                hwm = int(next(ln for ln in f if ln.startswith("VmHWM")).split()[1])
            self.assertEqual(st, 400, data[:300])
            self.assertEqual(json.loads(data)["error"]["message"],
                             'the body has 1000002 JSON object members ("key": value); a '
                             'request of at most 4096 inputs has no more than 32832')
            # the 15 MB body itself is held once; a tree of its members is not
            # (not under ThreadSanitizer: its shadow of the body, four times
            # its size, counts in the resident size too)
            if os.environ.get("SEMID_SANITIZE") != "thread":
                self.assertLess(hwm - rss0, 64 * 1024, "peak RSS %d -> %d KiB" % (rss0, hwm))
            b64 = T.b64_row(np.zeros(256, np.float32))
            doc = {"inputs": [{"embedding_b64": b64, "name": "n%d" % i} for i in range(4096)]}
            st, _, data = srv.request("POST", "/v1/items:encode", json.dumps(doc).encode(),
                                      {"Content-Type": "application/json"})
            self.assertEqual((st, json.loads(data)["error"]["message"]),
                             (400, 'inputs[0]: unknown field "name" (expected id, embedding, '
                              'embedding_b64)'))
            no_server_errors(self, srv)
        finally:
            self.assertEqual(srv.stop(), 0)


class TestBodyMemory(unittest.TestCase):
    def test_bodies_held_at_once_are_bounded(self):
        """body_memory_bytes bounds the bodies held at once: with two
        100 kB bodies half sent, a third (by Content-Length or chunked) is
        read and dropped and answered 503 with Retry-After, on a connection
        kept alive; the first two then complete and are encoded, and once
        they let go a new body fits again.  Before, connection_limit x
        max_body_bytes (16 GiB with the Kubernetes config) was the only
        bound, far above a pod's memory."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--max-body-bytes", "100000",
                        "--body-memory-bytes", "250000"], WORK)
        row = [float(x) for x in np.linspace(-1, 1, TOWER.D)]
        body = json.dumps({"inputs": [{"id": "big", "embedding": row}]}).encode()
        body += b" " * (100000 - len(body))  # whitespace after the value is still JSON
        head = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n")
        holders = []
        try:
            for _ in range(2):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10 * S)
                s.sendall(head + b"Content-Length: 100000\r\n\r\n" + body[:60000])
                holders.append(s)
            # both bodies are being read: 200000 bytes held
            self.assertEqual(body_bytes_settle(srv, 200000), 200000)
            want = ('"message": "the server holds body_memory_bytes (250000) of other '
                    "requests' bodies, decoded requests and answers; retry later\"").encode()
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            for name, third in (("content-length", head + b"Content-Length: 100000\r\n\r\n"
                                 + body),
                                ("chunked", head + b"Transfer-Encoding: chunked\r\n\r\n"
                                 + chunked)):
                with self.subTest(third=name):
                    resp, how, _ = raw(srv.port, third, keep=True)
                    self.assertEqual(status_of(resp), 503, resp[:300])
                    headers, data = head_and_body(resp)
                    self.assertEqual(headers.get("retry-after"), "1")
                    self.assertNotIn("connection", headers)  # kept alive
                    self.assertIn(want, data)
            for s in holders:
                out = finish(s, body[60000:])
                self.assertEqual(status_of(out), 200, out[:300])
                self.assertEqual(json.loads(head_and_body(out)[1])["results"][0]["id"], "big")
            # both done: their bodies are let go (their answers once sent: just
            # after the client has them), and a third fits now
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            for _ in range(3):
                st, _, data = srv.request("POST", "/v1/items:encode", body,
                                          {"Content-Type": "application/json"})
                self.assertEqual(st, 200, data[:300])
            no_server_errors(self, srv)
        finally:
            for s in holders:
                s.close()
            self.assertEqual(srv.stop(), 0)

    def test_answers_held_are_bounded(self):
        """Answers count against body_memory_bytes until they are sent: an
        encode answer with top_k 16 and return_quantized is about eight
        times its request (1 MB in, 8 MB out here), and a client that does
        not read its answers held one per connection, connection_limit of
        them (gigabytes, past the Kubernetes pod's 1 GiB), until
        connection_timeout_s.  With one such answer unread, the next that
        would pass the bound is a 503 with Retry-After; once the first is
        read, its memory is let go and the same request is answered."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--max-inputs", "8192",
                        "--max-body-bytes", "2000000", "--body-memory-bytes", "10000000"],
                       WORK)
        rng = np.random.default_rng(9)
        x = rng.standard_normal((8192, TOWER.D)).astype(np.float32)
        doc = {"inputs": [{"embedding_b64": T.b64_row(r)} for r in x], "top_k": 16,
               "return_quantized": True}
        body = json.dumps(doc).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10 * S)
        try:
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            deadline = time.monotonic() + 10 * S
            while True:  # encoded, its answer waiting for us to read it
                held = srv.metrics()["semid_request_body_bytes"]
                if held > 5000000 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertGreater(held, 5000000, "the unread answer is not counted")
            st, h, data = srv.request("POST", "/v1/items:encode", body,
                                      {"Content-Type": "application/json"})
            self.assertEqual((st, h.get("retry-after")), (503, "1"), data[:300])
            msg = json.loads(data)["error"]["message"]
            self.assertRegex(msg, r"^the answer \(\d+ bytes\) would take the request bodies, "
                             r"decoded requests and answers held past body_memory_bytes "
                             r"\(10000000\); retry later$")
            resp, need = bytearray(), None
            while need is None or len(resp) < need:
                chunk = s.recv(1 << 20)
                self.assertTrue(chunk, resp[:300])
                resp += chunk
                if need is None and b"\r\n\r\n" in resp:
                    head = bytes(resp[:resp.index(b"\r\n\r\n") + 4])
                    need = len(head) + int(re.search(rb"(?i)\r\ncontent-length: *(\d+)",
                                                     head).group(1))
            resp = bytes(resp)
            self.assertEqual(status_of(resp), 200, resp[:300])
            self.assertEqual(len(json.loads(head_and_body(resp)[1])["results"]), 8192)
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            st, _, data = srv.request("POST", "/v1/items:encode", body,
                                      {"Content-Type": "application/json"})
            self.assertEqual(st, 200, data[:300])
            no_server_errors(self, srv)
        finally:
            s.close()
            self.assertEqual(srv.stop(), 0)

    def test_decoded_requests_are_bounded(self):
        """Decoded requests count against body_memory_bytes: a row of 16
        zeros is 48 bytes of JSON and 76 of floats and offsets, and the
        tree jansson parses a body through (an escape in a string sends a
        body there) tens of times its body, yet once a body was decoded
        nothing of it was counted, so concurrent requests held several
        times the bound.  With a 100 kB body being read, a 95 kB request,
        whose body fits beside it, is refused 503 with Retry-After, on a
        connection kept alive, when its decoded form would pass the bound,
        by either decoder, and leaves nothing counted; once the first is
        done both requests are answered, and the count is back to 0."""
        srv = T.Server(["--model", MODEL, "--registry", "none", "--max-body-bytes", "100000",
                        "--body-memory-bytes", "250000"], WORK)
        zeros = "[" + ",".join(["0"] * TOWER.D) + "]"
        rows = ", ".join(['{"embedding": %s}' % zeros] * 1899)
        bodies = {"fast": ('{"inputs": [{"embedding": %s}, %s]}' % (zeros, rows)).encode(),
                  "jansson": ('{"inputs": [{"id": "\\u0061", "embedding": %s}, %s]}'
                              % (zeros, rows)).encode()}
        holder_body = json.dumps({"inputs": [{"embedding": [0.5] * TOWER.D}]}).encode()
        holder_body += b" " * (100000 - len(holder_body))
        head = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n")
        holder = socket.create_connection(("127.0.0.1", srv.port), timeout=10 * S)
        try:
            holder.sendall(head + b"Content-Length: 100000\r\n\r\n" + holder_body[:60000])
            self.assertEqual(body_bytes_settle(srv, 100000), 100000)
            for name, body in bodies.items():
                with self.subTest(decoder=name):
                    self.assertLess(len(body), 100000)
                    resp, _, _ = raw(srv.port, head + b"Content-Length: %d\r\n\r\n" % len(body)
                                     + body, keep=True)
                    self.assertEqual(status_of(resp), 503, resp[:300])
                    headers, data = head_and_body(resp)
                    self.assertEqual(headers.get("retry-after"), "1")
                    self.assertNotIn("connection", headers)  # kept alive
                    self.assertRegex(json.loads(data)["error"]["message"],
                                     r"^the decoded request \(\d+ bytes\) would take the "
                                     r"request bodies, decoded requests and answers held past "
                                     r"body_memory_bytes \(250000\); retry later$")
                    # its body is let go, and nothing of its decoded form is left
                    self.assertEqual(body_bytes_settle(srv, 100000), 100000)
            out = finish(holder, holder_body[60000:])
            self.assertEqual(status_of(out), 200, out[:300])
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            for name, body in bodies.items():
                # a decoded form over the bound runs only when nothing else
                # is held: the previous answer is let go just after the
                # client has it (a flake under load: this request came first)
                self.assertEqual(body_bytes_settle(srv, 0), 0)
                st, _, data = srv.request("POST", "/v1/items:encode", body,
                                          {"Content-Type": "application/json"})
                self.assertEqual(st, 200, data[:300])
                self.assertEqual(len(json.loads(data)["results"]), 1900)
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            no_server_errors(self, srv)
        finally:
            holder.close()
            self.assertEqual(srv.stop(), 0)

    def test_budget_below_the_body_cap_is_refused(self):
        p = subprocess.run(
            [T.SERVER, "--model", MODEL, "--registry", "none", "--max-body-bytes", "100000",
             "--body-memory-bytes", "99999"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("body_memory_bytes (99999) must be at least max_body_bytes (100000), or "
                      "a body of the largest size accepted could never be read", p.stderr)


class TestOversized(unittest.TestCase):
    def test_headers(self):
        cases = [
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" +
             b"".join(b"X-H%d: v\r\n" % i for i in range(20000)) + b"\r\n", 431),
            (b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ]
        for req, want in cases:
            resp, how, secs = raw(SRV.port, req)
            self.assertEqual(status_of(resp), want, resp[:200])
            self.assertIn(how, ("eof", "reset"))  # and the connection is closed
            self.assertLess(secs, 2.0 * S)
            self.assertEqual(SRV.request("GET", "/healthz")[0], 200)
        no_server_errors(self, SRV)

    def test_chunked_body_over_the_limit(self):
        """test_server.py streams many small chunks past max_body_bytes; here
        one chunk announces more than the limit (and than memory) at once."""
        head = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        # one 1 MiB chunk, sent in full: 413 once it is in, none of it kept
        resp, how, secs = raw(SRV.port, head + b"100000\r\n" + b" " * (1 << 20) +
                              b"\r\n0\r\n\r\n")
        self.assertEqual(status_of(resp), 413, resp[:200])
        self.assertEqual(json.loads(head_and_body(resp)[1])["error"]["message"],
                         "the body is over 100000 bytes")
        # chunk sizes of 256 TiB and past 64 bits, then a stall
        # (closed by the server, not by raw() giving up: raw() waits at most
        # TIMEOUT + 3 s for each read, a margin for a loaded machine, where
        # reading the 120 kB before the stall took over 2 s under ASan)
        for size in (b"ffffffffffff", b"ffffffffffffffffffff"):
            resp, how, secs = raw(SRV.port, head + size + b"\r\n" + b"[0," * 40000,
                                  timeout=TIMEOUT + 3 * S)
            self.assertIn(status_of(resp), (400, 413, None), (size, resp[:200]))
            self.assertIn(how, ("eof", "reset"))
        no_server_errors(self, SRV)

    def test_body_on_a_get_route_over_the_limit(self):
        """A body where none is expected is capped like any: 413 (JSON) from
        its Content-Length before it is sent, or once a chunked one ends;
        never a silent close."""
        for path in (b"/healthz", b"/v1/sids/1-2-0"):
            resp, how, secs = raw(SRV.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 500000\r\n\r\n" + b" " * 200000)
            self.assertEqual(status_of(resp), 413, (path, resp[:200]))
            self.assertEqual(json.loads(head_and_body(resp)[1])["error"]["message"],
                             "the body is 500000 bytes; at most 100000 are accepted")
        chunk = b" " * 60000
        resp, how, secs = raw(SRV.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n" +
                              b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n",
                              keep=True)
        self.assertEqual(status_of(resp), 413, resp[:200])
        self.assertEqual(json.loads(head_and_body(resp)[1])["error"]["message"],
                         "the body is over 100000 bytes")
        no_server_errors(self, SRV)


class TestRefusedWithBody(unittest.TestCase):
    """A request refused on its headers (unknown route, wrong method, wrong
    Content-Type, admin route without the token) whose body is still coming:
    the server answered at once and closed, and the body's rest made the
    kernel answer RST, so the client's send failed (a broken pipe, 10 of 10
    times with the body sent 50 ms after the headers) before it could read
    the answer.  It is now read in full, answered, and the connection kept."""

    def exchange(self, s, head, body):
        """@head, a pause, then @body in pieces; -> one whole response."""
        s.sendall(head)
        time.sleep(0.05)  # an answer written at once is out by now
        for k in range(0, len(body), 16384):
            s.sendall(body[k:k + 16384])
        resp = b""
        while not complete(resp):
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        return resp

    def test_refusal_reaches_a_client_still_sending(self):
        body = b"x" * 90000  # under max_body_bytes (100000); dropped unread
        cases = [  # (request line and headers, status, error code)
            (b"POST /v1/nowhere HTTP/1.1\r\n", 404, "not_found"),
            (b"POST /healthz HTTP/1.1\r\n", 405, "method_not_allowed"),
            (b"POST /v1/items:encode HTTP/1.1\r\nContent-Type: text/plain\r\n", 415,
             "unsupported_media_type"),
            (b"POST /v1/admin/reload HTTP/1.1\r\n", 403, "permission_denied"),
        ]
        for i in range(3):
            for line, want, code in cases:
                s = socket.create_connection(("127.0.0.1", SRV.port), timeout=5 * S)
                try:
                    head = line + b"Host: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                    try:
                        resp = self.exchange(s, head, body)
                    except OSError as e:
                        self.fail("%s, attempt %d: %r" % (line, i, e))
                    self.assertTrue(complete(resp), resp[:300])
                    self.assertEqual(status_of(resp), want, resp[:300])
                    headers, got = head_and_body(resp)
                    self.assertEqual(json.loads(got)["error"]["code"], code)
                    self.assertNotEqual(headers.get("connection"), "close", line)
                    # the body was not taken for a request: the connection
                    # serves the next one
                    resp = self.exchange(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"")
                    self.assertEqual(status_of(resp), 200, resp[:300])
                    self.assertEqual(json.loads(head_and_body(resp)[1]), {"status": "ok"})
                finally:
                    s.close()
        no_server_errors(self, SRV)

    def test_chunked_body_over_the_limit_is_413(self):
        """A refused request's chunked body over max_body_bytes is 413, as on
        any route, not the refusal (it was 404 and 415); the connection
        still serves the request after it."""
        chunk = b" " * 50000
        body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n"
        for line in (b"POST /v1/nowhere HTTP/1.1\r\n",
                     b"POST /v1/items:encode HTTP/1.1\r\nContent-Type: text/plain\r\n"):
            s = socket.create_connection(("127.0.0.1", SRV.port), timeout=5 * S)
            try:
                resp = self.exchange(s, line + b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                                     body)
                self.assertEqual(status_of(resp), 413, resp[:300])
                self.assertEqual(json.loads(head_and_body(resp)[1])["error"]["message"],
                                 "the body is over 100000 bytes")
                resp = self.exchange(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"")
                self.assertEqual(status_of(resp), 200, resp[:300])
            finally:
                s.close()
        no_server_errors(self, SRV)

    def test_a_refusal_never_sent_is_logged_499(self):
        """A refused request whose body never arrives in full is cut at the
        deadline with no answer: its log line and metrics say 499 (closed
        before an answer), not the 404 it would have had."""
        before = SRV.metrics().get('semid_requests_total{route="other",code="404"}', 0)
        s = socket.create_connection(("127.0.0.1", SRV.port), timeout=5 * S)
        try:
            s.sendall(b"POST /never HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            resp = T.read_to_eof(s)  # the deadline (2 s) cuts it
        except ConnectionResetError:
            resp = b""
        finally:
            s.close()
        self.assertEqual(resp, b"")
        deadline = time.monotonic() + 5 * S
        while time.monotonic() < deadline and "route=/never " not in SRV.log_text():
            time.sleep(0.05)
        lines = [ln for ln in SRV.log_text().splitlines() if "route=/never " in ln]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"status=499 .*termination=timeout")
        self.assertEqual(SRV.metrics().get('semid_requests_total{route="other",code="404"}', 0),
                         before)

    def test_answered_before_the_body_when_it_need_not_come(self):
        """A client waiting for "100 Continue" gets the refusal instead, and a
        Content-Length over max_body_bytes is refused before the body: both
        answered at once with Connection: close (nothing of a body is read)."""
        for head, want in (
                (b"POST /v1/nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 5000\r\n\r\n", 404),
                (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: 500000\r\n\r\n", 413)):
            resp, how, secs = raw(SRV.port, head)
            self.assertEqual(status_of(resp), want, resp[:300])
            self.assertNotIn(b"100 Continue", resp)
            self.assertEqual(head_and_body(resp)[0].get("connection"), "close")
            self.assertEqual(how, "eof")
            self.assertLess(secs, 2.0 * S)
        no_server_errors(self, SRV)

    def test_http10_expect_is_ignored(self):
        """`Expect: 100-continue` in an HTTP/1.0 request, which RFC 9110
        10.1.1 has a server ignore (libmicrohttpd sends it no "100
        Continue", so its client sends the body without one): its refusal
        was answered at once and the connection closed under the body still
        coming, so the client's send failed, as before any refusal waited
        for the body.  Its body is read, and the refusal then answered."""
        body = b"x" * 90000
        for line, want in ((b"POST /v1/nowhere HTTP/1.0\r\n", 404),
                           (b"POST /v1/items:encode HTTP/1.0\r\nContent-Type: text/plain\r\n",
                            415)):
            for i in range(3):
                s = socket.create_connection(("127.0.0.1", SRV.port), timeout=5 * S)
                try:
                    head = line + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(
                        body)
                    try:
                        resp = self.exchange(s, head, body)
                    except OSError as e:
                        self.fail("%s, attempt %d: %r" % (line, i, e))
                    self.assertEqual(status_of(resp), want, resp[:300])
                    self.assertNotIn(b"100 Continue", resp)
                finally:
                    s.close()
        no_server_errors(self, SRV)

    def test_content_length_over_the_limit_is_413_at_once(self):
        """A refused request whose Content-Length is over max_body_bytes is
        413 before its body, as on any route: its body was read and dropped
        instead, and one past 2 x max_body_bytes + 1 MiB was cut with no
        answer at all (the headers alone were held until the deadline)."""
        for line in (b"POST /v1/nowhere HTTP/1.1\r\n",
                     b"GET /v1/items:encode HTTP/1.1\r\n",
                     b"POST /v1/items:encode HTTP/1.1\r\nContent-Type: text/plain\r\n",
                     b"POST /v1/items:encode?top_k=2 HTTP/1.1\r\n"
                     b"Content-Type: application/json\r\n",
                     b"POST /v1/admin/reload HTTP/1.1\r\n",
                     b"OPTIONS /v1/items:encode HTTP/1.1\r\n",
                     b"POST /v1/items/a%zz HTTP/1.1\r\n"):
            resp, how, secs = raw(SRV.port, line + b"Host: x\r\nContent-Length: 5000000\r\n\r\n")
            self.assertEqual(status_of(resp), 413, (line, resp[:300]))
            headers, got = head_and_body(resp)
            self.assertEqual(json.loads(got)["error"],
                             {"code": "payload_too_large",
                              "message": "the body is 5000000 bytes; at most 100000 are "
                                         "accepted"}, line)
            self.assertEqual(headers.get("connection"), "close", line)
            self.assertNotIn("allow", headers, line)
            self.assertEqual(how, "eof", line)
            self.assertLess(secs, 1.5 * S, line)
        no_server_errors(self, SRV)


class TestHalfClosed(unittest.TestCase):
    def test_answered_and_closed_when_the_client_shuts_its_side(self):
        """A client that sends its request(s) and shuts its sending side at
        once (shutdown(SHUT_WR): `printf ... | nc`) sees the end of the
        stream at once after its answer, whatever the route, method or
        status: libmicrohttpd read the request and the end in one go and
        then waited for more until connection_timeout_s, on OPTIONS, GET
        and POST alike, as a race (6 of 10 held here).  With the timeout at
        60 s, each of these connections, several of each kind at once, must
        be closed within 10 s, those answered on their headers or body
        with their answers, pipelined ones included.  An encode, which waits
        for its batch, may be taken as given up instead when libmicrohttpd
        reads the client's end before the answer is ready (499, no answer,
        closed at once; proto/api.md): never held either."""
        x, codes = T.tie_free_inputs(np.random.default_rng(9), TOWER, 1)
        enc = json.dumps({"inputs": [{"embedding": x[0].tolist()}]}).encode()

        def post(path, body, ctype=b"application/json"):
            return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: "
                    b"%d\r\n\r\n%s" % (path.encode(), ctype, len(body), body))

        def line(method, path):
            return b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method.encode(), path.encode())
        cases = [  # (request bytes, the statuses answered; or, for an encode, the ones before it)
            (line("OPTIONS", "/v1/items:encode"), [[204]]),
            (line("OPTIONS", "*"), [[204]]),
            (line("GET", "/healthz"), [[200]]),
            (line("HEAD", "/healthz"), [[200]]),
            (line("GET", "/v1/model"), [[200]]),
            (line("GET", "/nope"), [[404]]),
            (line("GET", "/v1/items:encode"), [[405]]),
            (post("/v1/items:encode", b"{}"), [[400]]),
            (post("/v1/items:encode", enc, b"text/plain"), [[415]]),
            (post("/v1/items:encode", enc), [[200], []]),
            (line("GET", "/healthz") + line("OPTIONS", "/v1/model") + post(
                "/v1/items:encode", enc), [[200, 204, 200], [200, 204]]),
        ]
        srv = T.Server(["--model", MODEL, "--registry", "none", "--connection-timeout-s", "60"],
                       WORK)
        try:
            socks = {}
            for req, want in cases * 4:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
                socks[s] = (req, want, [b""])
            deadline = time.monotonic() + 10 * S
            open_ = set(socks)
            while open_ and time.monotonic() < deadline:
                for s in select.select(list(open_), [], [], 0.5)[0]:
                    chunk, end = recv_or_end(s, 65536)
                    socks[s][2][0] += chunk
                    if end:
                        self.assertEqual(end, "eof", socks[s][0])
                        open_.discard(s)
            for s, (req, want, got) in socks.items():
                s.close()
                statuses = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", got[0])]
                self.assertIn(statuses, want, "%r: %r" % (req[:60], got[0][-200:]))
                self.assertFalse(s in open_, "%r: held open after %r" % (req[:60], statuses))
                if req.startswith(b"POST") and statuses == [200]:
                    self.assertEqual(json.loads(head_and_body(got[0])[1])["results"][0]["codes"],
                                     codes[0].tolist())
            no_server_errors(self, srv)
        finally:
            self.assertEqual(srv.stop(), 0)


class TestGoneWhileWaiting(unittest.TestCase):
    def test_a_client_gone_while_its_request_waits_is_499(self):
        """A client that closes its connection while its request waits for
        its batch (max_delay_us 1 s here) never reads the answer: its log
        line and semid_requests_total say 499, termination=aborted, where a
        suspended connection is not read and its answer, written into the
        kernel's buffer on resuming, was logged and counted 200.  The rows
        still leave semid_queue_rows and the body semid_request_body_bytes,
        and a client that stays is answered 200 as ever.  The rows gone
        were encoded all the same: semid_encoded_total, the encode work
        done (what the dashboard's rows per second and the entropy alerts'
        gate read), counts them, and its HELP says so, where it said rows
        "answered with codes"."""
        x, codes = T.tie_free_inputs(np.random.default_rng(5), TOWER, 2)
        enc = json.dumps({"inputs": [{"embedding": r.tolist()} for r in x]}).encode()
        srv = T.Server(["--model", MODEL, "--registry", "none", "--max-delay-us", "1000000"],
                       WORK)
        try:
            key = 'semid_requests_total{route="/v1/items:encode",code="%d"}'
            for rid in ("gone-1", "gone-2"):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (rid.encode(), len(enc), enc))
                self.assertEqual(metric_settle(srv, "semid_queue_rows", 2), 2)
                s.close()
                deadline = time.monotonic() + 5 * S
                while time.monotonic() < deadline and "request_id=" + rid not in srv.log_text():
                    time.sleep(0.05)
            lines = [ln for ln in srv.log_text().splitlines() if "request_id=gone-" in ln]
            self.assertEqual(len(lines), 2, lines)
            for ln in lines:
                self.assertRegex(ln, r"event=request method=POST route=/v1/items:encode "
                                     r"status=499 items=2 .*termination=aborted")
            self.assertNotIn("event=mhd", srv.log_text())
            m = srv.metrics()
            self.assertEqual(m.get(key % 499), 2)
            self.assertIsNone(m.get(key % 200))
            self.assertEqual(m.get('semid_encoded_total{tower="item"}'), 4)
            help_line = [ln for ln in srv.request("GET", "/metrics")[2].decode().splitlines()
                         if ln.startswith("# HELP semid_encoded_total ")]
            self.assertEqual(help_line, ["# HELP semid_encoded_total Rows encoded, by tower "
                                         "(the work done, a request whose client left before "
                                         "its answer, a 499, included)."])
            self.assertEqual(metric_settle(srv, "semid_queue_rows", 0), 0)
            self.assertEqual(body_bytes_settle(srv, 0), 0)
            st, _, body = srv.request("POST", "/v1/items:encode", enc,
                                      {"Content-Type": "application/json"})
            self.assertEqual(st, 200, body)
            self.assertEqual([r["codes"] for r in json.loads(body)["results"]], codes.tolist())
            m = srv.metrics()
            self.assertEqual((m.get(key % 200), m.get('semid_encoded_total{tower="item"}')), (1, 6))
            no_server_errors(self, srv)
        finally:
            self.assertEqual(srv.stop(), 0)


class TestDrainRefusals(unittest.TestCase):
    def test_connections_turned_away_while_draining_are_logged(self):
        """A connection opened while the server drains (an assign held by
        a SQLite lock another process has) is answered the canned 503, and
        event=shutdown lines count them, per port, as proto/api.md says
        (a load balancer still sending after SIGTERM is to be seen): no
        line said so."""
        d = tempfile.mkdtemp(prefix="semid-drain-", dir=WORK)
        model = os.path.join(d, "model.safetensors")
        shutil.copy(MODEL, model)
        ops = socket.socket()
        ops.bind(("127.0.0.1", 0))
        ops_port = ops.getsockname()[1]
        ops.close()
        srv = T.Server(["--model", model, "--registry-timeout-ms", "5000",
                        "--shutdown-timeout-ms", "10000",
                        "--ops-listen", "127.0.0.1:%d" % ops_port], d)
        x, _ = T.tie_free_inputs(np.random.default_rng(3), TOWER, 2)

        def assign(i):
            return srv.request("POST", "/v1/items:assign",
                               {"inputs": [{"id": "d%d" % i, "embedding": x[i].tolist()}]})[0]
        self.assertEqual(assign(0), 200)
        db = sqlite3.connect(os.path.join(d, "semid-registry.db"), isolation_level=None,
                             timeout=1)
        held = []
        try:
            db.execute("BEGIN IMMEDIATE")
            t = threading.Thread(target=lambda: held.append(assign(1)))
            t.start()
            time.sleep(0.5)  # the assign waits for the store's lock (up to 5 s)
            srv.signal(signal.SIGTERM)
            deadline = time.monotonic() + 3 * S
            while "SIGTERM: draining 1 in-flight" not in srv.log_text():
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            for port, n in ((srv.port, 3), (ops_port, 2)):
                for _ in range(n):
                    resp, _, _ = raw(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                    self.assertEqual(status_of(resp), 503, resp[:200])
                    self.assertIn(b"the server is shutting down", resp)
        finally:
            db.execute("ROLLBACK")
            db.close()
        t.join(10 * S)
        self.assertEqual(held, [200])
        self.assertEqual(srv.wait(), 0)
        log = srv.log_text()
        for where, n in (("main port", 3), ("operations port", 2)):
            said = re.findall(r"level=warn event=shutdown msg=\"refused (\d+) connections? "
                              r"to the %s while draining \(503\)\"" % where, log)
            self.assertEqual(sum(int(k) for k in said), n, (where, log[-3000:]))


class TestExpectWithoutBody(unittest.TestCase):
    """`Expect: 100-continue` on a request without a body (which RFC 9110
    10.1.1 says a client must not send, and some do) with another request
    pipelined behind it: libmicrohttpd sends "100 Continue" and then calls
    the handler once more, with nothing, before the request is complete, where
    an answer cannot be queued yet.  Answering there dropped the connection:
    neither request was answered.  Each request is answered, in order, sync
    routes and those answered later (a lookup, a reload) alike."""

    @classmethod
    def setUpClass(cls):
        cls.srv = T.Server(["--model", MODEL, "--registry", os.path.join(WORK, "expect.db"),
                            "--admin-token", "expect-token"], WORK)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def answers(self, resp):
        """the statuses of @resp's final answers (100 Continue left out)"""
        return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", resp) if m != b"100"]

    def test_pipelined_behind(self):
        last = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        exp = b"Expect: 100-continue\r\n"
        for first, want in (
                (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + exp + b"\r\n", 200),
                (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + exp +
                 b"Content-Length: 0\r\n\r\n", 200),
                (b"GET /nope HTTP/1.1\r\nHost: x\r\n" + exp + b"\r\n", 404),
                (b"GET /v1/admin/reload HTTP/1.1\r\nHost: x\r\n" + exp + b"\r\n", 405),
                (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\n" + exp + b"Content-Length: 0\r\n\r\n", 400),
                (b"GET /v1/items/nobody HTTP/1.1\r\nHost: x\r\n" + exp + b"\r\n", 404),
                (b"POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 b"expect-token\r\n" + exp + b"Content-Length: 0\r\n\r\n", 200)):
            resp, how, _ = raw(self.srv.port, first + last)
            self.assertEqual(self.answers(resp), [want, 200], (first, resp[:600]))
            self.assertEqual(how, "eof", first)
        # and alone, as before
        resp, how, _ = raw(self.srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + exp +
                           b"Connection: close\r\n\r\n")
        self.assertEqual(self.answers(resp), [200], resp[:300])
        no_server_errors(self, self.srv)
        self.assertNotIn("internal error", self.srv.log_text())

    def test_authorization_once(self):
        """Two Authorization headers on an admin route: the first was taken,
        so the good token then a bad one reloaded and the other order was a
        403.  One value is allowed (RFC 9110); two are a 400, either order,
        and one good token still reloads."""
        good, bad = b"Bearer expect-token", b"Bearer wrong"
        for a, b in ((good, bad), (bad, good), (good, good)):
            req = (b"POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\nAuthorization: " + a +
                   b"\r\nAuthorization: " + b + b"\r\nContent-Length: 0\r\n"
                   b"Connection: close\r\n\r\n")
            resp, how, _ = raw(self.srv.port, req)
            self.assertEqual(status_of(resp), 400, (a, b, resp[:300]))
            self.assertEqual(json.loads(head_and_body(resp)[1])["error"],
                             {"code": "invalid_argument",
                              "message": "more than one Authorization header"})
        resp, how, _ = raw(self.srv.port, b"POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: " + good + b"\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
        self.assertEqual(status_of(resp), 200, resp[:300])
        no_server_errors(self, self.srv)


class TestMalformed(unittest.TestCase):
    POST = b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

    def check(self, req, statuses, closed=True, message=None):
        resp, how, secs = raw(SRV.port, req, timeout=TIMEOUT + 3 * S, keep=not closed)
        self.assertIn(status_of(resp), statuses, (req[:80], resp[:300]))
        if closed:
            self.assertIn(how, ("eof", "reset"), req[:80])
            self.assertLess(secs, 1.0 * S, req[:80])
        else:
            self.assertEqual(how, "open", req[:80])  # keep-alive survives
        if message is not None:
            _, body = head_and_body(resp)
            self.assertEqual(json.loads(body)["error"],
                             {"code": "invalid_argument", "message": message})
        self.assertEqual(SRV.request("GET", "/healthz")[0], 200)
        return resp

    def test_request_line(self):
        # Not HTTP at all: libmicrohttpd closes without an answer.
        resp, how, secs = raw(SRV.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        self.assertIn(status_of(resp), (None, 400))
        self.assertIn(how, ("eof", "reset"))
        self.assertLess(secs, 1.0 * S)
        self.check(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", (505,))
        self.check(b"GET /healthz\r\nHost: x\r\n\r\n", (400,))  # no version
        self.check(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", (400,))
        no_server_errors(self, SRV)

    def test_content_length(self):
        for cl in (b"-5", b"abc", b"1e3", b"99999999999999999999999999"):
            self.check(self.POST + b"Content-Length: " + cl + b"\r\n\r\n{}", (400, 413))
        self.check(self.POST + b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}xxx", (400,),
                   message="more than one Content-Length header")
        self.check(self.POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"2\r\n{}\r\n0\r\n\r\n", (400,),
                   message="a request may not carry both Transfer-Encoding and Content-Length")
        # whitespace before the colon (RFC 9112 5.1): libmicrohttpd keeps
        # "Content-Length " as another header, so the body would be read as
        # the next request, where a proxy in front may have seen a body
        for name in (b"Content-Length ", b"Content-Length\t", b"X Pad"):
            self.check(self.POST + b"Content-Length: 2\r\n" * (name == b"X Pad") + name +
                       b": 2\r\n\r\n{}", (400,),
                       message='the header name "%s" holds whitespace (none may come '
                       'before the colon)' % name.decode())
        no_server_errors(self, SRV)

    def test_content_type_once(self):
        """Two Content-Type headers: the first was taken, so json then
        text/plain was served and the other order was a 415.  One value is
        allowed (RFC 9110); two are a 400, either order, the connection
        kept (the framing is sound)."""
        body = json.dumps({"inputs": [{"embedding": [0.0] * 16}]}).encode()
        for a, b in ((b"application/json", b"text/plain"), (b"text/plain", b"application/json")):
            req = (b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Type: " + a +
                   b"\r\nContent-Type: " + b + b"\r\nContent-Length: %d\r\n\r\n" % len(body) +
                   body)
            self.check(req, (400,), closed=False, message="more than one Content-Type header")
        no_server_errors(self, SRV)

    def test_host(self):
        # RFC 9112 3.2: an HTTP/1.1 request without Host, or any request
        # with two, is a 400; a proxy in front may have routed it by
        # another host than the one this server would log
        self.check(b"GET /healthz HTTP/1.1\r\n\r\n", (400,),
                   message="an HTTP/1.1 request must carry a Host header")
        self.check(b"POST /v1/items:encode HTTP/1.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 2\r\n\r\n{}", (400,),
                   message="an HTTP/1.1 request must carry a Host header")
        for version in (b"1.1", b"1.0"):
            self.check(b"GET /healthz HTTP/" + version + b"\r\nHost: a\r\nHost: b\r\n\r\n",
                       (400,), message="more than one Host header")
        # HTTP/1.0 has no Host requirement; an empty Host is allowed (RFC
        # 9112 3.2: a request target with no authority)
        resp, _, _ = raw(SRV.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(status_of(resp), 200, resp[:300])
        self.check(b"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n", (200,), closed=False)
        no_server_errors(self, SRV)

    def test_chunked(self):
        self.check(self.POST + b"Transfer-Encoding: gzip\r\n\r\n{}", (400,),
                   message='Transfer-Encoding "gzip" is not supported (only chunked)')
        # a trailing space: libmicrohttpd does not read it as chunked
        self.check(self.POST + b"Transfer-Encoding: chunked \r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                   (400,), message='Transfer-Encoding "chunked " is not supported (only chunked)')
        # HTTP/1.0 has no chunked coding (RFC 9112 6.1): its framing is
        # not to be trusted, even asking for keep-alive
        self.check(b"POST /v1/items:encode HTTP/1.0\r\nContent-Type: application/json\r\n"
                   b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"2\r\n{}\r\n0\r\n\r\nGET /readyz HTTP/1.0\r\n\r\n", (400,),
                   message="an HTTP/1.0 request may not carry Transfer-Encoding")
        # two headers are one list, "chunked, identity", to a proxy in front
        # (chunked not last: no length it can trust); libmicrohttpd read the
        # first alone and took the body as chunked
        self.check(self.POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                   b"\r\n2\r\n{}\r\n0\r\n\r\n", (400,),
                   message="more than one Transfer-Encoding header")
        self.check(self.POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", (400,))
        self.check(self.POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}xx\r\n0\r\n\r\n",
                   (400,))
        # a well-formed chunked body is fine, and keeps the connection
        x, codes = T.tie_free_inputs(np.random.default_rng(4), TOWER, 1)
        doc = json.dumps({"inputs": [{"embedding": x[0].tolist()}]}).encode()
        half = len(doc) // 2
        resp = self.check(self.POST + b"Transfer-Encoding: chunked\r\n\r\n" +
                          b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, doc[:half],
                                                                   len(doc) - half, doc[half:]),
                          (200,), closed=False)
        self.assertEqual(json.loads(head_and_body(resp)[1])["results"][0]["codes"],
                         codes[0].tolist())
        no_server_errors(self, SRV)

    def test_nul_bytes(self):
        # In the body: malformed JSON, a 400 with the position.
        resp = self.check(self.POST + b"Content-Length: 4\r\n\r\n{\x00}x", (400,), closed=False)
        self.assertIn("malformed JSON", json.loads(head_and_body(resp)[1])["error"]["message"])
        # In the request line or a header: libmicrohttpd reads them as C
        # strings, so the line ends at the NUL; the server answers for what
        # came before it and carries on.
        self.check(b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n", (404,), closed=False)
        self.check(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", (200,),
                   closed=False)
        no_server_errors(self, SRV)

    def test_libmicrohttpds_own_answers_are_counted(self):
        """Requests libmicrohttpd refuses itself, before the server's
        handler sees them (headers over its buffer, a header line without
        a colon, a Content-Length that is no number) or while it reads the
        body (a bad chunk), count in semid_requests_total with the status
        it sent, and log a request line: they did not count at all, and
        the bad chunk counted as 499 (the client gone), which it was not.
        (A URL over its buffer, 414, and an HTTP version it does not
        speak, 505, are refused before the request line is parsed, with no
        hook: proto/api.md says so.)"""
        cases = [
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
             "other", 431),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", "other", 400),
            (self.POST + b"Content-Length: abc\r\n\r\n{}", "other", 400),
            (self.POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
             "/v1/items:encode", 400),
        ]
        for req, route, status in cases:
            with self.subTest(req=req[:60]):
                before = T.Server.metrics(SRV)
                lines = len(SRV.log_text().splitlines())
                resp, how, _ = raw(SRV.port, req)
                self.assertEqual(status_of(resp), status, resp[:200])
                self.assertIn(how, ("eof", "reset"))
                # the request's line comes as MHD lets the connection go
                deadline = time.monotonic() + 5 * S
                while time.monotonic() < deadline:
                    new = [ln for ln in SRV.log_text().splitlines()[lines:]
                           if "event=request" in ln and "status=%d " % status in ln]
                    if new:
                        break
                    time.sleep(0.02)
                self.assertEqual(len(new), 1, SRV.log_text()[-2000:])
                self.assertIn('error="refused by libmicrohttpd ', new[0])
                self.assertNotIn("termination=", new[0])
                after = T.Server.metrics(SRV)
                key = 'semid_requests_total{route="%s",code="%d"}' % (route, status)
                self.assertEqual(after.get(key, 0) - before.get(key, 0), 1, key)
                gone = 'semid_requests_total{route="%s",code="499"}' % route
                self.assertEqual(after.get(gone, 0) - before.get(gone, 0), 0, gone)
        no_server_errors(self, SRV)

    def test_cut_mid_request(self):
        """Clients that vanish mid-header or mid-body: nothing to answer,
        nothing left behind, others served."""
        before = T.Server.metrics(SRV)
        for part in (b"GET /heal", b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nContent-Ty",
                     self.POST + b"Content-Length: 100\r\n\r\n{\"inputs\": ["):
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", SRV.port), timeout=5)
                s.sendall(part)
                s.close()
        self.assertEqual(SRV.request("GET", "/healthz")[0], 200)
        # libmicrohttpd notices a client gone mid-body only when the
        # request's deadline closes it: within connection_timeout_s.
        time.sleep(TIMEOUT + 0.5 * S)
        after = T.Server.metrics(SRV)
        # the 20 cut bodies are counted as 499 (client gone), nothing else
        key = 'semid_requests_total{route="/v1/items:encode",code="499"}'
        self.assertEqual(after.get(key, 0) - before.get(key, 0), 20)
        no_server_errors(self, SRV)


class TestSecrets(unittest.TestCase):
    def test_secret_flags_are_wiped_from_the_process_list(self):
        """Any user of the host reads /proc/PID/cmdline (ps): a token given by
        --admin-token, or a password in --registry, showed there for as long
        as the server ran.  Once read they are overwritten with x (the start
        still warns: they were there until then), the token still admits,
        and the rest of the command line is left as it was."""
        if T.WRAPPER:
            self.skipTest("/proc/PID/cmdline is the wrapper's (valgrind's own argv)")
        token = "s3cret-token-" + "t" * 20
        password = "pw-" + "p" * 16
        registry = "postgresql://u:%s@127.0.0.1:1/db" % password
        for args in (["--admin-token", token, "--registry=" + registry],
                     ["--admin-token=" + token, "--registry", registry]):
            srv = T.Server(["--model", MODEL] + args, WORK)
            try:
                with open("/proc/%d/cmdline" % srv.proc.pid, "rb") as f:
                    argv = f.read().split(b"\0")
                st, _, body = srv.request("POST", "/v1/admin/reload", b"",
                                          headers={"Authorization": "Bearer " + token})
                self.assertEqual(st, 200, body)
            finally:
                self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
            self.assertNotIn(token.encode(), b" ".join(argv))
            self.assertNotIn(password.encode(), b" ".join(argv))
            self.assertIn(b"--model", argv)
            self.assertIn(MODEL.encode(), argv)
            flags = [a.partition(b"=")[0] for a in argv if a.startswith(b"--")]
            self.assertIn(b"--admin-token", flags)
            self.assertIn(b"--registry", flags)
            self.assertIn(b"x" * len(token), b" ".join(argv))

    def test_config_file_slips_do_not_show_secrets(self):
        """A config file of mode 600 keeps the token and the registry's
        password from other users; a slip in one (an escape, a quote left
        open, a byte not UTF-8, the value in brackets or unquoted) was
        refused with jansson's "near '<the value's first bytes>'" or the
        value itself, on stderr and so in the journal.  The refusal names
        the key and the place, not the value; other keys' values are still
        quoted, as they help find the slip."""
        token = "s3cretTOKEN"
        conf = os.path.join(WORK, "secret-slip.json")
        slips = (('{"admin_token": "%s\\q"}', "invalid escape in admin_token's value"),
                 ('{"admin_token": "%s\n}', "unexpected newline in admin_token's value"),
                 ('{"admin_token": "%s\xff"}', "in admin_token's value"),
                 ('{\n "admin_token" :\n  %s}', "invalid token in admin_token's value"),
                 ('{"registry": "%s\\q"}', "invalid escape in registry's value"),
                 ('{"admin_token": ["%s"]}', "admin_token must be a string, not an array"),
                 ('{"registry": {"url": "postgresql://u:%s@h/db"}}',
                  "registry must be a string, not an object"))
        for text, needle in slips:
            with self.subTest(text=text):
                with open(conf, "wb") as f:
                    f.write((text % token).encode("latin-1"))
                os.chmod(conf, 0o600)
                err = T.refused_start(self, ["--model", MODEL, "--config", conf], needle)
                self.assertNotIn(token[:4], err)
        with open(conf, "wb") as f:
            f.write(b'{"admin_token": 123456789}')
        err = T.refused_start(self, ["--model", MODEL, "--config", conf],
                              "admin_token must be a string, not a number")
        self.assertNotIn("1234", err)
        with open(conf, "wb") as f:
            f.write(b'{"model": "m\\q"}')
        T.refused_start(self, ["--config", conf], "invalid escape near '\"m\\q'")

    def test_a_registry_flag_without_a_password_is_left_alone(self):
        """Only a connection string that holds a password is wiped: a SQLite
        path stays readable in ps."""
        if T.WRAPPER:
            self.skipTest("/proc/PID/cmdline is the wrapper's (valgrind's own argv)")
        db = os.path.join(WORK, "shown.db")
        srv = T.Server(["--model", MODEL, "--registry", db], WORK)
        try:
            with open("/proc/%d/cmdline" % srv.proc.pid, "rb") as f:
                argv = f.read().split(b"\0")
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertIn(db.encode(), argv)


if __name__ == "__main__":
    unittest.main(verbosity=2)
