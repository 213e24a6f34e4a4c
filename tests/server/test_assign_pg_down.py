#!/usr/bin/python3
"""semid-server's ID registry (issue 5) when its PostgreSQL store cannot be
reached, against a real server on 127.0.0.1 and no PostgreSQL at all: an
address that accepts connections and never answers (the server starts,
encodes, and answers assign 503 at the connection timeout: libpq's 5 s
default, the connection string's own, or registry_timeout_ms), health and
the other handles answering while a handle connects, and GET /v1/model naming the store
without its password.  (A suite of its own because it spends its time in
those timeouts; test_assign_pg.py runs a live PostgreSQL.)

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_assign_pg_down.py
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402
from assign_testlib import assign, Base  # noqa: E402


class FakeStore:
    """A listener on 127.0.0.1 for a server to take for its PostgreSQL
    store: each connection, accepted on a thread of its own, goes to
    @on_accept(conn, n) (n counts them from 1), which closes or keeps it."""

    def __init__(self, on_accept):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stopping = threading.Event()

        def accept():
            while not self.stopping.is_set():
                try:
                    c, _ = self.listener.accept()
                except OSError:
                    continue
                self.accepted += 1
                on_accept(c, self.accepted)

        self.thread = threading.Thread(target=accept)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


class TestReconnectsPaced(Base):
    """A PostgreSQL address that accepts each connection and closes it at
    once (a store going down, a pooler turning clients away): every call
    connected again at once, thousands of attempts a second from each handle
    (against a real server at max_connections, a backend forked for each
    'too many clients').  A handle now tries at most once a second, and the
    calls between answer 503 at once with the last attempt's reason."""

    def test_at_most_one_connect_a_second(self):
        store = FakeStore(lambda c, n: c.close())
        port = store.port
        srv = None
        try:
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                                ["--registry", "host=127.0.0.1 port=%d dbname=x user=x" % port,
                                 "--registry-connections", "2"])
            X, _ = T.tie_free_inputs(self.rng, self.ta, 1)
            n0, t0, answered, paced = store.accepted, time.monotonic(), 0, 0
            while time.monotonic() - t0 < 3.0:
                st, _, r = assign(srv, ["s1"], X)
                self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
                answered += 1
                # the calls between two attempts say so (an attempt's own
                # call says why it failed)
                paced += "tried again at most once a second" in r["error"]["message"]
            made = store.accepted - n0
            # two writer handles (and the probe's) over 3 s: a dozen at most;
            # unpaced, one per call (hundreds here)
            self.assertGreater(answered, 50)
            self.assertLessEqual(made, 15, "%d connections for %d calls" % (made, answered))
            self.assertGreaterEqual(paced, answered - made, (paced, answered, made))
            # each is a failed store call, timed (proto/api.md: errors over
            # duration_count is the share of calls that failed, here all)
            m = srv.metrics()
            self.assertEqual(m['semid_registry_errors_total{op="assign"}'], answered)
            self.assertEqual(m['semid_registry_duration_seconds_count{op="assign"}'], answered)
        finally:
            if srv:
                self.assertEqual(srv.stop(), 0)
            store.stop()


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
            # past the writer's second since the start's attempt, so that
            # this call connects rather than answer that attempt's reason
            # at once (it used to connect all the same, after waiting out
            # the reader's connect at start: one mutex for every open)
            time.sleep(1.2)
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


class TestHandlesOpenApart(Base):
    """The server's handles (the reader, each writer) were opened under one
    mutex, held across the open: against a store that accepts and never
    answers, a request waited out the connect timeout of every handle
    opened before its own (a lookup 8 s at registry_timeout_ms 2000 with
    four writers, each behind the others), far past the timeout.  Each
    handle now opens under its own.  Here the second writer's open is held
    (its connection accepted, never answered) while a lookup comes: the
    lookup is answered (503, its own connection refused at once) while
    that open still waits."""

    def test_lookup_not_held_by_a_writer_opening(self):
        hold, held = threading.Event(), []

        def serve(c, n):
            if hold.is_set():
                held.append(c)  # accepted, never answered
            else:
                c.close()  # "server closed the connection unexpectedly"

        store = FakeStore(serve)
        port = store.port
        srv, calls, threads = None, [], []
        try:
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                                ["--registry", "host=127.0.0.1 port=%d dbname=x user=x "
                                 "connect_timeout=600" % port,
                                 "--registry-connections", "2", "--registry-probe-s", "0"])
            X, _ = T.tie_free_inputs(self.rng, self.ta, 2)
            # the reader's handle is made (its connection refused)
            self.assertEqual(srv.json("GET", "/v1/items/nobody")[0], 503)
            hold.set()

            def call(ids, x):
                calls.append(assign(srv, ids, x, conn=srv.conn(timeout=900)))

            # writer 0 connects (once its second since the start's failed
            # attempt is over), and is held; then writer 1, opened while
            # writer 0 is busy, is held in its open
            deadline = time.monotonic() + 60 * T.SLOW
            for want, ids in ((1, ["a"]), (2, ["b"])):
                while len(held) < want:
                    c = threading.Thread(target=call, args=(ids, X[:1]))
                    c.start()
                    threads.append(c)
                    while c.is_alive() and len(held) < want:
                        self.assertLess(time.monotonic(), deadline, "no connection held")
                        time.sleep(0.05)
                    if len(held) < want:  # answered at once, within its second
                        c.join()
                        calls.pop()
            hold.clear()
            st, _, r = srv.json("GET", "/v1/items/nobody", conn=srv.conn(timeout=60))
            self.assertEqual((st, r["error"]["code"]), (503, "unavailable"), r)
            self.assertEqual(calls, [], "a held assign was answered")
        finally:
            for c in held:
                c.close()  # the held connects fail now, and their calls answer
            for c in threads:
                c.join(60)
            if srv:
                self.assertEqual(srv.stop(), 0)
            store.stop()


class TestShutdownBesideAStoreThatDoesNotAnswer(Base):
    """SIGTERM with no request in flight waited for the store calls no
    request waits for (the check of the stored IDs' levels at start, a
    probe of the idle store) to end: against a store that accepts and never
    answers, that was the connect's registry_timeout_ms, 30 s here, past a
    shutdown_timeout_ms of 1 s (exit 0 all the same), and past a
    supervisor's grace period.  They are not waited for past the drain's
    deadline and its grace second: exit 0, saying so."""

    def test_sigterm_does_not_wait_for_a_store_call(self):
        held = []
        # the start's open is turned away at once; later ones are held
        store = FakeStore(lambda c, n: c.close() if n == 1 else held.append(c))
        srv = None
        try:
            srv, _ = self.start(self.fresh_dir(), {"item": self.ta}, "S",
                                ["--registry", "postgresql://semid@127.0.0.1:%d/semid" %
                                 store.port, "--registry-timeout-ms", "30000",
                                 "--shutdown-timeout-ms", "1000"], start_timeout=20)
            # the levels check's open is waiting on its connection
            self.until(lambda: held, "a second connection to the store")
            t0 = time.monotonic()
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.wait(60), 0)
            took = time.monotonic() - t0
            self.assertLess(took, 10 * T.SLOW, srv.log_text()[-2000:])
            log = srv.own_log_text()
            self.assertIn("level=warn event=shutdown msg=\"drained, but store calls no request "
                          "waits for (a probe of the store, the check of its IDs' levels, an "
                          "assign whose client left) had not ended 2000 ms after the drain "
                          "began; exiting without them\"", log)
            self.assertNotIn("drained; bye", log)
        finally:
            if srv and srv.proc.poll() is None:
                srv.kill()
            store.stop()
            for c in held:
                c.close()


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
            self.assertNotIn("hunter2", srv.own_log_text(), conninfo)


if __name__ == "__main__":
    unittest.main(verbosity=2)
