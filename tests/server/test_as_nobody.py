#!/usr/bin/python3
"""semid_testlib.as_nobody: the tests that need file modes to bind a
process run it as nobody when the suite runs as root.  A checkout in
root's 0700 home (where a user following the README on a fresh Debian
clones it) made them fail with "Permission denied" on the program itself;
the program now runs from a copy nobody can reach, and from where it is
when nobody can reach it there.

Run by `make test`; standalone: /usr/bin/python3 tests/server/test_as_nobody.py
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402


@unittest.skipUnless(os.geteuid() == 0, "runs a program as nobody: needs root")
class AsNobody(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_as_nobody.")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def program(self, dir_mode):
        d = os.path.join(self.tmp, "home-%o" % dir_mode)
        os.mkdir(d)
        prog = shutil.copy2(T.SEMID, os.path.join(d, "semid"))
        os.chmod(prog, 0o755)
        os.chmod(d, dir_mode)
        return prog

    def run_as(self, kw):
        return subprocess.run([kw["program"], "--version"], user=kw["user"],
                              capture_output=True, text=True, timeout=30)

    def test_a_program_in_a_closed_home_runs_from_a_copy(self):
        prog = self.program(0o700)
        with self.assertRaises(PermissionError):  # what the tests met
            subprocess.run([prog, "--version"], user="nobody", timeout=30)
        kw = T.as_nobody(prog)
        self.assertEqual(kw["user"], "nobody")
        self.assertNotEqual(kw["program"], prog)
        p = self.run_as(kw)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertEqual(p.stdout, subprocess.run([prog, "--version"], capture_output=True,
                                                  text=True, timeout=30).stdout)
        self.assertEqual(T.as_nobody(prog), kw)  # one copy for the process

    def test_a_reachable_program_runs_where_it_is(self):
        prog = self.program(0o755)
        kw = T.as_nobody(prog)
        self.assertEqual(kw, {"program": prog, "user": "nobody"})
        self.assertEqual(self.run_as(kw).returncode, 0)


if __name__ == "__main__":
    unittest.main()
