#!/usr/bin/python3
"""`make bench-smoke`: every benchmark of `make bench`, and `make soak`, through
its own make target, at a tiny size (SEMID_BENCH_SMOKE=1, which each program and script
honours), and a check that each still produces its whole report: every row
and column it should have, every figure a number (positive where a tiny run
still gives a positive one: rates, latencies, sizes; any sign where it is the
difference of two runs; at least zero where the report's rounding can show a
tiny figure as 0), every ratio computed, and the report saying it was a smoke
run.  The benchmarks are run by hand and never by CI, so a change could break
one and nobody noticed until the next measurement.

Nothing here is about speed: the figures of a smoke run mean nothing (the
project's rule: speed is measured by benchmarks, never asserted by tests).
What is asserted besides the report's shape are the benchmarks' own checks
of what they ran: no non-2xx answers, a registry check with no problems, the
same codes for 1 and N threads, a soak with no error.

Each benchmark runs as `make bench-X` with O, BIN and SANITIZE of this build,
from a copy of the tree in a directory only root may enter (as a checkout in
/root is: the benchmarks' tools that run as postgres or nobody must not need
its cwd), and its reports in a temporary BENCH_OUT (bench/out/ of the tree,
with the real figures, is not touched); three at a time, they take about half
a minute.
The PostgreSQL rows of bench-registry and bench-assign are expected when
their throwaway cluster can start (root, PostgreSQL 15 installed) and absent
otherwise.  bench-http, bench-assign and bench-backup need wrk, which `make
test` installs (DEB_PACKAGES_TEST).

Run by `make test` and `make bench-smoke`; standalone (after `make
test-build`): /usr/bin/python3 tests/bench/test_bench_smoke.py
"""
import concurrent.futures
import math
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PGBIN = "/usr/lib/postgresql/15/bin"
CPUS = os.cpu_count() or 1


def pg_expected():
    """Whether the benchmarks' throwaway PostgreSQL cluster can start here."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return os.geteuid() == 0 and os.access(PGBIN + "/initdb", os.X_OK)


def make_env(tmp):
    """The smoke run's environment: a make started by this test, not a
    sub-make of the `make test` that may have started it (no jobserver)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["SEMID_BENCH_SMOKE"] = "1"
    env["TMPDIR"] = tmp
    return env


# every benchmark of `make bench`, the longest first
BENCHES = ("bench-assign", "bench-registry", "bench-backup", "bench-http", "bench-train",
           "bench-encode", "bench-reassign", "bench-burst", "bench-delete", "bench-cli",
           "bench-hotpath")
# the long runs outside `make bench` that have a smoke run too
OTHERS = ("soak",)
# bench/out report of each benchmark that writes one (the others print theirs)
REPORTS = {"soak": "RESULTS-soak.md", "bench-http": "RESULTS-server.md", "bench-assign": "RESULTS-assign.md",
           "bench-backup": "RESULTS-backup.md", "bench-reassign": "RESULTS-reassign.md",
           "bench-burst": "RESULTS-burst.md", "bench-delete": "RESULTS-delete.md",
           "bench-train": "RESULTS-bench-train.md"}

NUM_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan")


def numbers(text):
    """Every number in @text (thousands separators allowed), as floats."""
    return [float(x.replace(",", "")) for x in NUM_RE.findall(text)]


def md_tables(text):
    """The markdown tables of @text: [(header cells, [row cells, ...]), ...]."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def locked_copy(dest):
    """Copy the tree's sources (git's tracked and untracked-not-ignored
    files, mtimes kept, so that nothing built from them is out of date) to
    @dest, in a directory only root may enter: a checkout as /root/semid is
    one, and tools run there as postgres or nobody must not need to enter
    it.  -> the copy's root."""
    locked = os.path.join(dest, "locked")
    os.mkdir(locked, 0o700)
    tree = os.path.join(locked, "semid")
    try:
        names = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        # all but what builds and runs write (.gitignore's directories)
        skip = {os.path.join(ROOT, n) for n in (".git", "build", "bin", "demo", "bench/out",
                                                 "data", "models", "backups")}
        shutil.copytree(ROOT, tree, ignore=lambda d, names: [
            n for n in names if os.path.join(d, n) in skip])
        return tree
    for name in names:
        src = os.path.join(ROOT, name)
        if name and os.path.isfile(src):  # (a file deleted but not yet from git: not there)
            os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
            shutil.copy2(src, os.path.join(tree, name))
    return tree


class BenchSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="test_bench_smoke.")
        # the benchmarks' temporary directories go here (TMPDIR), their
        # PostgreSQL clusters among them, which run as user postgres
        os.chmod(cls.tmp, 0o755)
        cls.out = os.path.join(cls.tmp, "out")
        env = make_env(cls.tmp)
        # from a copy of the tree that only root may enter (as /root/semid):
        # PostgreSQL's tools, which run as postgres, warned into
        # bench-registry's report that they could not enter it
        args = ["make", "-s", "--no-print-directory", "-C", locked_copy(cls.tmp),
                "O=" + os.environ.get("SEMID_O", os.path.join(ROOT, "build")),
                "BIN=" + os.environ.get("SEMID_BIN", os.path.join(ROOT, "bin")),
                "SANITIZE=" + os.environ.get("SEMID_SANITIZE", ""),
                "BENCH_OUT=" + cls.out, "EVAL_DIR=" + os.path.join(cls.tmp, "eval")]

        def run(target):
            return subprocess.run(args + [target], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=600)
        # three at a time: most of a smoke run is waiting (fsync, wrk's paced
        # connections, a server starting)
        cls.pool = concurrent.futures.ThreadPoolExecutor(3)
        cls.runs = {t: cls.pool.submit(run, t) for t in BENCHES[:5] + OTHERS + BENCHES[5:]}

    @classmethod
    def tearDownClass(cls):
        cls.pool.shutdown(wait=True)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ---------------------------------------------------------

    def bench(self, target):
        """Run @target's smoke run; -> (its output, its report or None)."""
        p = self.runs[target].result()
        self.assertEqual(p.returncode, 0, "make %s failed:\n%s" % (target, p.stdout[-6000:]))
        report = None
        if target in REPORTS:
            with open(os.path.join(self.out, REPORTS[target])) as f:
                report = f.read()
            self.assertIn("**SMOKE RUN** (SEMID_BENCH_SMOKE)", report)
            self.assertIn("do not copy them", report)
        return p.stdout, report

    def figure(self, text, rule, what):
        """Check the figure(s) in @text by @rule: "pos" (every number > 0),
        "nonneg" (>= 0: a tiny figure the report rounds to 0), "any"
        (finite: a difference of two runs), "zero" (an error count),
        "blank" (nothing)."""
        if rule == "blank":
            self.assertEqual(text, "", what)
            return
        nums = numbers(text)
        self.assertTrue(nums, "%s: no number in %r" % (what, text))
        for v in nums:
            self.assertTrue(math.isfinite(v), "%s: %r" % (what, text))
            if rule == "pos":
                self.assertGreater(v, 0, "%s: %r" % (what, text))
            elif rule == "nonneg":
                self.assertGreaterEqual(v, 0, "%s: %r" % (what, text))
            elif rule == "zero":
                self.assertEqual(v, 0, "%s: %r" % (what, text))

    def table(self, text, header, nkeys, keys, rules=None, default="pos", keyfn=None):
        """The markdown table of @text whose header is @header: its rows'
        first @nkeys cells (or @keyfn of the row's cells) are exactly @keys
        (a list, in order), and every other cell follows its column's rule
        (@rules: header -> rule, or a function of the row's key giving one;
        @default otherwise).  -> {key: {header: cell}}."""
        found = [rows for h, rows in md_tables(text) if h == header]
        self.assertEqual(len(found), 1, "table %r in:\n%s" % (header, text))
        rows = found[0]
        keyfn = keyfn or (lambda r: tuple(r[:nkeys]) if nkeys != 1 else r[0])
        got = [keyfn(r) for r in rows]
        self.assertEqual(got, keys, "rows of table %r" % header[0])
        out = {}
        for key, r in zip(got, rows):
            self.assertEqual(len(r), len(header), "row %r" % (key,))
            for h, cell in list(zip(header, r))[nkeys:]:
                rule = (rules or {}).get(h, default)
                if callable(rule):
                    rule = rule(key)
                self.figure(cell, rule, "%s / %s" % (key, h))
            out[key] = dict(zip(header, r))
        return out

    def line(self, text, pattern):
        """The one line of @text matching @pattern; -> its groups."""
        ms = re.findall("^" + pattern + "$", text, re.M)
        self.assertEqual(len(ms), 1, "one line %r in:\n%s" % (pattern, text))
        return ms[0]

    def test_every_benchmark(self):
        """A benchmark added to `make bench` without a smoke check fails here."""
        p = subprocess.run(["make", "-pRrq", "-C", ROOT, "bench"], env=make_env(self.tmp),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=60)
        prereqs = re.findall(r"^bench:(.*)$", p.stdout, re.M)
        self.assertEqual(len(prereqs), 1, p.stdout[-2000:])
        self.assertEqual(sorted(prereqs[0].split()), sorted(BENCHES))
        for target in BENCHES + OTHERS:
            self.assertTrue(hasattr(self, "test_" + target.split("-")[-1]), target)

    # ---- the C benchmarks, which print their figures ---------------------

    def test_encode(self):
        out, _ = self.bench("bench-encode")
        # a second run with OPENBLAS_CORETYPE=SkylakeX on an AVX-512 CPU
        runs = re.split(r"^# again with OPENBLAS_CORETYPE=SkylakeX .*\n", out, flags=re.M)
        with open("/proc/cpuinfo") as f:
            self.assertEqual(len(runs), 2 if " avx512f" in f.read() else 1, out)
        threads = sorted({1, CPUS})
        for run in runs:
            self.assertTrue(run.lstrip().startswith("# SMOKE RUN (SEMID_BENCH_SMOKE)"), run)
            self.line(run, r"tower +batch +threads +items/s +enc GF/s +sgemm GF/s +ratio")
            rows = re.findall(r"^(TIGER|DAS) +(\d+) +(\d+) +(\S+) +(\S+) +(\S+) +(\S+)%$",
                              run, re.M)
            self.assertEqual([r[:3] for r in rows],
                             [(t, str(b), str(n)) for t in ("TIGER", "DAS") for b in (1, 16, 256)
                              for n in threads])
            # a tiny all-core row is timed by wall time: on a loaded machine
            # its sgemm can come out under the 0.05 GF/s the table rounds to 0
            for r in rows:
                for v in r[3:]:
                    self.figure(v, "nonneg" if r[2] != "1" else "pos",
                                "%s %s" % (r[:3], run))
            for tower in ("TIGER", "DAS"):
                lat = self.line(run, tower + r" +batch-1 latency \(1 thread\): CPU time median "
                                r"(\S+) us, p99 (\S+) us; wall median (\S+) us, p99 (\S+) us")
                self.figure(" ".join(lat), "pos", tower + " latency")

    def test_hotpath(self):
        out, _ = self.bench("bench-hotpath")
        self.assertTrue(out.startswith("# SMOKE RUN (SEMID_BENCH_SMOKE)"), out)
        names = ["float: distance (printf writer)", "float: distance (srv_buf_float)",
                 "float: quantized (printf writer)", "float: quantized (srv_buf_float)",
                 "base64: one 384-d row (2048 chars)", "request: 64 x 384 base64",
                 "request: 64 x 384 JSON numbers", "request: 64 x 384 JSON, 17 digits",
                 "400: 64 x 384 base64, 256-d tower", "400: 64 x 384 JSON, 256-d tower",
                 "400: 64 x 384 base64, NaN in each", "response: 64 results, top_k 1",
                 "response: 64, top_k 4 + quantized", "log line: to a file",
                 "log line: to a pipe (poll+write)"]
        rows = re.findall(r"^(\S.{33}) +(\S+) us +(\S+) (M floats/s|G chars/s|M items/s|"
                          r"M lines/s)(?:   x(\S+) (?:vs the printf writer|the file's CPU "
                          r"time))?$", out, re.M)
        self.assertEqual([r[0].strip() for r in rows], names, out)
        for name, us, rate, _, ratio in rows:
            self.figure(us, "pos", name)
            self.figure(rate, "nonneg", name)  # "0.0 M items/s" under a sanitizer
            if "srv_buf_float" in name or "to a pipe" in name:
                self.figure(ratio, "pos", name)

    def test_registry(self):
        out, _ = self.bench("bench-registry")
        blocks = out.split("# SMOKE RUN (SEMID_BENCH_SMOKE)")
        self.assertEqual(blocks[0], "", out)
        blocks = blocks[1:]
        pg = pg_expected()
        # run as postgres from a checkout postgres may not enter, the cluster's
        # tools warned so into the report
        self.assertNotIn("could not change directory", out)
        self.assertEqual(len(blocks), 4 if pg else 3, out)
        # bench_registry encode
        for w in ("1 worker ", "2 workers"):
            self.figure(" ".join(self.line(
                blocks[0], w + r": encode +(\S+) items/s; encode \+ assign +(\S+) items/s "
                r"\((\S+)%\), without keeping embeddings +(\S+) \((\S+)%\)")), "pos", w)
        # bench_registry assign, on SQLite and on PostgreSQL
        cases = ["new ids, batch 1", "new ids, batch 64", "new ids, batch 1, 768-d embedding kept",
                 "new ids, batch 64, 768-d embedding kept", "known ids, batch 64",
                 "new ids, batch 64, 2 threads, own handles",
                 "new ids, batch 1, 1 thread, one handle",
                 "new ids, batch 64, 1 thread, one handle",
                 "new ids, batch 1, 8 threads, one handle",
                 "new ids, batch 64, 8 threads, one handle"]
        stores = [(blocks[1], "sqlite")] + ([(blocks[2], "postgresql")] if pg else [])
        for text, backend in stores:
            self.assertRegex(text, r"# store: \S+ \(%s\)" % backend)
            self.line(text, r"case +assigns/s +ms/call")
            rows = re.findall(r"^(\S.{43}) +(\S+)(?: +(\S+))?$", text, re.M)
            rows = [r for r in rows if not r[0].startswith(("#", "case"))]
            self.assertEqual([r[0].strip() for r in rows], cases, text)
            for name, rate, ms in rows:
                self.figure(rate, "pos", name)
                self.figure(ms, "pos" if "thread" not in name else "blank", name)
        if not pg:
            self.assertIn("# PostgreSQL skipped", out)
        # bench_registry fill: 3000 items, the lookups, the size, the check
        fill = blocks[-1]
        self.assertRegex(fill, r"# store: \S+ \(sqlite\), filling 3000 items in batches of")
        self.figure(" ".join(self.line(fill, r"  3000 items, (\S+) s, (\S+) assigns/s overall")),
                    "nonneg", "fill")
        for what in ("get by id", "get by sid", r"list 2-level prefix \(<=100\)"):
            self.figure(" ".join(self.line(
                fill, what + r" +mean +(\S+) us +p50 +(\S+) us +p99 +(\S+) us")), "pos", what)
        self.figure(" ".join(self.line(fill, r"file size after checkpoint: (\d+) bytes \((\S+) "
                                       r"MiB\), (\S+) bytes/item")), "pos", "file size")
        check = self.line(fill, r"check of (\d+) entries: (\S+) s \(walk (\S+) s, file check "
                          r"(\S+) s\), (\S+)x one stats pass \((\S+) s\); (\d+) problems")
        self.assertEqual((check[0], check[-1]), ("3000", "0"), fill)
        self.figure(" ".join(check[1:5] + check[5:6]), "nonneg", "check times")
        self.figure(check[4], "pos", "check vs stats")

    def test_registry_fill_nothing(self):
        """`make bench-registry BENCH_REGISTRY_ITEMS=0` (assign figures only)
        sampled lookups from an empty store for ever; now it says there are
        none and goes on to the file size and the check."""
        o = os.environ.get("SEMID_O", os.path.join(ROOT, "build"))
        db = os.path.join(self.tmp, "empty.db")
        p = subprocess.run([os.path.join(o, "bench", "bench_registry"), "fill", db, "0"],
                           env=make_env(self.tmp), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("\nno items: no lookups\n", p.stdout)
        self.line(p.stdout, r"check of 0 entries: .*; 0 problems")

    # ---- the scripts ----------------------------------------------------

    def test_cli(self):
        out, _ = self.bench("bench-cli")
        self.assertTrue(out.startswith("**SMOKE RUN** (SEMID_BENCH_SMOKE)"), out)
        self.assertRegex(out, r"`semid encode` on 2000 x 768 float32")
        self.table(out, ["run", "wall s", "rows/s (wall)", "CPU s", "rows per CPU-s",
                         "peak RSS MiB", "wall vs numpy"], 1,
                   ["semid encode --threads 1", "semid encode --threads %d" % CPUS,
                    "numpy baseline (OpenBLAS, all cores, 4096-row chunks from mmap)"],
                   {"wall s": "nonneg", "CPU s": "nonneg"})
        same, agree = self.line(out, r"codes identical for 1 and %d threads: (\w+); rows "
                                r"agreeing with numpy float32: (\S+)%% .*" % CPUS)
        self.assertEqual(same, "True")
        self.figure(agree, "pos", "agreement")

    def test_http(self):
        _, rep = self.bench("bench-http")
        self.assertTrue(rep.startswith("# semid-server HTTP benchmark (make bench-http)\n"))
        self.assertIn("## 384-d model", rep)
        self.assertNotIn("## 1024-d model", rep)
        self.figure(" ".join(self.line(rep, r"In-process: (\S+) items/s at batch 64, (\S+) "
                                       r"items/s at batch 1\.")), "pos", "in-process")
        # the body cell is its format and its size: the rows are keyed on the format
        rows = self.table(
            rep, ["items/request", "body", "conc.", "req/s", "items/s", "p50 ms", "p99 ms",
                  "batch", "vs in-process", "server cores", "wrk us/req",
                  "items per server core", "ceiling", "non-2xx", "other cores", "load avg"], 3,
            [(str(n), f, "16") for n in (1, 64) for f in ("json", "base64")],
            {"vs in-process": "nonneg", "server cores": "nonneg",
             "items per server core": "nonneg", "ceiling": "nonneg", "non-2xx": "zero",
             "other cores": "nonneg", "load avg": "nonneg"},
            keyfn=lambda r: (r[0], r[1].split()[0], r[2]))
        for key, r in rows.items():
            self.assertRegex(r["body"], r"^%s \(\d+ B\)$" % key[1])
        self.table(rep, ["model", "p99 ms without", "p99 ms with swaps", "ratio",
                         "files published", "reloads", "req/s without", "req/s with",
                         "non-2xx"], 1, ["384-d"],
                   {"files published": "nonneg", "reloads": "nonneg", "non-2xx": "zero"})

    def test_assign(self):
        _, rep = self.bench("bench-assign")
        stores = [("SQLite", True), ("SQLite, no embeddings kept", False)]
        if pg_expected():
            stores.append(("PostgreSQL", True))
        else:
            self.assertIn("PostgreSQL skipped", rep)
        keys = [(s, "64", route) for s, known in stores
                for route in ("encode", "assign new") + (("assign known",) if known else ())]

        def store_rule(key):  # the store's columns: empty for encode
            return "blank" if key[2] == "encode" else "nonneg"
        self.table(rep, ["store", "items/request", "route", "req/s", "items/s", "vs encode",
                         "p50 ms", "p99 ms", "non-2xx", "store busy", "ms per store call",
                         "ids per call", "client cores", "load"], 3, keys,
                   {"vs encode": "nonneg", "non-2xx": "zero", "store busy": store_rule,
                    "ms per store call": store_rule, "ids per call": store_rule,
                    "client cores": "nonneg", "load": "nonneg"})
        for store in ("SQLite", "SQLite, no embeddings kept"):
            self.line(rep, r"Goal \(64-item assigns of new ids >= 50% of encode throughput on "
                      r"SQLite\), " + re.escape(store) + r": \d+% in this run, "
                      r"(?:met|NOT met|not judged: .*)\.")

    def test_backup(self):
        _, rep = self.bench("bench-backup")

        def taken(key):  # the backups that ran beside the assigns
            return "blank" if key[1] == "none (baseline)" else "pos"
        rows = self.table(rep, ["round", "backups", "items/s", "vs baseline", "p99 ms",
                                "WAL peak MiB", "backups taken (time / size)"], 2,
                          [("1", "none (baseline)"), ("1", "no cap"), ("1", "--max-rate 200")],
                          {"WAL peak MiB": "nonneg", "backups taken (time / size)": taken})
        for key in (("1", "no cap"), ("1", "--max-rate 200")):
            self.assertRegex(rows[key]["backups taken (time / size)"],
                             r"^\S+ s / \S+ MiB(, \S+ s / \S+ MiB)*$")
        # alone, twice (no key column)
        self.table(rep, ["backup s", "cp + sync s", "ratio", "MiB"], 0, [(), ()],
                   {"cp + sync s": "nonneg"})

    def test_reassign(self):
        _, rep = self.bench("bench-reassign")
        self.assertIn("2000 ids, 384-d embeddings kept", rep)
        self.table(rep, ["run", "assign s (ids/s)", "diff s (ids/s)", "reassign s (ids/s)",
                         "moved", "reassign vs assign"], 1, ["1", "2"])

    def test_burst(self):
        _, rep = self.bench("bench-burst")
        self.table(rep, ["run", "memory_trim_s", "VmRSS start MiB", "after the burst MiB",
                         "after 0.2 s idle MiB", "kept of what the burst added"], 2,
                   [("1", "1"), ("1", "0")],
                   # a share of a difference of two readings: any sign
                   {"kept of what the burst added": "any"})

    def test_delete(self):
        _, rep = self.bench("bench-delete")
        rows = self.table(rep, ["way", "ids/s (median)", "range", "vs one by one"], 1,
                          ["DELETE /v1/items/{id}, 1 id a request",
                           "POST /v1/items:delete, 64 ids a request",
                           "POST /v1/items:delete, 1000 ids a request"], {"range": "any"})
        for r in rows.values():
            self.assertRegex(r["range"], r"^\d+-\d+$")  # low-high

    def test_train(self):
        _, rep = self.bench("bench-train")
        self.assertRegex(rep, r"^<!-- bench-train:begin -->\n## Training benchmarks\n")
        self.assertTrue(rep.endswith("<!-- bench-train:end -->\n"), rep)
        # CPU per epoch and per step are differences of two runs
        self.table(rep, ["mode", "CPU s / epoch (user+sys)",
                         "wall s / epoch on the shared machine"], 1, ["das (joint phase)", "rqvae (joint phase)", "two-stage (joint phase)"],
                   {"CPU s / epoch (user+sys)": "any",
                    "wall s / epoch on the shared machine": "nonneg"})
        if "(perf not installed: no sgemm share)" not in rep:
            shares = [r for h, r in md_tables(rep) if h == ["part", "share of samples"]]
            self.assertEqual(len(shares), 1, rep)
            self.assertTrue(shares[0], rep)
            for part, share in shares[0]:
                self.assertIn(part, ("sgemm", "other OpenBLAS", "semid-train", "libm", "other"))
                self.figure(share, "pos", part)
        self.table(rep, ["what", "figure"], 1,
                   ["steps per epoch", "CPU per step", "one epoch, extrapolated from CPU per step",
                    "wall per step on the shared machine",
                    "load + indexes + table init + k-means (CPU of the 2-step run)",
                    "peak RSS of the training process"],
                   {"figure": lambda key: {
                       "CPU per step": "any", "one epoch, extrapolated from CPU per step": "any",
                       "wall per step on the shared machine": "nonneg",
                       "load + indexes + table init + k-means (CPU of the 2-step run)": "nonneg",
                   }.get(key, "pos")})

    # ---- outside `make bench` -------------------------------------------

    def test_soak(self):
        """`make soak` (10 minutes) was never run by a test: three 1-second
        windows, every column of each, the totals and a verdict that passes
        (no error, no crash, every client alive; VmRSS growth not judged)."""
        _, rep = self.bench("soak")
        self.assertTrue(rep.startswith("# semid-server soak (`make soak`)\n"), rep)
        self.line(rep, r"- command: `make soak SOAK_SECS=3` \(bench/soak.py --secs 3 --clients 4 "
                  r"--swap-every 0.25\)")
        rows = self.table(
            rep, ["window end (s)", "requests", "req/s", "errors", "p50 (ms)", "p99 (ms)",
                  "max (ms)", "VmRSS (MiB)", "swaps good/bad", "reloads ok/failed"], 1,
            ["1", "2", "3"], {"errors": "zero", "swaps good/bad": "nonneg",
                              "reloads ok/failed": "nonneg"})
        for r in rows.values():
            self.assertRegex(r["swaps good/bad"], r"^\d+/\d+$")
            self.assertRegex(r["reloads ok/failed"], r"^\d+/\d+$")
        total = self.line(rep, r"Totals: (\d+) requests in 3 s, (\d+) errors; (\d+) good and "
                          r"(\d+) bad swaps; server exit status (\d+); last model soak-[AB]; "
                          r"registry files (\S+) MiB\.")
        self.assertEqual(int(total[0]), sum(int(r["requests"]) for r in rows.values()), rep)
        self.assertEqual((total[1], total[4]), ("0", "0"), rep)
        self.figure(total[5], "pos", "registry files")
        self.line(rep, r"\*\*Verdict: PASS\*\* - errors 0 \(goal 0\); VmRSS \S+ MiB at 2 s -> "
                  r"\S+ MiB at the end \(\S+%, not judged: a smoke run\)\.")
        self.assertNotIn("First errors", rep)


class SoakArgs(unittest.TestCase):
    def test_shorter_than_a_window(self):
        """`make soak SOAK_SECS=5` started a server and died on an IndexError,
        with no report (no 10-second window to put in one); now it refuses
        before it starts anything, saying why."""
        env = {k: v for k, v in os.environ.items() if k != "SEMID_BENCH_SMOKE"}
        env["SEMID_BIN"] = os.environ.get("SEMID_BIN", os.path.join(ROOT, "bin"))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "RESULTS-soak.md")
            p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "bench", "soak.py"),
                                "--secs", "5", "--out", out], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            self.assertEqual(p.returncode, 2, p.stdout)
            self.assertIn("--secs 5: at least one window, 10 s", p.stdout)
            self.assertNotIn("Traceback", p.stdout)
            self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
