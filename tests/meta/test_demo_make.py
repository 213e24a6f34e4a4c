#!/usr/bin/python3
"""`make run`'s demo model is trained again when DEMO_EPOCHS changes (the
README suggests `make run DEMO_EPOCHS=10`), and not when it does not: the
model used to depend on the generated data alone, so another DEMO_EPOCHS
served the old model.  A stand-in semid-train (a script in a BIN of its own)
records each call, so the test trains nothing.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_demo_make.py
"""
import os
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

FAKE_TRAIN = """#!/bin/sh
# records its call; writes the file after --out
echo "$*" >> "$(dirname "$0")/calls"
while [ $# -gt 0 ]; do [ "$1" = --out ] && echo model > "$2"; shift; done
"""

# prints its evaluation as semid-train does, on stdout; with --epochs 5 it
# is stopped (as by Ctrl-C: exit 130) before it publishes, half a line out
FAKE_TRAIN_EVAL = """#!/bin/sh
epochs= out=
while [ $# -gt 0 ]; do
    case "$1" in --epochs) epochs=$2 ;; --out) out=$2 ;; esac
    shift
done
if [ "$epochs" = 5 ]; then printf '{"epo'; exit 130; fi
echo model > "$out"
echo '{"epochs": '"$epochs"'}'
"""

# publishes the model and is then stopped by Ctrl-C while it ends (a
# signal's default action: the model is out, as semid-train renames it in)
FAKE_TRAIN_PUBLISH_THEN_STOPPED = """#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
echo model > "$out.tmp" && mv "$out.tmp" "$out"
touch "$(dirname "$0")/published"
exec sleep 60
"""

# make's environment without the calling make's own flags (make test runs these)
ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def stand_in(d, script):
    """bin/ and demo/ under @d: demo/data/train.tsv there (nothing to
    generate), and bin/semid-train the shell @script; returns both paths."""
    bin_dir, demo = os.path.join(d, "bin"), os.path.join(d, "demo")
    os.makedirs(bin_dir)
    os.makedirs(os.path.join(demo, "data"))
    with open(os.path.join(demo, "data", "train.tsv"), "w") as f:
        f.write("0\t0\n")
    train = os.path.join(bin_dir, "semid-train")
    with open(train, "w") as f:
        f.write(script)
    os.chmod(train, 0o755)
    return bin_dir, demo


class DemoModelTest(unittest.TestCase):
    def test_epochs_retrain(self):
        with tempfile.TemporaryDirectory(prefix="semid-demo-make-") as d:
            bin_dir, demo = stand_in(d, FAKE_TRAIN)

            def calls(epochs):
                p = subprocess.run(["make", "-C", ROOT, "--no-print-directory", "demo-model",
                                    "BIN=" + bin_dir, "DEMO=" + demo, "DEMO_EPOCHS=%d" % epochs],
                                   env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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

    def test_stopped_retraining_keeps_the_evaluation(self):
        # `> demo/eval.json` emptied the evaluation of the model still served
        # when a retraining was stopped (Ctrl-C) or failed: it is written
        # beside it and renamed over it only once the model is published
        with tempfile.TemporaryDirectory(prefix="semid-demo-make-") as d:
            bin_dir, demo = stand_in(d, FAKE_TRAIN_EVAL)

            def demo_model(epochs):
                return subprocess.run(["make", "-C", ROOT, "--no-print-directory", "demo-model",
                                       "BIN=" + bin_dir, "DEMO=" + demo,
                                       "DEMO_EPOCHS=%d" % epochs],
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, timeout=60)

            def evaluation():
                with open(os.path.join(demo, "eval.json")) as f:
                    return f.read()

            p = demo_model(3)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertEqual(evaluation(), '{"epochs": 3}\n')
            p = demo_model(5)
            self.assertNotEqual(p.returncode, 0, p.stdout)
            self.assertIn("Error 130", p.stdout)
            self.assertEqual(evaluation(), '{"epochs": 3}\n')
            self.assertEqual(sorted(os.listdir(demo)),
                             [".epochs", "data", "eval.json", "model.safetensors"])
            p = demo_model(4)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertEqual(evaluation(), '{"epochs": 4}\n')

    def test_ctrl_c_after_the_publish_keeps_the_model(self):
        # make deletes a target whose recipe a signal stops once the file
        # changed; the model (and gen's data) are renamed into place whole,
        # so a Ctrl-C just after the publish lost the model just published
        # (and the one it replaced)
        with tempfile.TemporaryDirectory(prefix="semid-demo-make-") as d:
            bin_dir, demo = stand_in(d, FAKE_TRAIN_PUBLISH_THEN_STOPPED)
            p = subprocess.Popen(["make", "-C", ROOT, "--no-print-directory", "demo-model",
                                  "BIN=" + bin_dir, "DEMO=" + demo, "DEMO_EPOCHS=2"],
                                 env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                  signal.SIG_DFL))
            try:
                deadline = time.monotonic() + 30
                while not os.path.exists(os.path.join(bin_dir, "published")):
                    self.assertLess(time.monotonic(), deadline, "the stand-in never published")
                    self.assertIsNone(p.poll())
                    time.sleep(0.05)
                os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the terminal's whole group
                out, _ = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            self.assertNotEqual(p.returncode, 0, out)
            path = os.path.join(demo, "model.safetensors")
            self.assertTrue(os.path.exists(path), "make deleted the published model:\n" + out)

    def test_demo_model_builds_a_missing_trainer(self):
        # `make demo-model` (make help: "only train the demo model") on a
        # fresh clone ran a semid-train that was not built: exit 127.  A dry
        # run (make -n) shows it linked before the generator runs, and builds
        # nothing.
        with tempfile.TemporaryDirectory(prefix="semid-demo-make-") as d:
            bin_dir, demo, out = (os.path.join(d, x) for x in ("bin", "demo", "o"))
            p = subprocess.run(["make", "-C", ROOT, "-n", "--no-print-directory", "demo-model",
                                "BIN=" + bin_dir, "DEMO=" + demo, "O=" + out],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout)
            lines = p.stdout.splitlines()
            train = os.path.join(bin_dir, "semid-train")
            link = [i for i, ln in enumerate(lines) if ("-o %s " % train) in ln]
            gen = [i for i, ln in enumerate(lines) if ln.startswith(train + " gen ")]
            self.assertTrue(link, "semid-train is not built:\n" + p.stdout)
            self.assertTrue(gen, p.stdout)
            self.assertLess(link[0], gen[0])
            self.assertFalse(os.path.exists(bin_dir))


if __name__ == "__main__":
    unittest.main()
