#!/usr/bin/python3
"""systemd socket activation (server/sockact.h): the test owns the listening
sockets, as systemd does, and starts semid-server with them at fds 3.. and
LISTEN_PID set to the server's own pid (semid_testlib.activation).

- The API is served on the inherited socket (listen is not bound), the
  operations port on the one named "ops"; without names fd 3 is the API's,
  fd 4 the operations port's; the event=listening line gives their real
  addresses and says they were inherited.
- LISTEN_PID of another process: not ours, listen is bound as usual.
- Each bad socket or variable refuses the start with exit 2 and a message
  naming the fd, its name and what is wrong.
- systemd's own implementation of the protocol (systemd-socket-activate,
  when installed) starts it on the first connection, which it answers.
- The point of it all: clients send encode requests continuously on the
  socket's address while server A is stopped (SIGTERM) and server B started
  on the same socket: no connection error, every request answered 200, a
  request in flight at A answered by A, a connection made while no server
  runs answered by B, and the socket still listening afterwards.

Real server, real sockets, 127.0.0.1 only; every wait is bounded.
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_socket_activation.py
"""
import http.client
import json
import os
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

BODY = json.dumps({"inputs": [{"embedding": [0.5, -0.25, 0.125, 1.0]}]}).encode()


def setUpModule():
    global WORK, MODEL
    WORK = tempfile.mkdtemp(prefix="semid-sockact-test-")
    MODEL = os.path.join(WORK, "demo.safetensors")
    T.doc_model(MODEL)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def listener(backlog=512):
    """A TCP socket listening on 127.0.0.1:<free port>, as systemd opens one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    return s


def port_of(s):
    return s.getsockname()[1]


def get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def logged(text, needle):
    """@text() once it holds @needle, or after a bounded wait: a request's
    log line is written once its answer is sent, so it may follow the
    answer by a moment."""
    deadline = time.monotonic() + 5 * T.SLOW
    while needle not in text() and time.monotonic() < deadline:
        time.sleep(0.01)
    return text()


def encode(port, request_id=None, timeout=30 * T.SLOW):
    """POST one encode on a new connection -> status."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if request_id:
        h["X-Request-Id"] = request_id
    try:
        c.request("POST", "/v1/items:encode", body=BODY, headers=h)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def listening_line(srv):
    m = re.search(r"event=listening .*", srv.log_text())
    assert m, srv.log_text()
    return m.group(0)


def still_listening(s):
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def accepted(client):
    """Whether a server process has accept(2)ed @client's connection (an
    IPv4 loopback one): its server end in /proc/net/tcp has a socket inode
    once a process holds it, 0 while it waits in the listening socket's
    queue."""
    here = "%08X:%04X" % (0x0100007F, client.getsockname()[1])
    there = "%08X:%04X" % (0x0100007F, client.getpeername()[1])
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == there and fields[2] == here:
                return fields[9] != "0"
    return False


def wait_accepted(client, timeout=10):
    deadline = time.monotonic() + timeout * T.SLOW
    while not accepted(client) and time.monotonic() < deadline:
        time.sleep(0.01)
    return accepted(client)


class TestSocketActivation(unittest.TestCase):
    def refused(self, fds, needle, names=None, listen_fds=None, args=(), listen_pid=None):
        """semid-server started with @fds as by systemd must exit 2 with
        @needle in its stderr; nothing listens on --listen meanwhile."""
        prefix, env, kw = T.activation(fds, names, listen_fds, listen_pid)
        e = dict(os.environ)
        e.update(env)
        p = subprocess.run(prefix + [T.SERVER, "--model", MODEL, "--registry", "none",
                                     "--listen", "127.0.0.1:0"] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                           timeout=20 * T.SLOW, **kw)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(needle, p.stderr.decode())

    def test_serves_the_inherited_sockets(self):
        """The API on the socket named main, the operations port on the one
        named ops, whatever listen and ops_listen say (ignored, with an info
        line); the listening line gives their addresses and says so."""
        main, ops = listener(), listener()
        srv = T.Server(["--model", MODEL, "--registry", "none", "--ops-listen", "127.0.0.1:0"],
                       WORK, inherit=([ops, main], ["ops", "main"]))
        try:
            self.assertEqual(srv.port, port_of(main))
            line = listening_line(srv)
            self.assertIn("addr=127.0.0.1:%d port=%d " % (port_of(main), port_of(main)), line)
            self.assertIn("ops_addr=127.0.0.1:%d ops_port=%d " % (port_of(ops), port_of(ops)),
                          line)
            self.assertIn("inherited=main,ops", line)
            self.assertIn('serving the API on the inherited socket 127.0.0.1:%d (fd 4); listen '
                          '\\"127.0.0.1:0\\" is not bound' % port_of(main), srv.log_text())
            self.assertEqual(encode(srv.port), 200)
            st, body = get(port_of(ops), "/readyz")
            self.assertEqual((st, json.loads(body)["status"]), (200, "ready"))
            self.assertEqual(get(port_of(ops), "/v1/items:encode")[0], 404)  # ops routes only
            self.assertIn("listener=ops", logged(srv.log_text, "listener=ops"))
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-3000:])
        # our copies still listen: the server closed its own, shut none down
        self.assertTrue(still_listening(main))
        self.assertTrue(still_listening(ops))
        main.close()
        ops.close()

    def test_unnamed_sockets_are_main_then_ops(self):
        main, ops = listener(), listener()
        srv = T.Server(["--model", MODEL, "--registry", "none"], WORK, inherit=([main, ops],))
        try:
            self.assertEqual(srv.port, port_of(main))
            self.assertIn("ops_port=%d " % port_of(ops), listening_line(srv))
            self.assertEqual(get(port_of(ops), "/healthz")[0], 200)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-3000:])
        # one socket: the API's; no ops port unless ops_listen binds one
        srv = T.Server(["--model", MODEL, "--registry", "none", "--ops-listen", "127.0.0.1:0"],
                       WORK, inherit=([main],))
        try:
            line = listening_line(srv)
            self.assertEqual(srv.port, port_of(main))
            self.assertIn("inherited=main", line)
            self.assertNotIn("inherited=main,ops", line)
            bound = int(re.search(r" ops_port=(\d+) ", line).group(1))
            self.assertEqual(get(bound, "/healthz")[0], 200)
            self.assertIn('no socket named \\"ops\\" passed: binding ops_listen', srv.log_text())
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-3000:])
        main.close()
        ops.close()

    def test_listen_pid_of_another_process_binds_listen(self):
        """LISTEN_PID names another process (a parent that was activated):
        the sockets are not ours, and listen is bound as usual."""
        s = listener()
        srv = T.Server(["--model", MODEL, "--registry", "none"], WORK,
                       env={"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"},
                       pass_fds=(s.fileno(),))
        try:
            self.assertNotEqual(srv.port, port_of(s))
            self.assertNotIn("inherited=", listening_line(srv))
            self.assertIn("LISTEN_PID %d is not this process" % os.getpid(), srv.log_text())
            self.assertEqual(encode(srv.port), 200)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-3000:])
        s.close()

    def test_bad_sockets_refuse_to_start(self):
        good = listener()
        with tempfile.TemporaryFile(dir=WORK) as f:
            self.refused([f], "semid-server: socket activation: fd 3 (no name: taken as main) "
                              "is a regular file, not a listening socket\n")
            self.refused([good, f], 'semid-server: socket activation: fd 4 (name "ops") is a '
                                    "regular file, not a listening socket\n",
                         names=["main", "ops"])
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        self.refused([udp], 'semid-server: socket activation: fd 3 (name "main") is a datagram '
                            "(SOCK_DGRAM) socket, not a stream (TCP) socket\n", names=["main"])
        idle = socket.socket()
        idle.bind(("127.0.0.1", 0))
        self.refused([idle], 'semid-server: socket activation: fd 3 (name "main") is not '
                             "listening (SO_ACCEPTCONN 0: no listen(2) on it)\n", names=["main"])
        unix_path = os.path.join(WORK, "s.sock")
        ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ux.bind(unix_path)
        ux.listen(1)
        self.refused([ux], "semid-server: socket activation: fd 3 (no name: taken as main) is "
                           "a unix socket (AF_UNIX): semid-server serves TCP only (AF_INET, "
                           "AF_INET6), as listen takes HOST:PORT only\n")
        # LISTEN_FDS says 2, only fd 3 is there
        self.refused([good], "semid-server: socket activation: fd 4 (no name: taken as ops) is "
                             "not open (Bad file descriptor)\n", listen_fds=2)
        self.refused([good], 'semid-server: socket activation: fd 3 (name "http"): unknown '
                             'name; semid-server takes a socket named "main" (the API) and one '
                             'named "ops" (the operations port): the socket units\' '
                             "FileDescriptorName=\n", names=["http"])
        other = listener()
        self.refused([good, other], 'semid-server: socket activation: fd 4 (name "main"): a '
                                    "second socket for the API (fd 3 is one); semid-server "
                                    "takes one of each\n", names=["main", "main"])
        third = listener()
        self.refused([good, other, third], "semid-server: socket activation: fd 5 (no name): "
                                           "more sockets than semid-server uses (LISTEN_FDS 3: "
                                           "it takes 2 at most, fd 3 for the API and fd 4 for "
                                           "the operations port, or sockets named \"main\" and "
                                           "\"ops\")\n")
        self.refused([good], 'semid-server: socket activation: no socket named "main" among '
                             'LISTEN_FDNAMES "ops": the API\'s socket must be passed too\n',
                     names=["ops"])
        self.refused([good], 'semid-server: socket activation: LISTEN_FDS "one" is not a '
                             "number of sockets\n", listen_fds="one")
        # LISTEN_PID garbage, and a control character shown as '?' (it
        # went to the terminal or the journal as it was)
        for pid, shown in (("12x", "12x"), ("-1", "-1"), ("", ""), ("1\x1b[2J", "1?[2J")):
            self.refused([good], 'semid-server: socket activation: LISTEN_PID "%s" is not a '
                                 "process id\n" % shown, listen_pid=pid)
        self.refused([good], 'semid-server: socket activation: LISTEN_FDS "1?[2J" is not a '
                             "number of sockets\n", listen_fds="1\x1b[2J")
        self.refused([good, other], 'semid-server: socket activation: LISTEN_FDNAMES "main" '
                                    "names 1 sockets but LISTEN_FDS is 2\n", names=["main"])
        for s in (good, udp, idle, ux, other, third):
            self.assertTrue(s.fileno() >= 0)
            s.close()

    def test_systemd_socket_activate_starts_it(self):
        """systemd-socket-activate (systemd's own implementation of the
        protocol, as the socket units use it) opens the sockets, named as
        deploy/systemd names them, and starts the server on the first
        connection: that connection waited in the backlog and is answered."""
        tool = shutil.which("systemd-socket-activate")
        if not tool:
            self.skipTest("systemd-socket-activate not installed")
        ports = []
        for _ in range(2):
            with socket.socket() as s:  # a free port (the tool binds it a moment later)
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        log_path = os.path.join(WORK, "socket-activate-%d.log" % time.monotonic_ns())
        with open(log_path, "wb") as log:
            p = subprocess.Popen([tool, "-l", "127.0.0.1:%d" % ports[0], "-l",
                                  "127.0.0.1:%d" % ports[1], "--fdname=main:ops", "--"] +
                                 T.WRAPPER + [T.SERVER, "--model", MODEL, "--registry", "none"],
                                 stdout=log, stderr=subprocess.STDOUT)

        def text():
            with open(log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        try:
            deadline = time.monotonic() + 10 * T.SLOW
            while "as 4." not in text() and time.monotonic() < deadline and p.poll() is None:
                time.sleep(0.01)
            self.assertIn("Listening on 127.0.0.1:%d as 4." % ports[1], text())
            self.assertEqual(encode(ports[0], "first"), 200)
            st, body = get(ports[1], "/readyz")
            self.assertEqual((st, json.loads(body)["status"]), (200, "ready"))
            self.assertIn("inherited=main,ops", text())
            self.assertIn("request_id=first", logged(text, "request_id=first"))
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(15 * T.SLOW), 0, text()[-3000:])
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def test_idle_connection_past_a_short_shutdown_timeout(self):
        """A connection accepted before SIGTERM that has sent no request is
        waited for up to 1 s, but never past shutdown_timeout_ms: a shorter
        deadline closes it, and the exit is 0 with an info line, not 1 with
        "1 requests still in flight" (no request of its had begun)."""
        sock = listener()
        srv = T.Server(["--model", MODEL, "--registry", "none", "--shutdown-timeout-ms", "200"],
                       WORK, inherit=([sock], ["main"]))
        idle = None
        try:
            idle = socket.create_connection(("127.0.0.1", port_of(sock)), timeout=20 * T.SLOW)
            self.assertTrue(wait_accepted(idle), "the server never accepted the connection")
            srv.signal(signal.SIGTERM)
            rc = srv.wait(15)
            log = srv.log_text()
            self.assertEqual(rc, 0, log[-3000:])
            self.assertNotIn("still in flight", log)
            self.assertIn("1 connection accepted before the drain sent no request within 200 "
                          "ms; closing it", log)
            self.assertEqual(idle.recv(100), b"")  # closed, unanswered
        finally:
            if idle:
                idle.close()
            srv.kill()
        self.assertTrue(still_listening(sock))
        sock.close()

    def test_restart_refuses_no_connection(self):
        """Clients encode without a pause while server A is stopped and
        server B started on the same socket, as `systemctl restart` does:
        every request is answered 200 and none fails to connect.  A request
        in flight when A is told to stop is answered by A; one made while no
        server runs waits in the backlog and is answered by B."""
        sock = listener(backlog=1024)
        port = port_of(sock)
        args = ["--model", MODEL, "--registry", "none", "--shutdown-timeout-ms", "10000"]
        a = T.Server(args, WORK, inherit=([sock], ["main"]))
        b = None
        stop = threading.Event()
        lock = threading.Lock()
        statuses, errors = [], []

        def client(k):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    st = encode(port, "c%d-%d" % (k, i))
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors.append("client %d request %d: %r" % (k, i, e))
                    continue
                with lock:
                    statuses.append(st)

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
        stalled = gap = None
        try:
            for t in threads:
                t.start()
            time.sleep(0.5)
            # in flight at A: its body stalls half way until after SIGTERM
            stalled = socket.create_connection(("127.0.0.1", port), timeout=20 * T.SLOW)
            stalled.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nX-Request-Id: "
                            b"stalled\r\nContent-Type: application/json\r\nContent-Length: "
                            b"%d\r\n\r\n" % len(BODY) + BODY[:10])
            self.assertTrue(wait_accepted(stalled), "A never accepted the stalled request")
            time.sleep(0.1)
            a.signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while "event=shutdown" not in a.log_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # clients keep connecting: into the backlog now
            stalled.sendall(BODY[10:])
            r = http.client.HTTPResponse(stalled)
            r.begin()
            self.assertEqual((r.status, r.getheader("Connection")), (200, "close"))
            r.read()
            self.assertEqual(a.wait(15), 0, a.log_text()[-3000:])
            self.assertTrue(still_listening(sock), "A's exit ended the shared socket")
            # no server runs: a connection now waits in the backlog
            gap = socket.create_connection(("127.0.0.1", port), timeout=20 * T.SLOW)
            gap.sendall(b"POST /v1/items:encode HTTP/1.1\r\nHost: x\r\nX-Request-Id: gap\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                        % len(BODY) + BODY)
            time.sleep(0.3)
            self.assertFalse(accepted(gap))  # waiting in the backlog
            b = T.Server(args, WORK, inherit=([sock], ["main"]))
            r = http.client.HTTPResponse(gap)
            r.begin()
            self.assertEqual(r.status, 200)
            r.read()
            time.sleep(0.5)  # B serves the clients for a while
        finally:
            stop.set()
            for t in threads:
                t.join(40)
            for s in (stalled, gap):
                if s:
                    s.close()
            if a.proc.poll() is None:
                a.kill()
        try:
            self.assertEqual(errors, [])
            self.assertGreater(len(statuses), 20)
            self.assertEqual(set(statuses), {200}, statuses)
            # B stopped before its log is read: a request's line is written
            # just after its answer is sent, so the last ones may still be
            # on the way while B runs
            self.assertEqual(b.stop(), 0, b.log_text()[-3000:])
            a_log, b_log = a.log_text(), b.log_text()
            self.assertIn("request_id=stalled", a_log)
            self.assertIn("request_id=gap", b_log)
            # both served the clients, and every answer is in one log
            served = [len(re.findall(r"event=request .*route=/v1/items:encode status=200 .*"
                                     r"request_id=c\d", log)) for log in (a_log, b_log)]
            self.assertGreater(served[0], 0, a_log[-3000:])
            self.assertGreater(served[1], 0, b_log[-3000:])
            self.assertEqual(sum(served), len(statuses))
            self.assertNotIn("status=503", a_log + b_log)
        finally:
            if b and b.proc.poll() is None:
                b.kill()
        self.assertTrue(still_listening(sock))
        sock.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
