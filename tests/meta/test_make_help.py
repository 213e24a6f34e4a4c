#!/usr/bin/python3
"""`make help` lists the targets a user or an operator runs.  Held to the
Makefiles both ways: every word it offers as a target is one make knows
(a renamed target would leave help pointing at nothing), and every phony
target the Makefiles declare is listed unless it is one of the internal
steps named below (a new benchmark or check left out of help fails here).

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_make_help.py
"""
import os
import re
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Steps other targets run, not meant to be asked for by name.
INTERNAL = {"FORCE", "check-bins", "eval-train", "fuzz-deps", "fuzz-link",
            "valgrind-deps", "pkgs", "pkgs-test", "lint-deps", "lint-db"}


def make(*args):
    return subprocess.run(["make", "--no-print-directory", "-C", ROOT, *args],
                          capture_output=True, text=True, timeout=60)


def database():
    """(every target make knows, the phony ones) from make's printed database."""
    p = make("-pRrq", "help")
    targets, phony = set(), set()
    for line in p.stdout.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+):(?!=)(.*)$", line)
        if not m:
            continue
        targets.add(m.group(1))
        if m.group(1) == ".PHONY":
            phony.update(m.group(2).split())
    return targets, phony


def offered(text):
    """The target names help offers: the first column of its indented
    lines (one name, a comma-separated list, or a row of names)."""
    names = set()
    for line in text.splitlines():
        if not line.startswith("  ") or line.startswith("    "):
            continue
        col = re.split(r"\s{2,}", line.strip())[0]
        col = re.sub(r"\s*\(default\)", "", col)
        for word in re.split(r"[,\s]+", col):
            if word:
                names.add(word)
    return names


class MakeHelp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        p = make("help")
        assert p.returncode == 0, p.stderr
        cls.text = p.stdout
        cls.targets, cls.phony = database()

    def test_offers_only_real_targets(self):
        names = offered(self.text)
        self.assertIn("run", names)
        self.assertIn("bench-http", names)
        self.assertEqual(sorted(names - self.targets), [])

    def test_lists_every_phony_target(self):
        self.assertIn("bench", self.phony)
        listed = offered(self.text) | INTERNAL
        self.assertEqual(sorted(self.phony - listed - {"help"}), [])

    def test_internal_names_are_still_targets(self):
        # an internal step renamed away would keep passing the test above
        self.assertEqual(sorted(INTERNAL - self.targets), [])

    def test_builds_nothing(self):
        # help runs no recipe but its own echo
        p = make("-n", "help")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([l for l in p.stdout.splitlines() if l.strip()],
                         ['echo "$HELP_TEXT"'])


if __name__ == "__main__":
    unittest.main()
