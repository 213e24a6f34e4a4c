#!/usr/bin/python3
"""tests/fuzz/run.sh, which make fuzz and make fuzz-smoke (CI) call: every
harness runs, FUZZ_JOBS at a time, a failing one fails the run and shows its
log, and "fresh" empties the work directories.  The harnesses here are
stand-in scripts; the real ones need clang (make fuzz-smoke builds them)."""
import os
import subprocess
import tempfile
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
RUN = os.path.join(ROOT, "tests", "fuzz", "run.sh")

OK = "#!/bin/sh\necho 'Done 5 runs in 1 second(s)'\necho 'stat::peak_rss_mb: 7'\n"
CRASH = "#!/bin/sh\necho 'noise'\necho '==1==ERROR: AddressSanitizer: heap-buffer-overflow'\nexit 1\n"
# Passes only when the other harness runs at the same time: each marks its
# start and waits, at most 10 s, for the other's mark.
MEET = ("#!/bin/sh\ntouch \"$MEET/%s\"\ni=0\nwhile [ ! -e \"$MEET/%s\" ]; do\n"
        "  i=$((i+1)); [ $i -gt 1000 ] && exit 1; sleep 0.01\ndone\necho 'Done 1 runs'\n")


class FuzzRunTest(unittest.TestCase):
    def run_harnesses(self, harnesses, jobs=2, mode="fresh", env=None):
        self.out_dir = tempfile.mkdtemp()
        self.addCleanup(subprocess.run, ["rm", "-rf", self.out_dir])
        os.makedirs(os.path.join(self.out_dir, "tests", "fuzz"))
        for name, src in harnesses.items():
            p = os.path.join(self.out_dir, "tests", "fuzz", "fuzz_" + name)
            with open(p, "w") as f:
                f.write(src)
            os.chmod(p, 0o755)
        p = subprocess.run([RUN, "1", mode, str(jobs), self.out_dir] + list(harnesses),
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60, env=dict(os.environ, **(env or {})))
        return p.returncode, p.stdout.decode()

    def test_a_crash_fails_the_run_and_shows_its_log(self):
        rc, out = self.run_harnesses({"model": OK, "npy": CRASH, "api": OK})
        self.assertEqual(rc, 1, out)
        self.assertIn("heap-buffer-overflow", out)
        self.assertIn("fuzz: FAILED: npy", out)
        self.assertEqual(out.count("Done 5 runs"), 2, out)
        # in the order given, whatever order they ended in
        self.assertLess(out.index("fuzz: model"), out.index("fuzz: npy"))
        self.assertLess(out.index("fuzz: npy"), out.index("fuzz: api"))

    def test_all_pass(self):
        rc, out = self.run_harnesses({"model": OK, "npy": OK})
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.rstrip().endswith("fuzz: all passed (model npy)"), out)

    def test_a_missing_harness_fails(self):
        rc, out = self.run_harnesses({"model": OK})
        self.assertEqual(rc, 0, out)
        p = subprocess.run([RUN, "1", "fresh", "2", self.out_dir, "model", "npy"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("fuzz: FAILED: npy", p.stdout.decode())

    def test_jobs_run_at_once(self):
        with tempfile.TemporaryDirectory() as meet:
            rc, out = self.run_harnesses({"a": MEET % ("a", "b"), "b": MEET % ("b", "a")},
                                         jobs=2, env={"MEET": meet})
        self.assertEqual(rc, 0, out)

    def test_fresh_empties_the_work_directory_and_keep_does_not(self):
        for mode, left in (("keep", True), ("fresh", False)):
            self.out_dir = None
            rc, out = self.run_harnesses({"model": OK}, mode=mode)
            self.assertEqual(rc, 0, out)
            stale = os.path.join(self.out_dir, "work", "model", "old-input")
            with open(stale, "w") as f:
                f.write("x")
            subprocess.run([RUN, "1", mode, "1", self.out_dir, "model"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            self.assertEqual(os.path.exists(stale), left, mode)


if __name__ == "__main__":
    unittest.main(verbosity=2)
