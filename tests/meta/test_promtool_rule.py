#!/usr/bin/python3
"""The Makefile's `promtool` rule (run by `make test` through `make
deps-test`) with an apt-get that cannot download: it says so and exits 0,
and leaves a marker so that later `make test` runs (PROMTOOL_AUTO=1) do not
try again, which offline cost about 25 s of apt-get each time (found by
review); `make promtool` by hand tries again.  No network is used: apt-get
is a stand-in on PATH that logs its arguments and fails.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_promtool_rule.py
"""
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class PromtoolRuleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_promtool_rule.")
        self.shim = os.path.join(self.tmp, "shim")
        os.mkdir(self.shim)
        self.calls = os.path.join(self.tmp, "calls")
        fake = os.path.join(self.shim, "apt-get")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\necho "$*" >> %s\necho "E: no network here" >&2\nexit 100\n'
                    % self.calls)
        os.chmod(fake, 0o755)
        self.tool = os.path.join(self.tmp, "tools", "promtool")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def make(self, *extra):
        # PATH: the stand-in apt-get first, and no directory with a real
        # promtool (the rule does nothing when one is on PATH)
        path = [self.shim] + [d for d in os.environ.get("PATH", "").split(":")
                              if d and not os.path.exists(os.path.join(d, "promtool"))]
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SEMID_PROMTOOL")}
        env["PATH"] = ":".join(path)
        return subprocess.run(["make", "-C", ROOT, "--no-print-directory", "promtool",
                               "SEMID_PROMTOOL=" + self.tool] + list(extra), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)

    def apt_calls(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().splitlines()

    def test_a_failed_download_is_not_retried_by_make_test(self):
        p = self.make("PROMTOOL_AUTO=1")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("no promtool: could not download", p.stdout)
        self.assertIn("no network here", p.stdout)
        first = self.apt_calls()
        self.assertIn("download -qq prometheus", first)
        self.assertTrue(os.path.exists(self.tool + ".failed"))
        self.assertFalse(os.path.exists(self.tool))
        # the next make test: no apt-get at all, one line saying why
        p = self.make("PROMTOOL_AUTO=1")
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("an earlier download failed", p.stdout)
        self.assertEqual(self.apt_calls(), first)
        # by hand: it tries again
        p = self.make()
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertGreater(len(self.apt_calls()), len(first))
        # nothing is left beside the marker (no temporary directories)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.tool))), ["promtool.failed"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
