"""Shared helpers for the semid-server integration tests (and bench_http.py).

- write_model / tie_free_model / random_model: model files in the
  safetensors profile of proto/model-format.md, written with plain numpy
  (8-byte LE header length, JSON header, raw F32 data, "semid" metadata).
- reference_encode: a float64 numpy encoder (MLP + greedy residual
  quantisation), independent of the C code.
- semid_encode: codes from `$SEMID_BIN/semid encode`, the CLI the server must
  agree with.
- Server: starts `$SEMID_BIN/semid-server` on 127.0.0.1 with port 0 (the
  kernel picks a free port; the server logs it in its event=listening line),
  waits for /healthz, talks HTTP with http.client, and stops it; with
  inherit=, hands it listening sockets as systemd's socket activation does
  (activation()).

Every wait is bounded; nothing listens beyond loopback.
"""
import atexit
import base64
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from semid_files import safetensors_bytes  # noqa: E402  (re-exported for the tests)

BIN = os.environ.get("SEMID_BIN", "bin")
SERVER = os.path.join(BIN, "semid-server")
SEMID = os.path.join(BIN, "semid")
# SEMID_SERVER_WRAPPER: a command to run semid-server under (make test-valgrind sets
# "valgrind --error-exitcode=99 --leak-check=full ..."); waits on the server scale by SLOW.
# A ThreadSanitizer build (make test-tsan) runs several times slower too: its waits
# ran out on a busy machine (an 8192-row encode not done in 10 s, a startup not yet at
# the model's open() after 0.5 s).
WRAPPER = os.environ.get("SEMID_SERVER_WRAPPER", "").split()
SLOW = 10 if WRAPPER else 3 if os.environ.get("SEMID_SANITIZE") == "thread" else 1
# SEMID_BENCH_SMOKE (make bench-smoke, tests/bench/test_bench_smoke.py): the
# benchmarks run every case at a tiny size, and report() says so.
SMOKE = os.environ.get("SEMID_BENCH_SMOKE", "") not in ("", "0")
SMOKE_BANNER = ("**SMOKE RUN** (SEMID_BENCH_SMOKE): tiny sizes, to check that the benchmark "
                "runs; its figures mean nothing, do not copy them")
# ... and wrk paces each connection (its Lua delay(): ms between requests), so that a
# smoke run, which checks the script and its report, does not load the machine.
WRK_SMOKE_LUA = "\nfunction delay()\n  return 100\nend\n"


def bench_sync():
    """Before a measured run: os.sync(), so that no earlier run's writeback
    shares the disk with it; not in a smoke run, which measures nothing and
    would wait there on every other writer of a busy machine."""
    if not SMOKE:
        os.sync()


_AS_NOBODY = {}


def as_nobody(program):
    """{"program": path, "user": "nobody"}: the keyword arguments with which
    Server (or a test's own runner) runs @program as the user nobody, for tests
    that need a process whose file modes bind it while the suite runs as
    root.  A checkout in root's home (a fresh Debian's /root is 0700, where
    a user who follows the README clones it) is out of nobody's reach, so
    the program is then run from a copy in a directory nobody can enter
    (removed at exit).  The copy is only of the program: its libraries are
    the system's."""
    path = os.path.abspath(program)
    reach, d = True, path
    while d != "/":
        mode = os.stat(d).st_mode
        if not mode & 0o001:  # others cannot enter the directory, run the file
            reach = False
            break
        d = os.path.dirname(d)
    if not reach:
        if path not in _AS_NOBODY:
            tmp = tempfile.mkdtemp(prefix="semid-nobody-")
            os.chmod(tmp, 0o755)
            atexit.register(shutil.rmtree, tmp, True)
            _AS_NOBODY[path] = shutil.copy2(path, os.path.join(tmp, os.path.basename(path)))
            os.chmod(_AS_NOBODY[path], 0o755)
        path = _AS_NOBODY[path]
    return {"program": path, "user": "nobody"}


def publish(path, data):
    """Write @data to @path atomically (temp file in the same directory +
    rename), as a trainer publishing a model would."""
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), time.monotonic_ns())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Tower:
    """layers: list of (W (out, in), b (out) or None); codebooks: list (K_l, E)."""

    def __init__(self, layers, codebooks, act="relu", norm="none"):
        self.layers, self.codebooks, self.act, self.norm = layers, codebooks, act, norm

    @property
    def D(self):
        return self.layers[0][0].shape[1]

    @property
    def E(self):
        return self.layers[-1][0].shape[0]


def model_bytes(towers, version, checksum=False, train=None):
    """towers: dict name -> Tower; checksum: record data_sha256; train: a
    "train" entry of the semid metadata (the trainer's config)."""
    tensors, meta = [], {}
    for name, t in towers.items():
        for i, (w, b) in enumerate(t.layers):
            tensors.append((f"{name}.encoder.{i}.weight", w))
            if b is not None:
                tensors.append((f"{name}.encoder.{i}.bias", b))
        for l, cb in enumerate(t.codebooks):
            tensors.append((f"{name}.codebook.{l}", cb))
        meta[name] = {"activation": t.act, "input_norm": t.norm}
    semid = {"format_version": 1, "model_version": version, "towers": meta}
    if train is not None:
        semid["train"] = train
    return safetensors_bytes(tensors, {"semid": json.dumps(semid)}, checksum)


def write_model(path, towers, version, train=None):
    publish(path, model_bytes(towers, version, train=train))


def tie_free_tower(rng, D=16, ks=(16, 8, 5), scales=(10.0, 1.0, 0.1)):
    """z = x exactly (relu(x) - relu(-x) through two layers); codebooks on
    scales 10 : 1 : 0.1, so inputs made by tie_free_inputs sit next to one
    codeword per level and no row is near a tie."""
    eye = np.eye(D, dtype=np.float32)
    layers = [(np.vstack([eye, -eye]), np.zeros(2 * D, np.float32)), (np.hstack([eye, -eye]), None)]
    cbs = [(rng.standard_normal((k, D)) * s).astype(np.float32) for k, s in zip(ks, scales)]
    return Tower(layers, cbs, "relu", "none")


def tie_free_inputs(rng, tower, n):
    """Rows near a sum of one codeword per level: (x float32 (n, D), codes (n, L))."""
    ks = [cb.shape[0] for cb in tower.codebooks]
    codes = np.stack([rng.integers(0, k, n) for k in ks], axis=1).astype(np.int32)
    x = sum(tower.codebooks[l].astype(np.float64)[codes[:, l]] for l in range(len(ks)))
    x = x + rng.standard_normal(x.shape) * 1e-3
    return x.astype(np.float32), codes


def random_tower(rng, D, hidden, E, ks, act="gelu", norm="l2"):
    dims = [D] + list(hidden) + [E]
    layers = []
    for i in range(len(dims) - 1):
        lim = 1.0 / np.sqrt(dims[i])
        layers.append((rng.uniform(-lim, lim, (dims[i + 1], dims[i])).astype(np.float32),
                       rng.uniform(-lim, lim, dims[i + 1]).astype(np.float32)))
    cbs = [rng.uniform(-1, 1, (k, E)).astype(np.float32) * 0.3 for k in ks]
    return Tower(layers, cbs, act, norm)


def _act(name, x):
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    return x


def find_promtool():
    """$SEMID_PROMTOOL (default $SEMID_O/tools/promtool, as in the Makefile)
    when it is a program, else promtool on PATH, else None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("SEMID_PROMTOOL") or os.path.join(
        os.environ.get("SEMID_O", os.path.join(root, "build")), "tools", "promtool")
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return os.path.abspath(path)
    return shutil.which("promtool")


def reference_latent(tower, x):
    z = np.asarray(x, np.float64)
    if tower.norm == "l2":
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    for i, (w, b) in enumerate(tower.layers):
        z = z @ w.astype(np.float64).T + (0 if b is None else b.astype(np.float64))
        if i < len(tower.layers) - 1:
            z = _act(tower.act, z)
    return z


def reference_encode(tower, x):
    """Greedy residual quantisation in float64: (codes (n, L), quant (n, E), dist (n))."""
    z = reference_latent(tower, x)
    r = z.copy()
    codes = []
    for cb in tower.codebooks:
        c = cb.astype(np.float64)
        d = (r * r).sum(1)[:, None] - 2 * r @ c.T + (c * c).sum(1)[None, :]
        k = d.argmin(1)
        codes.append(k)
        r = r - c[k]
    q = z - r
    return np.stack(codes, 1).astype(np.int32), q, (r * r).sum(1)


def semid_encode(model_path, tower, x, workdir):
    """Codes from `semid encode` (an int32 (n, L) array)."""
    inp = os.path.join(workdir, "in-%d.npy" % time.monotonic_ns())
    out = inp.replace("in-", "out-")
    np.save(inp, np.ascontiguousarray(x, np.float32))
    subprocess.run([SEMID, "encode", "--model", model_path, "--tower", tower, "--input", inp,
                    "--output", out], check=True, timeout=60, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    codes = np.load(out)
    os.unlink(inp)
    os.unlink(out)
    return codes


def b64_row(row):
    return base64.b64encode(np.asarray(row, "<f4").tobytes()).decode()


def cpu_model():
    """The CPU's model name, as lscpu says it (for the benchmarks' reports)."""
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
    return m.group(1).strip() if m else platform.machine()


def report(lines, path):
    """Print a benchmark's markdown @lines (after their title, the smoke
    banner in a smoke run), and write them to @path if any."""
    if SMOKE:
        lines = [lines[0].rstrip("\n"), "", SMOKE_BANNER, ""] + lines[1:]
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text)


def rss_bytes(pid):
    """VmRSS of /proc/<pid>/status, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB$", f.read(), re.M).group(1)) * 1024


def post_burst(srv, body, clients=8, each=3, path="/v1/items:encode"):
    """@clients threads each POST @body (JSON) @each times on a connection
    of its own, all at once; the failures (statuses other than 200, or
    socket errors), [] when none."""
    errors = []

    def client():
        try:
            conn = srv.conn(timeout=120)
            for _ in range(each):
                st, _, out = srv.request("POST", path, body,
                                         {"Content-Type": "application/json"}, conn=conn)
                if st != 200:
                    errors.append((st, out[:200]))
            conn.close()
        except OSError as e:
            errors.append(e)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def read_to_eof(sock):
    """Everything @sock receives until the peer closes it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def refused_start(test, args, needle, timeout=10):
    """Run semid-server with @args, which it must refuse: exit 2 with
    @needle in its stderr (checked with unittest.TestCase @test); returns
    that stderr.  Without a --listen in @args it listens on port 0, not on
    the default 8080: a `make run` in another terminal (as the README has
    it) holds 8080, and every refusal checked after the listen check then
    read "Address already in use"."""
    args = list(args)
    if not any(a == "--listen" or a.startswith("--listen=") for a in args):
        args = ["--listen", "127.0.0.1:0"] + args  # (a flag: over a --config's)
    p = subprocess.run([SERVER] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout * SLOW)
    test.assertEqual(p.returncode, 2, p.stderr)
    test.assertIn(needle, p.stderr.decode())
    return p.stderr.decode()


def metric_samples(text):
    """A /metrics text -> {'name{labels}': value} of its sample lines."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def activation(fds, names=None, listen_fds=None, listen_pid=None):
    """What starts a program as systemd's socket activation does
    (sd_listen_fds(3)): the descriptors @fds (sockets or ints) become fds
    3, 4, ... of the child, LISTEN_FDS their number (or @listen_fds),
    LISTEN_FDNAMES the colon-joined @names if given, and LISTEN_PID the
    child's own pid (a shell sets it to $$ and execs the program: same pid),
    or @listen_pid.  Returns (argv prefix, env updates, Popen keywords); the
    fds of the child are those passed and 0-2 only."""
    raw = [f if isinstance(f, int) else f.fileno() for f in fds]
    count = len(raw)

    def place():
        # first out of the way (a source may sit at 3 or 4), then into place;
        # dup2 leaves the copies inheritable
        high = [os.dup2(f, 100 + i) for i, f in enumerate(raw)]
        for i, f in enumerate(high):
            os.dup2(f, 3 + i)
            os.close(f)

    env = {"LISTEN_FDS": str(count if listen_fds is None else listen_fds)}
    if names is not None:
        env["LISTEN_FDNAMES"] = ":".join(names)
    if listen_pid is not None:
        env["LISTEN_PID"] = str(listen_pid)
        prefix = []
    else:
        prefix = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"']
    return prefix, env, {"preexec_fn": place, "pass_fds": tuple(range(3, 3 + count)),
                         "close_fds": True}


class Server:
    """A semid-server child on 127.0.0.1:<free port>; logs go to a file.
    inherit=(fds, names): started with those sockets as by systemd
    (activation()); then self.port is the inherited socket's port."""

    def __init__(self, args, workdir=None, env=None, start_timeout=10.0, inherit=None,
                 program=SERVER, **popen):
        self.workdir = workdir or tempfile.mkdtemp(prefix="semid-srv-")
        self.log_path = os.path.join(self.workdir, "server-%d.log" % time.monotonic_ns())
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        if env:
            e.update(env)
        prefix = []
        if inherit is not None:
            prefix, more, kw = activation(*inherit)
            e.update(more)
            popen.update(kw)
        self.proc = subprocess.Popen(prefix + WRAPPER + [program, "--listen", "127.0.0.1:0"] +
                                     list(args), stdout=self.log, stderr=subprocess.STDOUT, env=e,
                                     **popen)
        self.port = None
        deadline = time.monotonic() + start_timeout * SLOW
        while time.monotonic() < deadline:
            m = re.search(r"event=listening .*?port=(\d+)", self.log_text())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError("semid-server exited %d:\n%s" % (self.proc.returncode,
                                                                     self.log_text()))
            time.sleep(0.01)
        if self.port is None:
            self.kill()
            raise RuntimeError("semid-server did not start:\n" + self.log_text())
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.01)
        self.kill()
        raise RuntimeError("semid-server /healthz never answered:\n" + self.log_text())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, count=1, secs=10, why=None):
        """Wait until the log holds @text @count times: a request's line is
        written once its last byte is, which may be after its client has
        read the answer.  Fails with AssertionError naming @why (or
        @text) after @secs."""
        deadline = time.monotonic() + secs
        while self.log_text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError("never in the log %d time(s): %r (%s)\n%s" % (
                    count, text, why, self.log_text()[-2000:]))
            time.sleep(0.02)

    def own_log_text(self):
        """log_text without the lines of a SEMID_SERVER_WRAPPER (valgrind's
        "==PID== ..." report, whose banner repeats the command line)."""
        return "".join(ln for ln in self.log_text().splitlines(True)
                       if not re.match(r"==\d+== ", ln))

    def conn(self, timeout=20):
        # (SLOW: under valgrind, test_abuse's 8192-row encode took past 20 s)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)

    def request(self, method, path, body=None, headers=None, conn=None):
        """-> (status, headers dict (lower-case names), body bytes)."""
        own = conn is None
        c = conn or self.conn()
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            if own:
                c.close()

    def json(self, method, path, body=None, headers=None, conn=None):
        st, h, data = self.request(method, path, body, headers, conn)
        return st, h, json.loads(data) if data else None

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200, st
        return metric_samples(data.decode())

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15):
        """Exit status; raises if a sanitizer (SANITIZE= builds) reported anything."""
        try:
            rc = self.proc.wait(timeout * SLOW)
        finally:
            self.log.close()
        text = self.log_text()
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer"):
            if mark in text:
                raise AssertionError("semid-server sanitizer report:\n" + text[-4000:])
        if re.search(r"ERROR SUMMARY: [1-9]", text):
            raise AssertionError("semid-server valgrind report:\n" + text[-6000:])
        return rc

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


def doc_model(path):
    """The small model proto/api.md's examples were produced with (and that
    test_api_doc.py replays them against): model_version "demo-1"; item
    tower 4 -> 4 (z = x), three levels of 8 codewords; user tower 4 -> 4,
    two levels of 8.  Codebook values are multiples of 1/64, so the file is
    the same bytes everywhere."""
    rng = np.random.default_rng(2024)

    def tower(levels, scales):
        eye = np.eye(4, dtype=np.float32)
        layers = [(np.vstack([eye, -eye]), np.zeros(8, np.float32)), (np.hstack([eye, -eye]), None)]
        cbs = [(np.round(rng.standard_normal((8, 4)) * s * 64) / 64).astype(np.float32)
               for s in scales[:levels]]
        return Tower(layers, cbs, "relu", "none")

    towers = {"item": tower(3, (1.0, 0.25, 0.0625)), "user": tower(2, (1.0, 0.25))}
    write_model(path, towers, "demo-1")
    return towers
