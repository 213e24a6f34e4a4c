#!/usr/bin/python3
"""`make run`'s demo model is trained again when DEMO_EPOCHS changes (the
README suggests `make run DEMO_EPOCHS=10`), and not when it does not: the
model used to depend on the generated data alone, so another DEMO_EPOCHS
served the old model.  A stand-in semid-train (a script in a BIN of its own)
records each call, so the test trains nothing.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_demo_make.py
"""
import os
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

FAKE_TRAIN = """#!/bin/sh
# records its call; writes the file after --out
echo "$*" >> "$(dirname "$0")/calls"
while [ $# -gt 0 ]; do [ "$1" = --out ] && echo model > "$2"; shift; done
"""


class DemoModelTest(unittest.TestCase):
    def test_epochs_retrain(self):
        with tempfile.TemporaryDirectory(prefix="semid-demo-make-") as d:
            bin_dir, demo = os.path.join(d, "bin"), os.path.join(d, "demo")
            os.makedirs(bin_dir)
            os.makedirs(os.path.join(demo, "data"))
            with open(os.path.join(demo, "data", "train.tsv"), "w") as f:
                f.write("0\t0\n")
            train = os.path.join(bin_dir, "semid-train")
            with open(train, "w") as f:
                f.write(FAKE_TRAIN)
            os.chmod(train, 0o755)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

            def calls(epochs):
                p = subprocess.run(["make", "-C", ROOT, "--no-print-directory", "demo-model",
                                    "BIN=" + bin_dir, "DEMO=" + demo, "DEMO_EPOCHS=%d" % epochs],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout)
                path = os.path.join(bin_dir, "calls")
                if not os.path.exists(path):
                    return []
                with open(path) as f:
                    return f.read().splitlines()

            self.assertEqual(len(calls(1)), 1)
            self.assertEqual(len(calls(1)), 1)  # the same epochs: nothing to do
            got = calls(3)
            self.assertEqual(len(got), 2)
            self.assertIn("--epochs 3", got[-1])


if __name__ == "__main__":
    unittest.main()
