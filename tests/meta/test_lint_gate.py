#!/usr/bin/python3
"""make lint's suppressions, without running the analysers (`make lint` runs
them; a minute and more of CPU).

tests/lint/cppcheck_gate.py, the step that holds cppcheck's findings to
tests/lint/cppcheck.supp, runs here against a stand-in cppcheck that prints
the findings a test gives it: a finding no entry covers fails, an entry that
covers no finding fails, and an entry follows its line when code above it
moves.  tests/lint/gcc_analyzer_gate.py, the gcc -fanalyzer step, with the
real gcc on a file with a double free.  tests/lint/tidy_gate.py, the clang-tidy step, the same way against a
stand-in clang-tidy: a finding no NOLINT covers fails, a NOLINT that covers
no finding fails, clang-tidy sees the sources with their NOLINTs defused.
Then the committed suppressions themselves: each cppcheck and gcc entry's
text is still in its file (an edit that changed or removed the line is
noticed here, not only by the next make lint), and each NOLINTNEXTLINE in
the C sources has its reason in a comment on the line above.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_lint_gate.py
"""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GATE = os.path.join(ROOT, "tests", "lint", "cppcheck_gate.py")
SUPP = os.path.join(ROOT, "tests", "lint", "cppcheck.supp")
GCC_SUPP = os.path.join(ROOT, "tests", "lint", "gcc_analyzer.supp")

# prints the file the test wrote (findings in the gate's template), exits as told
FAKE_CPPCHECK = """#!/bin/sh
cat "%(out)s"
exit $(cat "%(rc)s")
"""


def entries(path):
    with open(path) as f:
        return [l.strip().split(None, 2) for l in f
                if l.strip() and not l.lstrip().startswith("#")]


class InTmp(unittest.TestCase):
    """A case in its own temporary directory, self.tmp (its setUp makes it)."""

    def write(self, name, text):
        with open(os.path.join(self.tmp, name), "w") as f:
            f.write(text)


class GateTest(InTmp):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_lint_gate.")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.out = os.path.join(self.tmp, "findings")
        self.rc = os.path.join(self.tmp, "rc")
        self.fake = os.path.join(self.tmp, "cppcheck")
        with open(self.fake, "w") as f:
            f.write(FAKE_CPPCHECK % {"out": self.out, "rc": self.rc})
        os.chmod(self.fake, 0o755)
        os.mkdir(os.path.join(self.tmp, "core"))
        self.write("core/a.c", "int f(void)\n{\n\tfloat *w = (float *)at;\n\treturn 0;\n}\n")

    def gate(self, supp, findings, rc=0):
        self.write("supp", supp)
        self.write("findings", "".join(
            "%s:%s:%d: portability: a message\n" % f for f in findings))
        self.write("rc", "%d\n" % rc)
        return subprocess.run(["/usr/bin/python3", GATE, "supp", "--", self.fake],
                              cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)

    CAST = "# why\ninvalidPointerCast core/a.c float *w = (float *)at;\n"

    def test_covered_findings_pass(self):
        p = self.gate(self.CAST, [("invalidPointerCast", "core/a.c", 3),
                                  ("missingIncludeSystem", "nofile", 0)])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout, "")

    def test_a_finding_no_entry_covers_fails(self):
        p = self.gate(self.CAST, [("invalidPointerCast", "core/a.c", 3),
                                  ("nullPointer", "core/a.c", 4)])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:4: portability: a message [nullPointer]", p.stdout)
        self.assertNotIn("core/a.c:3", p.stdout)

    def test_another_check_on_the_line_is_not_covered(self):
        p = self.gate(self.CAST, [("uninitvar", "core/a.c", 3)])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:3: portability: a message [uninitvar]", p.stdout)

    def test_an_entry_that_covers_nothing_fails(self):
        p = self.gate(self.CAST, [])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn('"invalidPointerCast core/a.c float *w = (float *)at;" covers no finding',
                      p.stdout)

    def test_the_entry_follows_its_line(self):
        self.write("core/a.c", "/* two\n * lines more */\nint f(void)\n{\n"
                   "\tfloat *w = (float *)at;\n\treturn 0;\n}\n")
        p = self.gate(self.CAST, [("invalidPointerCast", "core/a.c", 5)])
        self.assertEqual(p.returncode, 0, p.stdout)
        # and a finding of that check on another line is not its
        p = self.gate(self.CAST, [("invalidPointerCast", "core/a.c", 5),
                                  ("invalidPointerCast", "core/a.c", 6)])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:6:", p.stdout)

    def test_cppcheck_failing_fails(self):
        p = self.gate(self.CAST, [("invalidPointerCast", "core/a.c", 3)], rc=1)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("cppcheck failed (exit 1)", p.stdout)

    def test_a_malformed_entry_is_named(self):
        p = self.gate("invalidPointerCast core/a.c\n", [])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn('supp:1: not "ID FILE TEXT"', p.stdout)


# prints the findings the test wrote ({cwd}: the directory it runs in, the
# gate's copy), exits as told; and notes the file it was given and its text
FAKE_TIDY = """#!/usr/bin/python3
import os, sys
d = os.path.dirname(os.path.abspath(sys.argv[0]))
with open(os.path.join(d, "tidy-findings")) as f:
    sys.stdout.write(f.read().replace("{cwd}", os.getcwd()))
with open(sys.argv[-1]) as f, open(os.path.join(d, "tidy-seen"), "a") as g:
    g.write(f.read())
with open(os.path.join(d, "tidy-rc")) as f:
    sys.exit(int(f.read()))
"""


class TidyGateTest(InTmp):
    """tests/lint/tidy_gate.py, make lint's clang-tidy step, against a
    stand-in clang-tidy.  Before it, clang-tidy applied the NOLINTs itself,
    so a NOLINT whose finding had gone stayed unnoticed (five
    bugprone-sizeof-expression ones, among others, were never checked)."""

    SRC = ("int f(int *p)\n{\n\t/* why */\n\t/* NOLINTNEXTLINE(clang-analyzer-core.X) */\n"
           "\treturn *p;\n}\n")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_tidy_gate.")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.tree = os.path.join(self.tmp, "tree")
        self.bin = os.path.join(self.tmp, "bin")
        for d in ("tree/core", "tree/tests/lint", "bin"):
            os.makedirs(os.path.join(self.tmp, d))
        self.fake = os.path.join(self.bin, "clang-tidy")
        self.write("bin/clang-tidy", FAKE_TIDY)
        os.chmod(self.fake, 0o755)
        self.write("tree/.clang-tidy", "Checks: '-*'\n")
        self.write("tree/tests/lint/analyzer_model.h", "/* NOLINT in a comment */\n")
        self.write("tree/core/a.c", self.SRC)
        self.write("db.json", json.dumps([{
            "directory": self.tree, "file": "core/a.c",
            "command": "cc -Icore -include tests/lint/analyzer_model.h -c core/a.c"}]))

    def gate(self, findings, rc=None):
        """Run the gate with clang-tidy printing @findings (lines
        "PATH:LINE:COL: warning: MESSAGE [CHECK]", PATH relative to its cwd
        or {cwd}/...); it exits 1 when there are any, as with
        WarningsAsErrors, unless @rc says otherwise."""
        self.write("bin/tidy-findings", "".join(l + "\n" for l in findings))
        self.write("bin/tidy-rc", "%d\n" % (rc if rc is not None else 1 if findings else 0))
        return subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests", "lint",
                                                                "tidy_gate.py"), "-j2",
                               os.path.join(self.tmp, "db.json"), "copy", "--", self.fake,
                               "--quiet"], cwd=self.tree, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)

    X = "{cwd}/core/a.c:5:10: warning: Dereference of null pointer [clang-analyzer-core.X]"

    def test_a_covered_finding_passes(self):
        p = self.gate([self.X, "{cwd}/core/a.c:2:1: note: Assuming 'p' is null",
                       "1 warning generated."])
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout, "")

    def test_clang_tidy_sees_no_nolint(self):
        self.gate([self.X])
        with open(os.path.join(self.bin, "tidy-seen")) as f:
            seen = f.read()
        # the same lines and columns, the comment defused
        self.assertEqual(seen, self.SRC.replace("NOLINT", "NOL1NT"))
        with open(os.path.join(self.tree, "core", "a.c")) as f:
            self.assertEqual(f.read(), self.SRC)  # the tree's file untouched

    def test_a_nolint_that_covers_nothing_fails(self):
        p = self.gate([])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:4: NOLINT(clang-analyzer-core.X) covers no finding of line 5: "
                      "remove it", p.stdout)

    def test_a_finding_no_nolint_covers_fails(self):
        p = self.gate([self.X, "core/a.c:6:1: warning: something else [bugprone-y]",
                       "\tcode", "\t^"])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout.splitlines()[:3],
                         ["core/a.c:6:1: warning: something else [bugprone-y]", "\tcode", "\t^"])
        self.assertNotIn("core/a.c:5:", p.stdout)
        self.assertNotIn(self.tmp, p.stdout)  # the tree's paths, not the copy's

    def test_another_check_on_the_line_is_not_covered(self):
        p = self.gate(["{cwd}/core/a.c:5:10: warning: m [clang-analyzer-core.Y]"])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:5:10: warning: m [clang-analyzer-core.Y]", p.stdout)
        self.assertIn("core/a.c:4: NOLINT(clang-analyzer-core.X) covers no finding", p.stdout)

    def test_a_finding_through_a_macro_is_covered_at_its_expansion(self):
        p = self.gate(["core/a.h:1:20: warning: m [clang-analyzer-core.X,-warnings-as-errors]",
                       "core/a.c:5:9: note: expanded from macro 'DEREF'"])
        self.assertEqual(p.returncode, 0, p.stdout)

    def test_a_bare_nolint_is_named(self):
        self.write("tree/core/a.c", self.SRC.replace("NOLINTNEXTLINE(clang-analyzer-core.X)",
                                                     "NOLINT"))
        p = self.gate([])
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("core/a.c:4: NOLINT: name the check", p.stdout)

    def test_clang_tidy_failing_without_a_finding_fails(self):
        p = self.gate(["error: unable to handle compilation"], rc=1)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("clang-tidy failed on core/a.c (exit 1)", p.stdout)


class GccAnalyzerGateTest(InTmp):
    """tests/lint/gcc_analyzer_gate.py, make lint's gcc -fanalyzer step, with
    the real gcc on a file of two functions (a compile of a few tenths of a
    second): before it, make lint did not run gcc's analyser at all."""

    SRC = ("#include <stdlib.h>\n"
           "void twice(char *p)\n{\n\tfree(p);\n\tfree(p);\n}\n"
           # a warning of the build's (-Wunused-variable), not this step's
           "int unused(void)\n{\n\tint x;\n\treturn 0;\n}\n")
    ENTRY = "-Wanalyzer-double-free core/a.c \tfree(p);\n"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_gcc_gate.")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        os.mkdir(os.path.join(self.tmp, "core"))
        self.write("core/a.c", self.SRC)
        # cc: the build's CC, which the gate replaces by gcc
        self.write("db.json", json.dumps([{"directory": self.tmp, "file": "core/a.c",
                                           "command": "cc -O2 -Wall -Icore -c core/a.c"}]))

    def gate(self, supp, *flags):
        self.write("supp", supp)
        return subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests", "lint",
                                                                "gcc_analyzer_gate.py"),
                               "-j2", "db.json", "supp", *flags], cwd=self.tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)

    def test_a_finding_fails(self):
        p = self.gate("")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stdout, r"(?m)^core/a\.c:5: .*\[-Wanalyzer-double-free\]$")

    def test_a_suppressed_finding_passes(self):
        p = self.gate("# why\n" + self.ENTRY)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout, "")

    def test_a_flag_turns_a_warning_off_and_its_entry_then_fails(self):
        p = self.gate("# why\n" + self.ENTRY, "-Wno-analyzer-double-free")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn('"-Wanalyzer-double-free core/a.c free(p);" covers no finding', p.stdout)

    def test_gcc_failing_fails(self):
        self.write("core/a.c", self.SRC + "int broken(\n")
        p = self.gate("# why\n" + self.ENTRY)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("gcc -fanalyzer failed on core/a.c (exit 1)", p.stdout)


class CommittedSuppressions(unittest.TestCase):
    def test_each_entry_is_still_in_its_file(self):
        for supp in (SUPP, GCC_SUPP):
            es = entries(supp)
            self.assertGreater(len(es), 0)
            for cid, path, text in es:
                with open(os.path.join(ROOT, path)) as f:
                    lines = [l for l in f if text in l]
                self.assertEqual(len(lines), 1, "%s: %s %s %s: in %d lines of %s, not 1"
                                 % (supp, cid, path, text, len(lines), path))

    def test_each_entry_has_its_reason(self):
        # a run of entries sits right under the comment that gives its reason
        for supp in (SUPP, GCC_SUPP):
            with open(supp) as f:
                lines = [l.strip() for l in f]
            for i, line in enumerate(lines):
                if line and not line.startswith("#"):
                    self.assertTrue(i > 0 and lines[i - 1], "%s: no reason above: %s"
                                    % (supp, line))

    def test_each_nolint_has_its_reason_above(self):
        srcs = []
        for d in ("core", "cli", "server", "trainer"):
            srcs += glob.glob(os.path.join(ROOT, d, "*.[ch]"))
        seen = 0
        for path in sorted(srcs):
            with open(path) as f:
                lines = f.read().split("\n")
            for i, line in enumerate(lines):
                if "NOLINT" not in line:
                    continue
                seen += 1
                where = "%s:%d" % (os.path.relpath(path, ROOT), i + 1)
                self.assertRegex(line.strip(), r"^/\* NOLINTNEXTLINE\([A-Za-z0-9.,-]+\) \*/$",
                                 where)
                self.assertTrue(i > 0 and lines[i - 1].rstrip().endswith("*/")
                                and "NOLINT" not in lines[i - 1], "%s: no reason above" % where)
        self.assertGreater(seen, 0)


if __name__ == "__main__":
    unittest.main()
