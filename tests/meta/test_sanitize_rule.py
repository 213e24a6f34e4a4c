#!/usr/bin/python3
"""`make test-sanitize` runs the suites of semid's code and leaves out those
of the tooling (tests/meta), the deployment files (tests/deploy) and the
benchmarks (tests/bench), which `make test` runs; nor does its build make
the benchmark programs that only the left-out bench suite runs.  Read off
`make -n` (nothing is built or run), against the suites on disk.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_sanitize_rule.py
"""
import glob
import os
import re
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LEFT_OUT = ("tests/meta/", "tests/deploy/", "tests/bench/")


def dry_run(target, out):
    """The commands `make -n TARGET` prints, with its output under @out."""
    # not the calling make's jobserver or flags: this make is a fresh one
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    p = subprocess.run(["make", "-n", "--no-print-directory", "-C", ROOT, "O=" + out,
                        "BIN=" + os.path.join(out, "bin"), target],
                       capture_output=True, text=True, timeout=120, env=env)
    return p.stdout


def suites(commands):
    """The python suites of the tests/run.py command among @commands."""
    line = [l for l in commands.replace("\\\n", " ").splitlines() if "tests/run.py" in l]
    return [w for w in " ".join(line).split() if re.fullmatch(r"tests/\w+/test_\w+\.py", w)]


class SanitizeRule(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="test_sanitize_rule.")
        cls.all = sorted(os.path.relpath(p, ROOT)
                         for p in glob.glob(os.path.join(ROOT, "tests", "*", "test_*.py")))
        cls.plain = dry_run("test", cls.tmp.name)
        cls.sanitized = dry_run("test-sanitize", cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_plain_runs_every_suite(self):
        self.assertEqual(sorted(suites(self.plain)), self.all)

    def test_sanitized_leaves_out_the_tooling(self):
        want = [s for s in self.all if not s.startswith(LEFT_OUT)]
        self.assertIn("tests/server/test_server.py", want)
        self.assertEqual(sorted(suites(self.sanitized)), want)

    def test_sanitized_builds_no_benchmark(self):
        bench = re.compile(r"-o \S+/bench/bench_\w+ ")
        self.assertTrue(bench.search(self.plain), "the plain build makes the benchmarks")
        self.assertIn("-fsanitize=address", self.sanitized)
        self.assertIsNone(bench.search(self.sanitized))


if __name__ == "__main__":
    unittest.main(verbosity=2)
