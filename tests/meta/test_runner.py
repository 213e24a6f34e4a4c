#!/usr/bin/python3
"""tests/run.py, the runner that sums every suite: skipped tests are not
counted as passed (python's, and Check tests that said CHECK_SKIP), and a
suite that runs nothing or dies without a summary fails the run."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest

RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "run.py")

MIXED = """import unittest
class T(unittest.TestCase):
    def test_a(self): pass
    def test_b(self): pass
    @unittest.skip("not here")
    def test_c(self): pass
    def test_d(self): self.fail("boom")
unittest.main()
"""
GREEN_SKIP = MIXED.replace('self.fail("boom")', "pass")
NOTHING = "import sys\nsys.exit(0)\n"
# A Check binary's output (CK_NORMAL) with two CHECK_SKIP lines among others.
CHECK_SKIPS = """#!/bin/sh
echo 'Running suite(s): s'
echo 'SKIP t_root_only: not root' >&2
echo 'check_s: PostgreSQL cases SKIPPED: not root' >&2
echo 'SKIP t_pg_only: PostgreSQL: not root' >&2
echo '100%: Checks: 5, Failures: 0, Errors: 0'
"""
CRASH = "import os\nos.abort()\n"
# Python keeps SIGINT ignored if it started so, and installs its own
# handler only where SIGINT was at its default.
SIGNALS = """import signal, unittest
class T(unittest.TestCase):
    def test_signals(self):
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)
        self.assertEqual(signal.getsignal(signal.SIGQUIT), signal.SIG_DFL)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            self.assertEqual(signal.getsignal(sig), signal.SIG_DFL, sig)
unittest.main()
"""
# Two suites that pass only when they run at the same time: each marks its
# start in a directory (RENDEZVOUS in its environment) and waits, at most
# 20 s, for the other's mark.
MEET = """import os, time, unittest
class T(unittest.TestCase):
    def test_meet(self):
        d = os.environ["RENDEZVOUS"]
        open(os.path.join(d, "%s"), "w").close()
        t0 = time.monotonic()
        while not os.path.exists(os.path.join(d, "%s")):
            self.assertLess(time.monotonic() - t0, 20, "ran alone")
            time.sleep(0.01)
        print("%s " * 50)
unittest.main()
"""

# A suite that waits (up to 20 s) until each of the suites named in it has
# started (its own name first: one file each in RENDEZVOUS).
MEET_ALL = """import os, time, unittest
class T(unittest.TestCase):
    def test_meet(self):
        d, names = os.environ["RENDEZVOUS"], "%s".split()
        open(os.path.join(d, names[0]), "w").close()
        t0 = time.monotonic()
        while not all(os.path.exists(os.path.join(d, n)) for n in names):
            self.assertLess(time.monotonic() - t0, 20, "ran without the others")
            time.sleep(0.01)
unittest.main()
"""

# A suite that notes its start (its name, one line, in STARTS/starts) and
# takes a moment.
STARTS = """import os, time, unittest
class T(unittest.TestCase):
    def test_start(self):
        with open(os.path.join(os.environ["STARTS"], "starts"), "a") as f:
            f.write("%s\\n")
        time.sleep(0.5)
unittest.main()
"""

# The same, with a mark at its end too (name+, name-).
SPAN = """import os, time, unittest
class T(unittest.TestCase):
    def test_span(self):
        def mark(m):
            with open(os.path.join(os.environ["STARTS"], "starts"), "a") as f:
                f.write("%s" + m + "\\n")
        mark("+")
        time.sleep(0.5)
        mark("-")
unittest.main()
"""


class RunnerTest(unittest.TestCase):
    def run_suites(self, *sources, env=None, times=None, seed=None, ignore=()):
        """Run the suites; @times, {suite index: seconds}, is the times file
        the run starts from, and self.times what it left there; @seed, the
        same, the seed file (SEMID_TEST_SEED); @ignore, signals the runner
        starts with ignored."""
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for i, src in enumerate(sources):
                shell = src.startswith("#!/bin/sh")
                p = os.path.join(d, "s%d%s" % (i, "" if shell else ".py"))
                with open(p, "w") as f:
                    f.write(src)
                if shell:
                    os.chmod(p, 0o755)
                paths.append(p)
            env = dict({"SEMID_TEST_CPUS": "2", "SEMID_SANITIZE": ""}, **(env or {}))
            for name, var, t in (("times.json", "SEMID_TEST_TIMES", times),
                                 ("seed.json", "SEMID_TEST_SEED", seed)):
                if t is not None:
                    env[var] = os.path.join(d, name)
                    with open(env[var], "w") as f:
                        json.dump({paths[i]: v for i, v in t.items()}, f)
            p = subprocess.run([sys.executable, RUN] + paths, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60,
                               env=dict(os.environ, **env),
                               preexec_fn=lambda: [signal.signal(s, signal.SIG_IGN)
                                                   for s in ignore])
            if times is not None:
                with open(env["SEMID_TEST_TIMES"]) as f:
                    self.times = {os.path.basename(k): v for k, v in json.load(f).items()}
        self.out = p.stdout.decode()
        return p.returncode, self.out.strip().splitlines()[-1]

    def test_counts_failures_and_skips_apart(self):
        rc, last = self.run_suites(MIXED)
        self.assertEqual(last, "tests: 2 passed, 1 failed, 1 skipped")
        self.assertNotEqual(rc, 0)

    def test_green_with_a_skip(self):
        rc, last = self.run_suites(GREEN_SKIP)
        self.assertEqual(last, "tests: 3 passed, 0 failed, 1 skipped")
        self.assertEqual(rc, 0)

    def test_check_skips_are_not_passes(self):
        rc, last = self.run_suites(CHECK_SKIPS, GREEN_SKIP)
        self.assertEqual(last, "tests: 6 passed, 0 failed, 3 skipped")
        self.assertEqual(rc, 0)

    def test_suites_get_default_signals(self):
        """A runner started with the signals the tests send ignored (SIGHUP,
        SIGINT and SIGQUIT under nohup or in the background of a script,
        SIGUSR2 under `perf record`; SIGTERM and SIGUSR1 alike) runs its
        suites with them at their default: the tests of what those signals
        do failed (CI's own runs were not started so)."""
        rc, last = self.run_suites(SIGNALS, ignore=(signal.SIGHUP, signal.SIGINT,
                                                    signal.SIGQUIT, signal.SIGTERM,
                                                    signal.SIGUSR1, signal.SIGUSR2))
        self.assertEqual(last, "tests: 1 passed, 0 failed, 0 skipped", self.out)
        self.assertEqual(rc, 0)

    def test_a_suite_that_runs_nothing_fails(self):
        rc, last = self.run_suites(GREEN_SKIP, NOTHING)
        self.assertEqual(last, "tests: 3 passed, 1 failed, 1 skipped")
        self.assertNotEqual(rc, 0)

    def test_suites_run_at_once(self):
        """SEMID_TEST_JOBS=2 runs two suites at the same time (they wait for
        each other), sums them as one by one, and shows each one's output
        whole, its summary line right after it."""
        with tempfile.TemporaryDirectory() as meet:
            rc, last = self.run_suites(MEET % ("a", "b", "A"), MEET % ("b", "a", "B"),
                                       GREEN_SKIP, env={"SEMID_TEST_JOBS": "2",
                                                        "RENDEZVOUS": meet})
        self.assertEqual(last, "tests: 5 passed, 0 failed, 1 skipped", self.out)
        self.assertEqual(rc, 0)
        lines = self.out.splitlines()
        summaries = [k for k, ln in enumerate(lines) if ln.startswith("== ")]
        for mark, other, suite in (("A", "B", "s0.py"), ("B", "A", "s1.py")):
            i = lines.index(("%s " % mark) * 50)
            # the first summary after the mark is its suite's, and the
            # output since the summary before holds no line of the other
            # (a fixed window of lines after the mark took in whichever
            # suite the runner showed next, and failed when that was the
            # short third one)
            j = min(k for k in summaries if k > i)
            self.assertTrue(lines[j].split(":")[0].endswith(suite), lines[i:j + 1])
            start = max([k for k in summaries if k < i], default=-1) + 1
            self.assertNotIn(("%s " % other) * 50, lines[start:j], lines[start:j + 1])

    def test_longest_start_first(self):
        """With two at once, the suite that took longest last time starts
        before a shorter one given before it, and one never timed before
        both; the file then holds this run's times."""
        with tempfile.TemporaryDirectory() as log:
            rc, last = self.run_suites(STARTS % "s0", STARTS % "s1", STARTS % "s2",
                                       env={"SEMID_TEST_JOBS": "2", "STARTS": log},
                                       times={1: 5.0, 2: 50.0})
            with open(os.path.join(log, "starts")) as f:
                starts = f.read().split()
        self.assertEqual(rc, 0, self.out)
        self.assertEqual(last, "tests: 3 passed, 0 failed, 0 skipped")
        # s0 (no time) and s2 (50 s) take the two slots; s1 (5 s) waits
        self.assertEqual(sorted(starts[:2]), ["s0", "s2"], starts)
        self.assertEqual(starts[2], "s1", starts)
        self.assertEqual(sorted(self.times), ["s0.py", "s1.py", "s2.py"])
        self.assertTrue(all(list(t) == [""] and 0.3 <= t[""][0] < 50 and 0 <= t[""][1] < t[""][0]
                            for t in self.times.values()), self.times)

    def test_waiting_suites_run_beside(self):
        """With one suite at a time on one core, two suites whose last runs
        kept a core busy 2% of the time start together (they wait for each
        other), while two that kept it busy run one after the other."""
        with tempfile.TemporaryDirectory() as meet:
            rc, last = self.run_suites(MEET % ("a", "b", "A"), MEET % ("b", "a", "B"),
                                       env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                            "RENDEZVOUS": meet},
                                       times={0: [5.0, 0.1], 1: [5.0, 0.1]})
        self.assertEqual((rc, last), (0, "tests: 2 passed, 0 failed, 0 skipped"), self.out)
        with tempfile.TemporaryDirectory() as log:
            rc, last = self.run_suites(SPAN % "s0", SPAN % "s1",
                                       env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                            "STARTS": log},
                                       times={0: [5.0, 4.0], 1: [5.0, 4.0]})
            with open(os.path.join(log, "starts")) as f:
                marks = f.read().split()
        self.assertEqual(rc, 0, self.out)
        self.assertIn(marks, (["s0+", "s0-", "s1+", "s1-"], ["s1+", "s1-", "s0+", "s0-"]))
        # idle in a run of another build (the plain one's, for a sanitized
        # run, where a suite takes about twice the CPU): not counted
        with tempfile.TemporaryDirectory() as log:
            rc, last = self.run_suites(SPAN % "s0", SPAN % "s1",
                                       env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                            "STARTS": log, "SEMID_SANITIZE": "address"},
                                       times={0: [5.0, 0.1, ""], 1: [5.0, 0.1, ""]})
            with open(os.path.join(log, "starts")) as f:
                marks = f.read().split()
        self.assertEqual(rc, 0, self.out)
        self.assertIn(marks, (["s0+", "s0-", "s1+", "s1-"], ["s1+", "s1-", "s0+", "s0-"]))
        # each build's times kept apart
        self.assertEqual(sorted(self.times["s0.py"]), ["", "address"])
        self.assertEqual(self.times["s0.py"][""], [5.0, 0.1])

    def test_waiting_suites_fill_the_cores(self):
        """With one suite at a time on one core, four suites whose last runs
        kept the core busy 2% of the time all run at once: with more than
        one per core's worth of suites that wait, the count does not cap them
        before their CPU does (twice SEMID_TEST_JOBS did, and the four longest
        suites of make test, all waiting on servers, held every slot)."""
        names = ["a", "b", "c", "d"]
        srcs = [MEET_ALL % " ".join([n] + [m for m in names if m != n]) for n in names]
        with tempfile.TemporaryDirectory() as meet:
            rc, last = self.run_suites(*srcs,
                                       env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                            "RENDEZVOUS": meet},
                                       times={i: [5.0, 0.1] for i in range(4)})
        self.assertEqual((rc, last), (0, "tests: 4 passed, 0 failed, 0 skipped"), self.out)

    def test_seed_times(self):
        """Without a times file (a fresh clone), the seed file's times of
        this build count as the last run's: two suites it shows idle start
        together; a local time of this build comes before the seed's, and
        a seed time of another build gives no CPU time."""
        idle = {"": [5.0, 0.1]}
        with tempfile.TemporaryDirectory() as meet:
            rc, last = self.run_suites(MEET % ("a", "b", "A"), MEET % ("b", "a", "B"),
                                       env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                            "RENDEZVOUS": meet},
                                       seed={0: idle, 1: idle})
        self.assertEqual((rc, last), (0, "tests: 2 passed, 0 failed, 0 skipped"), self.out)
        for times, sanitize in (({0: {"": [5.0, 4.0]}, 1: {"": [5.0, 4.0]}}, ""),
                                (None, "address")):
            with tempfile.TemporaryDirectory() as log:
                rc, last = self.run_suites(SPAN % "s0", SPAN % "s1",
                                           env={"SEMID_TEST_JOBS": "1", "SEMID_TEST_CPUS": "1",
                                                "STARTS": log, "SEMID_SANITIZE": sanitize},
                                           times=times, seed={0: idle, 1: idle})
                with open(os.path.join(log, "starts")) as f:
                    marks = f.read().split()
            self.assertEqual(rc, 0, self.out)
            self.assertIn(marks, (["s0+", "s0-", "s1+", "s1-"], ["s1+", "s1-", "s0+", "s0-"]),
                          (times, sanitize))

    def test_merge_times(self):
        """--merge-times lays one times file over another, build by build,
        and drops suites whose file is gone."""
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, "test_a.py"), os.path.join(d, "test_b.py")
            gone = os.path.join(d, "test_gone.py")
            for p in (a, b):
                open(p, "w").close()
            src, dst = os.path.join(d, "src.json"), os.path.join(d, "dst.json")
            with open(src, "w") as f:
                json.dump({a: [3.0, 1.0, "address"], b: {"": [2.0, 0.5]}}, f)
            with open(dst, "w") as f:
                json.dump({a: {"": [1.0, 0.9], "address": [9.0, 9.0]}, gone: {"": [1.0, 1.0]}},
                          f)
            subprocess.run([sys.executable, RUN, "--merge-times", src, dst], check=True)
            with open(dst) as f:
                merged = json.load(f)
        self.assertEqual(merged, {a: {"": [1.0, 0.9], "address": [3.0, 1.0]},
                                  b: {"": [2.0, 0.5]}})

    def test_a_crash_without_summary_fails(self):
        rc, last = self.run_suites(CRASH)
        self.assertEqual(last, "tests: 0 passed, 1 failed, 0 skipped")
        self.assertNotEqual(rc, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
