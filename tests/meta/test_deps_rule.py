#!/usr/bin/python3
"""The Makefile's `deps` rule, which `make run` runs first (and `make test`
through `deps-test`): it asks dpkg which of DEB_PACKAGES are installed,
installs the missing ones as root (after `apt-get update`, since a fresh
machine may never have fetched the package lists; both wait for a lock
another apt holds, as unattended-upgrades does on a fresh cloud machine's
first boot), and as any other user names them and stops.  A package that is installed but held (`apt-mark
hold`, dpkg status "hold ok installed") counts as installed: it used to be
taken for missing, so a non-root `make run` stopped saying an installed
package was missing, and root ran apt-get on every build.

dpkg-query, id and apt-get are stand-ins on PATH: dpkg-query answers from a
table the test writes, id says the uid the test picks, apt-get logs its
arguments.  Nothing is installed.

Run by `make test`; standalone: /usr/bin/python3 tests/meta/test_deps_rule.py
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

DPKG_QUERY = """#!/bin/sh
# dpkg-query -W -f='${Status}\\n' PKG: the status from the table, "install ok
# installed" for a package not in it, none for one marked absent
for pkg; do :; done
st=$(awk -v p="$pkg" '$1 == p { sub(/^[^ ]+ /, ""); print; exit }' "%(table)s")
[ -n "$st" ] || st="install ok installed"
if [ "$st" = absent ]; then
	echo "dpkg-query: no packages found matching $pkg" >&2
	exit 1
fi
echo "$st"
"""
ID = """#!/bin/sh
[ "$1" = -u ] && { cat "%(uid)s"; exit 0; }
exec /usr/bin/id "$@"
"""
APT_GET = """#!/bin/sh
echo "$*" >> "%(calls)s"
"""


def makefile_packages():
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    return re.search(r"^DEB_PACKAGES :=(.*)$", text, re.M).group(1).split()


class DepsRuleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_deps_rule.")
        shim = os.path.join(self.tmp, "shim")
        os.mkdir(shim)
        self.table = os.path.join(self.tmp, "status")
        self.uid = os.path.join(self.tmp, "uid")
        self.calls = os.path.join(self.tmp, "calls")
        names = {"table": self.table, "uid": self.uid, "calls": self.calls}
        for name, text in (("dpkg-query", DPKG_QUERY), ("id", ID), ("apt-get", APT_GET)):
            with open(os.path.join(shim, name), "w") as f:
                f.write(text % names)
            os.chmod(os.path.join(shim, name), 0o755)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        self.env["PATH"] = shim + ":" + os.environ.get("PATH", "/usr/bin:/bin")
        self.packages = makefile_packages()

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def deps(self, uid, status):
        with open(self.uid, "w") as f:
            f.write("%d\n" % uid)
        with open(self.table, "w") as f:
            for pkg, st in status.items():
                f.write("%s %s\n" % (pkg, st))
        return subprocess.run(["make", "-C", ROOT, "--no-print-directory", "deps"],
                              env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)

    def apt_calls(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().splitlines()

    def test_everything_installed_does_nothing(self):
        for uid in (1000, 0):
            p = self.deps(uid, {})
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertNotIn("missing", p.stdout)
        self.assertEqual(self.apt_calls(), [])

    def test_a_held_package_is_installed(self):
        held = {self.packages[0]: "hold ok installed", self.packages[-1]: "hold ok installed"}
        for uid in (1000, 0):
            p = self.deps(uid, held)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertNotIn("missing", p.stdout)
        self.assertEqual(self.apt_calls(), [])

    def test_not_root_names_the_missing_and_stops(self):
        gone, removed = self.packages[3], self.packages[-1]
        p = self.deps(1000, {gone: "absent", removed: "deinstall ok config-files",
                             self.packages[1]: "hold ok installed"})
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("semid: missing Debian packages: %s %s (run as root, or apt-get install "
                      "them)" % (gone, removed), p.stdout)
        self.assertEqual(self.apt_calls(), [])

    def test_root_updates_the_lists_then_installs_only_the_missing(self):
        gone, half = self.packages[2], self.packages[5]
        p = self.deps(0, {gone: "absent", half: "install ok half-configured"})
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertIn("semid: installing missing Debian packages: %s %s" % (gone, half), p.stdout)
        # both wait for a lock another apt holds (unattended-upgrades on a
        # fresh cloud machine) instead of failing at once
        wait = "-o DPkg::Lock::Timeout=600"
        self.assertEqual(self.apt_calls(),
                         ["%s update -qq" % wait, "%s install -y -qq --no-install-recommends %s %s"
                          % (wait, gone, half)])


PKG_CONFIG = """#!/bin/sh
# pkg-config --exists NAME: fails for the names listed in the file
[ "$1" = --exists ] || exit 3
! /bin/grep -qx "$2" "%(missing)s"
"""


def makefile_var(name):
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read().replace("\\\n", " ")
    return re.search(r"^%s :=(.*)$" % name, text, re.M).group(1).split()


class PkgsCheckTest(unittest.TestCase):
    """Before the first compile, `make` checks for a compiler, pkg-config
    and the libraries' .pc files, and names the Debian packages that are
    missing (a fresh machine's `make` printed a screen of pkg-config
    complaints, then a missing header).  Stand-ins on a PATH of their own;
    nothing is compiled."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="test_pkgs_check.")
        self.shim = os.path.join(self.tmp, "shim")
        os.mkdir(self.shim)
        self.missing = os.path.join(self.tmp, "missing")
        open(self.missing, "w").close()
        self.out = os.path.join(self.tmp, "out")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def shims(self, cc=True, pkg_config=True):
        for name in os.listdir(self.shim):
            os.unlink(os.path.join(self.shim, name))
        for tool in ("mkdir", "sed"):
            os.symlink("/bin/" + tool, os.path.join(self.shim, tool))
        if cc:
            os.symlink("/bin/true", os.path.join(self.shim, "cc"))
        if pkg_config:
            with open(os.path.join(self.shim, "pkg-config"), "w") as f:
                f.write(PKG_CONFIG % {"missing": self.missing})
            os.chmod(os.path.join(self.shim, "pkg-config"), 0o755)

    def make(self, target, missing=()):
        with open(self.missing, "w") as f:
            f.write("".join(m + "\n" for m in missing))
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        # the shims, then only what a recipe's shell needs besides them
        env["PATH"] = self.shim + ":/nonexistent"
        return subprocess.run(["/usr/bin/make", "-C", ROOT, "--no-print-directory", "CC=cc",
                               "O=" + self.out, "BIN=" + self.out + "/bin", target],
                              env=env, capture_output=True, text=True, timeout=60)

    def assert_missing(self, p, packages):
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("semid: cannot build: Debian packages missing: %s; `make deps` (as root) "
                      "installs them, as `make run` and `make test` do\n" % " ".join(packages),
                      p.stderr)
        self.assertFalse(os.path.exists(self.out), "something was built")

    def test_every_library_has_its_package(self):
        mapping = dict(pd.split("=") for pd in makefile_var("PKG_DEB"))
        deb = makefile_packages()
        for pc in makefile_var("PKGS") + makefile_var("PKGS_HEADERS") + makefile_var("PKGS_TEST"):
            with self.subTest(pc=pc):
                self.assertIn(pc, mapping)
                self.assertIn(mapping[pc], deb)

    def test_missing_libraries_are_named_by_package(self):
        self.shims()
        self.assert_missing(self.make("all", ["jansson", "libuv"]),
                            ["libjansson-dev", "libuv1-dev"])

    def test_test_build_asks_for_check_too(self):
        self.shims()
        # the programs' objects need no Check; the suites' do
        p = self.make("%s/tests/core/check_npy.o" % self.out, ["check"])
        self.assert_missing(p, ["check"])

    def test_no_compiler_no_pkg_config(self):
        self.shims(cc=False, pkg_config=False)
        self.assert_missing(self.make("all"), ["build-essential", "pkg-config"])

    def test_all_present_goes_on_to_compile(self):
        self.shims()
        # cc is /bin/true here: it "compiles" nothing, and the link fails
        # later; what matters is that the check let it through
        p = self.make("%s/core/err.o" % self.out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("cannot build", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
