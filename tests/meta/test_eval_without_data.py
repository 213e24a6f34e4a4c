#!/usr/bin/python3
"""`make eval` and `make bench-train` without the Last.fm data (a clone
without ../shared, as a new user has): each run failed in turn, seventeen
"No such file or directory", then "no runs"; now the scripts say the data
is missing at once, exit 2, and make nothing, as `make eval-smoke` does.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_eval_without_data.py
"""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class EvalWithoutData(unittest.TestCase):
    def test_scripts_stop_at_once(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "lastfm-2k")  # not there
            work = os.path.join(tmp, "work")
            for script, prog, extra in (
                    ("eval_table.py", "eval", ["--out", os.path.join(tmp, "t.md")]),
                    ("bench_train.py", "bench-train", [])):
                with self.subTest(script=script):
                    p = subprocess.run([sys.executable, os.path.join(ROOT, "trainer", script),
                                        "--bin", os.path.join(tmp, "bin"), "--data", data,
                                        "--work", work, *extra],
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                    self.assertEqual(p.stderr, "%s: %s is missing (it sits beside the checkout "
                                     "in CI only; LASTFM=DIR names another copy)\n"
                                     % (prog, data))
            self.assertEqual(sorted(os.listdir(tmp)), [])


if __name__ == "__main__":
    unittest.main()
