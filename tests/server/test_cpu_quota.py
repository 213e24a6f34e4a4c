#!/usr/bin/python3
"""Thread counts under a real cgroup CPU quota (core/cpus.h), as a container
limited with `docker run --cpus`, a Kubernetes CPU limit or systemd's
CPUQuota= runs them: a quota without a cpuset, which the affinity mask does
not show.

- semid-server without --workers, in a cgroup allowed 1 CPU (cpu.max
  "100000 100000" on cgroup v2, cpu.cfs_quota_us 100000 on v1), starts 1
  worker and says why in its event=listening line (workers_from="cpu quota
  100000/100000 at <cgroup> ..."); 1.5 CPUs round up to 2; --workers still
  wins there.
- semid-train without --threads (and no OPENBLAS_NUM_THREADS) runs 1
  OpenBLAS thread there and says so.

Needs root and a cgroup hierarchy with the cpu controller where a child
cgroup can be made (v2: under this process's cgroup or the hierarchy's
root, enabling the controller for its children if needed; v1: under this
process's cgroup of the cpu hierarchy); otherwise every test is skipped,
saying why.  The child cgroup is removed afterwards.  Every wait is bounded.
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_cpu_quota.py
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

TRAIN = os.path.join(T.BIN, "semid-train")
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
             "OPENBLAS_DEFAULT_NUM_THREADS")


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def unescape(s):
    """mountinfo's \\NNN octal escapes (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts():
    """[(fstype, root, mount point, super options)] of /proc/self/mountinfo."""
    out = []
    for line in read("/proc/self/mountinfo").splitlines():
        f = line.split(" ")
        if "-" not in f[6:]:
            continue
        d = f.index("-", 6)
        if len(f) > d + 3:
            out.append((f[d + 1], unescape(f[3]), unescape(f[4]), f[d + 3].split(",")))
    return out


def own_cgroup(v):
    """This process's cgroup in the v2 hierarchy (v=2) or v1's cpu one."""
    for line in read("/proc/self/cgroup").splitlines():
        hid, ctrl, path = line.split(":", 2)
        if (v == 2 and hid == "0" and ctrl == "") or (v == 1 and "cpu" in ctrl.split(",")):
            return path
    return None


def affinity():
    return len(os.sched_getaffinity(0))


class QuotaCgroup:
    """A new child cgroup with a CPU quota of quota_us per period_us: on
    cgroup v2 if its hierarchy has the cpu controller, else on v1's cpu
    hierarchy.  Raises unittest.SkipTest saying why when neither works."""

    def __init__(self, quota_us, period_us=100000):
        self.dir = self.enabled = None
        self.name = "semid-quota-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        why = []
        for make in (self._v2, self._v1):
            try:
                reason = make(quota_us, period_us)
            except OSError as e:
                reason = "%s: %s" % (make.__name__[1:], e)
                self.remove()
            if reason is None:
                return
            why.append(reason)
        raise unittest.SkipTest("no cgroup with a CPU quota can be made here (%s)"
                                % "; ".join(why))

    def _place(self, point, root, path):
        """The directory of cgroup @path in a mount of @root at @point."""
        if root != "/" and not (path == root or path.startswith(root + "/")):
            return None
        return point + (path[len(root):] if root != "/" else path)

    def _v2(self, quota_us, period_us):
        path = own_cgroup(2)
        m = [(r, p) for t, r, p, _ in mounts() if t == "cgroup2"]
        if path is None or not m:
            return "v2: no unified hierarchy"
        root, point = m[0]
        own = self._place(point, root, path)
        # the own cgroup first; its processes forbid enabling a controller
        # for its children, except at the root, so the root next
        for parent, cgpath in ((own, path), (point, root)):
            if parent is None:
                continue
            if "cpu" not in read(os.path.join(parent, "cgroup.controllers")).split():
                continue
            sub = os.path.join(parent, "cgroup.subtree_control")
            if "cpu" not in read(sub).split():
                try:
                    write(sub, "+cpu")
                except OSError:
                    continue
                self.enabled = sub
            self.dir = os.path.join(parent, self.name)
            os.mkdir(self.dir)
            write(os.path.join(self.dir, "cpu.max"), "%d %d" % (quota_us, period_us))
            self.v = 2
            self.path = cgpath.rstrip("/") + "/" + self.name
            return None
        return "v2: the cpu controller is not available to a child cgroup"

    def _v1(self, quota_us, period_us):
        path = own_cgroup(1)
        m = [(r, p) for t, r, p, opts in mounts() if t == "cgroup" and "cpu" in opts]
        if path is None or not m:
            return "v1: no cpu controller hierarchy"
        root, point = m[0]
        parent = self._place(point, root, path)
        if parent is None:
            return "v1: this process's cgroup is outside the mount"
        self.dir = os.path.join(parent, self.name)
        os.mkdir(self.dir)
        write(os.path.join(self.dir, "cpu.cfs_period_us"), str(period_us))
        write(os.path.join(self.dir, "cpu.cfs_quota_us"), str(quota_us))
        self.v = 1
        self.path = path.rstrip("/") + "/" + self.name
        return None

    def enter(self):
        """A preexec_fn: the child process moves into the cgroup."""
        procs = os.path.join(self.dir, "cgroup.procs")
        return lambda: write(procs, str(os.getpid()))

    def remove(self):
        """rmdir once its processes are gone (bounded), and the controller
        enabled for it disabled again if nothing else uses it."""
        if self.dir and os.path.isdir(self.dir):
            deadline = time.monotonic() + 10
            while True:
                try:
                    os.rmdir(self.dir)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.dir = None
        if self.enabled:
            try:
                write(self.enabled, "-cpu")
            except OSError:
                pass  # a sibling uses it now
            self.enabled = None


SHIPPED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "config",
                              "semid-server.json")


def setUpModule():
    global WORK, MODEL
    if os.geteuid() != 0:
        raise unittest.SkipTest("cgroups can only be made as root here")
    WORK = tempfile.mkdtemp(prefix="semid-quota-test-")
    MODEL = os.path.join(WORK, "demo.safetensors")
    T.doc_model(MODEL)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


class CpuQuotaTest(unittest.TestCase):
    def quota(self, quota_us, period_us=100000):
        cg = QuotaCgroup(quota_us, period_us)
        self.addCleanup(cg.remove)
        if affinity() < 2:
            self.skipTest("one CPU in the affinity mask: a quota of 1 changes nothing")
        return cg

    def serve(self, cg, *args):
        srv = T.Server(["--model", MODEL, "--registry", "none", "--watch=false"] + list(args),
                       WORK, preexec_fn=cg.enter())
        self.addCleanup(srv.kill)
        # it really runs in the cgroup
        self.assertIn(cg.path, read("/proc/%d/cgroup" % srv.proc.pid))
        return srv

    def listening(self, srv):
        return re.search(r"event=listening .*", srv.log_text()).group(0)

    def stop(self, srv):
        self.assertEqual(srv.stop(), 0, srv.log_text())

    def test_server_workers_follow_the_quota(self):
        cg = self.quota(100000)
        srv = self.serve(cg)
        line = self.listening(srv)
        want = ('workers=1 workers_from="cpu quota 100000/100000 at %s (cgroup v%d; '
                'affinity %d)"' % (cg.path, cg.v, affinity()))
        self.assertIn(" " + want + " ", line)
        # and it serves on its one worker
        st, _, body = srv.json("POST", "/v1/items:encode",
                               {"inputs": [{"id": "a", "embedding": [0.5, 0.25, 0, 1]}]})
        self.assertEqual(st, 200, body)
        self.stop(srv)
        # the image's config file names every key, workers as 0: the quota
        # still decides (it said 2, which pinned a --cpus 8 container to 2)
        srv = self.serve(cg, "--config", SHIPPED_CONFIG)
        self.assertIn(" " + want + " ", self.listening(srv))
        self.stop(srv)

    def test_fraction_rounds_up_and_flags_win(self):
        cg = self.quota(150000)  # 1.5 CPUs: 2 workers (this host has 2 or more CPUs)
        srv = self.serve(cg)
        n = min(affinity(), 2)
        self.assertRegex(self.listening(srv), r" workers=%d workers_from=\"(cpu quota|affinity "
                         r"%d \(cpu quota) 150000/100000 at %s " % (n, n, re.escape(cg.path)))
        self.stop(srv)
        srv = self.serve(cg, "--workers", "3")
        self.assertIn(" workers=3 workers_from=--workers ", self.listening(srv))
        self.stop(srv)

    def test_trainer_blas_threads_follow_the_quota(self):
        cg = self.quota(100000)
        data = os.path.join(WORK, "data")
        p = subprocess.run([TRAIN, "gen", "--out", data, "--items", "300", "--users", "200",
                            "--interactions", "3000", "--dim", "8", "--seed", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
        args = [TRAIN, "--items", os.path.join(data, "items.npy"),
                "--users", os.path.join(data, "users.npy"),
                "--train", os.path.join(data, "train.tsv"),
                "--out", os.path.join(WORK, "m.safetensors"), "--epochs", "1",
                "--batch-size", "256", "--hidden", "16", "--latent-dim", "8",
                "--codebook-size", "8", "--levels", "2", "--no-progress", "--kmeans-iters", "3"]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120, env=env, preexec_fn=cg.enter())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("semid-train: 1 OpenBLAS thread from cpu quota 100000/100000 at %s "
                      "(cgroup v%d; affinity %d)\n" % (cg.path, cg.v, affinity()), p.stderr)
        # --threads wins, and so does OpenBLAS's own variable
        p = subprocess.run(args + ["--threads", "2"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120, env=env,
                           preexec_fn=cg.enter())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("semid-train: 2 OpenBLAS threads from the threads setting\n", p.stderr)
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120, env=dict(env, OPENBLAS_NUM_THREADS="2"),
                           preexec_fn=cg.enter())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("semid-train: 2 OpenBLAS threads from OPENBLAS_NUM_THREADS=2\n", p.stderr)


if __name__ == "__main__":
    unittest.main()
