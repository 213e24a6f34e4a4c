#!/usr/bin/python3
"""The process_* metrics on a live semid-server's /metrics (proto/api.md,
Metrics), each checked against what this test reads itself from
/proc/<server pid>/ around the scrape:

- CPU seconds between the utime + stime ticks read before and after the
  scrape; RSS, virtual memory and threads within those reads (and a small
  tolerance: they move); open descriptors those of /proc/<pid>/fd; the start time within 1 s of /proc/stat's btime
  plus /proc/<pid>/stat's starttime, and within a few seconds of when this
  test started the process; process_max_fds the soft "Max open files" of
  /proc/<pid>/limits, followed when prlimit changes it; the address-space
  limit absent while unlimited, its value once prlimit sets one.
- process_open_fds rises by at least N while the test holds N idle
  connections open and falls back once they are closed.
- process_cpu_seconds_total rises across a burst of encode requests and
  never decreases from one scrape to the next.
- The operations port serves the same metrics, and promtool's `check
  metrics` accepts that scrape with nothing to report on process_*.
- memory_trim_s: after a burst of large requests (eight clients sending
  three 20 MB bodies each, which must add 48 MiB at least) the
  server's resident size falls back by at least a quarter of what the burst
  added once it has been idle that long, and one debug line says so; with
  memory_trim_s 0 it stays within a tenth of its peak.  glibc runs with
  one arena and no trim at free time, so that only malloc_trim gives
  memory back (with its defaults, how much it returns by itself varies
  with the timing).  Small requests with quiet spells between them (before
  the burst) give nothing back: the resident size did not grow.  Not under
  a sanitizer or valgrind, whose allocators are not glibc's.
- Without /proc (as root: the server in a mount namespace of its own with
  an empty tmpfs on /proc) the scrape still answers 200 with every semid_*
  family; the metrics read from /proc have no sample, the limits still do,
  and each unreadable source is logged once (event=metrics) however many
  scrapes follow.

Real server, loopback only; every wait is bounded.
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_process_metrics.py
"""
import ctypes
import http.client
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGESIZE")
PROCESS = ("process_cpu_seconds_total", "process_resident_memory_bytes",
           "process_virtual_memory_bytes", "process_virtual_memory_max_bytes",
           "process_open_fds", "process_max_fds", "process_start_time_seconds",
           "process_threads")


def proc_stat(pid):
    """/proc/<pid>/stat's fields after the comm: [0] is the state, so
    proc(5)'s field n is [n - 3]."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def btime():
    with open("/proc/stat") as f:
        return int(re.search(r"^btime (\d+)$", f.read(), re.M).group(1))


def soft_limit(pid, what):
    """The soft limit /proc/<pid>/limits gives for @what ("Max open files"):
    an int, or None for unlimited."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith(what + " "):
                soft = line[len(what):].split()[0]
                return None if soft == "unlimited" else int(soft)
    raise AssertionError("no %s in /proc/%d/limits" % (what, pid))


def n_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200, r.status
        return r.read().decode()
    finally:
        c.close()


class ProcessMetrics(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="semid-procm-")
        self.model = os.path.join(self.work, "demo.safetensors")
        T.doc_model(self.model)

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def start(self, args=(), **popen):
        srv = T.Server(["--model", self.model, "--registry", "none"] + list(args), self.work,
                       **popen)
        self.addCleanup(lambda: srv.proc.poll() is not None or srv.kill())
        return srv

    def test_values_agree_with_proc(self):
        if T.WRAPPER:
            self.skipTest("under %s the process is the wrapper's" % T.WRAPPER[0])
        t0 = time.time()
        srv = self.start()
        t1 = time.time()
        pid = srv.proc.pid
        try:
            # the scrape on a connection already open (a closed one goes
            # away from the server's descriptors a moment later)
            conn = srv.conn()
            self.assertEqual(srv.request("GET", "/healthz", conn=conn)[0], 200)
            for attempt in range(20):  # until no descriptor came or went around it
                fds0, before = n_fds(pid), proc_stat(pid)
                st, _, body = srv.request("GET", "/metrics", conn=conn)
                after, fds1 = proc_stat(pid), n_fds(pid)
                if fds0 == fds1:
                    break
                time.sleep(0.05)
            conn.close()
            self.assertEqual(st, 200)
            m = T.metric_samples(body.decode())
            boot = btime()
            max_fds = soft_limit(pid, "Max open files")
            max_as = soft_limit(pid, "Max address space")
            # the limits are read at each scrape: prlimit moves them
            hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (max_fds - 7, hard))
            # far above what it maps (a sanitizer's shadow maps terabytes)
            as_limit = max(1 << 44, 4 * int(after[20]))
            resource.prlimit(pid, resource.RLIMIT_AS, (as_limit, resource.RLIM_INFINITY))
            m2 = srv.metrics()
            limits2 = (soft_limit(pid, "Max open files"), soft_limit(pid, "Max address space"))
            resource.prlimit(pid, resource.RLIMIT_AS,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            m3 = srv.metrics()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

        def ticks(fields):
            return (int(fields[11]) + int(fields[12])) / TCK

        # CPU: between the reads around the scrape (printed to the ms)
        self.assertGreaterEqual(m["process_cpu_seconds_total"], ticks(before) - 0.0005)
        self.assertLessEqual(m["process_cpu_seconds_total"], ticks(after) + 0.0005)
        # memory and threads move a little: within the two reads, and 5 %
        for name, field, scale in (("process_resident_memory_bytes", 21, PAGE),
                                   ("process_virtual_memory_bytes", 20, 1),
                                   ("process_threads", 17, 1)):
            lo = min(int(before[field]), int(after[field])) * scale
            hi = max(int(before[field]), int(after[field])) * scale
            with self.subTest(metric=name, lo=lo, hi=hi):
                self.assertGreaterEqual(m[name], lo * 0.95)
                self.assertLessEqual(m[name], hi * 1.05)
        self.assertGreaterEqual(m["process_threads"], 2)
        self.assertEqual(m["process_threads"], int(after[17]))
        # descriptors: /proc/<pid>/fd's (the scrape's connection among them;
        # not the one the server lists them with)
        self.assertEqual(fds0, fds1, "descriptors kept changing")
        self.assertEqual(m["process_open_fds"], fds0)
        # start time: the client libraries' method, and when it was started
        start = boot + int(before[19]) / TCK
        self.assertAlmostEqual(m["process_start_time_seconds"], start, delta=1)
        self.assertGreaterEqual(m["process_start_time_seconds"], t0 - 1)
        self.assertLessEqual(m["process_start_time_seconds"], t1 + 1)
        # limits
        self.assertEqual(m["process_max_fds"], max_fds)
        self.assertIsNone(max_as)
        self.assertNotIn("process_virtual_memory_max_bytes", m)
        self.assertEqual(limits2, (max_fds - 7, as_limit))
        self.assertEqual(m2["process_max_fds"], max_fds - 7)
        self.assertEqual(m2["process_virtual_memory_max_bytes"], as_limit)
        self.assertNotIn("process_virtual_memory_max_bytes", m3)
        self.assertEqual(m3["process_start_time_seconds"], m["process_start_time_seconds"])

    def test_open_fds_follow_connections(self):
        """N idle connections (no request sent) raise process_open_fds by at
        least N; it falls back once they are closed."""
        N = 40
        srv = self.start()
        conn = srv.conn()  # every scrape on it: no connection of the scrapes' comes or goes

        def scrape_when(ok):
            deadline = time.monotonic() + 10 * T.SLOW
            while True:
                st, _, body = srv.request("GET", "/metrics", conn=conn)
                self.assertEqual(st, 200)
                m = T.metric_samples(body.decode())
                if ok(m) or time.monotonic() > deadline:
                    return m
                time.sleep(0.02)

        try:
            # the start's probes closed: this connection is the only one
            base = scrape_when(lambda m: m["semid_connections_open"] == 1)
            self.assertEqual(base["semid_connections_open"], 1)
            socks = []
            try:
                for _ in range(N):
                    socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
                held = scrape_when(lambda m: m["semid_connections_open"] >= N + 1)
                self.assertEqual(held["semid_connections_open"], N + 1)
            finally:
                for s in socks:
                    s.close()
            after = scrape_when(lambda m: m["process_open_fds"] <= base["process_open_fds"])
            conn.close()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        base, held, after = (m["process_open_fds"] for m in (base, held, after))
        self.assertGreaterEqual(held, base + N)
        self.assertLessEqual(after, base)

    def test_cpu_rises_with_encodes_and_never_decreases(self):
        srv = self.start()
        pid = srv.proc.pid
        rng = np.random.default_rng(3)
        body = {"inputs": [{"embedding": r.tolist()} for r in rng.standard_normal((512, 4))]}
        seen = []
        try:
            seen.append(srv.metrics()["process_cpu_seconds_total"])
            start = ticks0 = sum(int(x) for x in proc_stat(pid)[11:13])
            deadline = time.monotonic() + 20 * T.SLOW
            conn = srv.conn()
            # a burst: until the server spent 0.2 s of CPU by /proc's count,
            # scraped twice at least on the way (10 requests may take that
            # much under valgrind)
            while (ticks0 - start < 0.2 * TCK or len(seen) < 3) and \
                    time.monotonic() < deadline:
                for _ in range(10):
                    st, _, _ = srv.json("POST", "/v1/items:encode", body, conn=conn)
                    self.assertEqual(st, 200)
                seen.append(srv.metrics()["process_cpu_seconds_total"])
                ticks0 = sum(int(x) for x in proc_stat(pid)[11:13])
            conn.close()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertGreaterEqual(ticks0 - start, 0.2 * TCK, "the burst used no CPU")
        self.assertGreaterEqual(len(seen), 3)
        self.assertEqual(seen, sorted(seen), "process_cpu_seconds_total went down")
        self.assertGreater(seen[-1] - seen[0], 0.1)

    def test_memory_given_back_when_idle(self):
        if T.WRAPPER or os.environ.get("SEMID_SANITIZE"):
            self.skipTest("the allocator under %s is not glibc's" %
                          (T.WRAPPER[0] if T.WRAPPER else "a sanitizer"))
        rng = np.random.default_rng(11)
        model = os.path.join(self.work, "wide.safetensors")
        T.write_model(model, {"item": T.random_tower(rng, 256, [32], 8, [16, 16])}, "wide")
        # JSON bodies of 20 MB (the workers keep their encode workspaces,
        # sized for 256 rows whatever the batch, so the bodies make the burst)
        x = rng.standard_normal((4096, 256)).astype(np.float32)
        body = json.dumps({"inputs": [{"embedding": r.tolist()} for r in x]}).encode()
        # By default what glibc gives back by itself after a burst depends
        # on the timing: a thread's arena drops a 64 MB sub-heap once all
        # of it is free, and a heap's top past the dynamic trim threshold
        # goes back at the free; once it gave back enough there is nothing
        # to trim (CI saw that).  One arena, a fixed mmap threshold above
        # the bodies and no trim at free time leave malloc_trim the only
        # way back; `make bench-burst` measures glibc's defaults.
        keep = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:"
                "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=%d" % (1 << 40)}

        for trim in (1, 0):
            with self.subTest(memory_trim_s=trim):
                srv = self.start(["--model", model, "--max-inputs", "4096", "--memory-trim-s",
                                  str(trim), "--log-level", "debug"], env=keep)
                pid = srv.proc.pid
                try:
                    # small requests with quiet spells between them: the
                    # resident size did not grow, so nothing to give back
                    # (each page given back is a fault when used again);
                    # with 0 there is no trim at all (checked at the end)
                    for _ in range(2 if trim else 0):
                        st, _, out = srv.json("POST", "/v1/items:encode",
                                              {"inputs": [{"embedding": x[0].tolist()}]})
                        self.assertEqual(st, 200, out)
                        time.sleep(2.5)
                    self.assertNotIn("event=memory", srv.log_text())
                    base = T.rss_bytes(pid)
                    # (the bodies come from the heap: below the fixed mmap
                    # threshold, and nothing goes back at the free)
                    self.assertEqual(T.post_burst(srv, body), [])
                    peak = T.rss_bytes(pid)
                    self.assertGreater(peak - base, 48 << 20, "the burst added too little")
                    line = base + (peak - base) * (3 if trim else 9) // (4 if trim else 10)
                    deadline = time.monotonic() + (10 if trim else 3)
                    while T.rss_bytes(pid) > line and time.monotonic() < deadline:
                        time.sleep(0.1)
                    now = T.rss_bytes(pid)
                finally:
                    self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
                msg = "RSS %d MiB at start, %d after the burst, %d now" % (
                    base >> 20, peak >> 20, now >> 20)
                if trim:
                    self.assertLessEqual(now, line, msg)
                    self.assertEqual(srv.log_text().count(" event=memory "), 1)
                else:
                    self.assertGreater(now, line, msg)
                    self.assertNotIn("event=memory", srv.log_text())

    def test_operations_port(self):
        """The operations port serves the process metrics too (the route
        is the same), and promtool accepts that scrape as it is."""
        srv = self.start(["--ops-listen", "127.0.0.1:0"])
        try:
            ops = int(re.search(r"event=listening .* ops_port=(\d+) ", srv.log_text()).group(1))
            main = srv.metrics()
            text = scrape(ops)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        m = T.metric_samples(text)
        for name in PROCESS:
            with self.subTest(metric=name):
                self.assertIn("# TYPE %s %s\n" % (name, "counter" if name.endswith("_total")
                                                   else "gauge"), text)
                if name == "process_cpu_seconds_total":
                    # counted in clock ticks (10 ms), as the client libraries
                    # do: a server that has just started may not have used
                    # one yet (seen in a container), so only "no less than
                    # the main port's, scraped before"
                    self.assertGreaterEqual(m[name], main[name])
                elif name != "process_virtual_memory_max_bytes":
                    self.assertGreater(m[name], 0)
        for name in ("process_start_time_seconds", "process_max_fds"):
            self.assertEqual(m[name], main[name])
        promtool = T.find_promtool()
        if not promtool:
            self.skipTest("no promtool ($SEMID_PROMTOOL, which `make deps-test` unpacks from "
                          "Debian's prometheus package, or on PATH)")
        p = subprocess.run([promtool, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_without_proc(self):
        """A sandbox without /proc: the server runs with an empty tmpfs on
        /proc in a mount namespace of its own."""
        if os.geteuid() != 0:
            self.skipTest("needs root (a mount namespace)")
        if T.WRAPPER:
            self.skipTest("%s reads /proc itself" % T.WRAPPER[0])
        libc = ctypes.CDLL(None, use_errno=True)
        CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 0x40000

        def no_proc():
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if libc.mount(b"none", b"/proc", b"tmpfs", 0, None) != 0:
                raise OSError(ctypes.get_errno(), "mount tmpfs /proc")

        sanitizer = os.environ.get("SEMID_SANITIZE")
        try:
            # memory_trim_s cannot read the resident size: it trims after
            # every quiet spell, and says so without one
            srv = self.start(["--memory-trim-s", "1", "--log-level", "debug"],
                             preexec_fn=no_proc)
        except subprocess.SubprocessError as e:  # preexec_fn failed
            self.skipTest("no mount namespace here: %s" % e)
        except RuntimeError as e:
            if not sanitizer:
                raise
            self.skipTest("a %s sanitizer runtime that needs /proc: %s" % (sanitizer, e))
        try:
            texts = [srv.request("GET", "/metrics")[2].decode() for _ in range(3)]
            st, _, body = srv.json("POST", "/v1/items:encode",
                                   {"inputs": [{"embedding": [1.0, 2.0, 3.0, 4.0]}]})
            self.assertEqual(st, 200, body)
            deadline = time.monotonic() + 10
            while " event=memory " not in srv.log_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            rc = srv.stop()
        if rc != 0 and sanitizer:
            # LeakSanitizer reads /proc at exit (and ASAN_OPTIONS from
            # /proc/self/environ): without it, it gives up, exit status 1
            self.assertRegex(srv.log_text(), r"Sanitizer has encountered a fatal error")
        else:
            self.assertEqual(rc, 0, srv.log_text()[-2000:])
        m = T.metric_samples(texts[-1])
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes", "process_open_fds",
                     "process_start_time_seconds", "process_threads"):
            with self.subTest(metric=name):
                self.assertNotIn(name, m)
                self.assertIn("# TYPE %s " % name, texts[-1])
        self.assertIn("process_max_fds", m)
        for name in ("semid_build_info", "semid_requests_total", "semid_encoded_total"):
            self.assertTrue(any(k.startswith(name + "{") for k in m), name)
        lines = [ln for ln in srv.log_text().splitlines() if " event=metrics " in ln]
        self.assertEqual(len(lines), 2, lines)  # /proc/self/stat and /proc/self/fd, once
        self.assertTrue(all(" level=warn " in ln for ln in lines), lines)
        self.assertIn("/proc/self/stat: No such file or directory", lines[0] + lines[1])
        self.assertIn("/proc/self/fd: No such file or directory", lines[0] + lines[1])
        trims = [ln for ln in srv.log_text().splitlines() if " event=memory " in ln]
        self.assertTrue(trims)
        self.assertTrue(all("given back to the system in " in ln and "resident" not in ln
                            for ln in trims), trims)


if __name__ == "__main__":
    unittest.main(verbosity=2)
