#!/usr/bin/python3
"""`make install` into a staging DESTDIR gives the programs, the contracts
as documentation, and a library that a program of one's own builds against
with pkg-config alone: tests/meta/encode_example.c, compiled from the staged
headers and libsemid.a, must print exactly what `semid encode` prints for the
same model and rows, and the codes a tie-free model gives by construction
(independent of semid).  `make uninstall` then removes every installed file.

Run by `make test` (which passes its build directories as SEMID_O and
SEMID_BIN, and SEMID_SANITIZE in test-sanitize); standalone:
SEMID_O=build SEMID_BIN=bin /usr/bin/python3 tests/meta/test_install.py
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))
import semid_testlib as T  # noqa: E402

BIN = os.path.abspath(os.environ.get("SEMID_BIN", os.path.join(ROOT, "bin")))
O = os.path.abspath(os.environ.get("SEMID_O", os.path.join(ROOT, "build")))
SANITIZE = os.environ.get("SEMID_SANITIZE", "")
PREFIX = "/usr/local"


def make(target, dest):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    args = ["make", "-C", ROOT, "--no-print-directory", target, "DESTDIR=" + dest,
            "PREFIX=" + PREFIX, "O=" + O, "BIN=" + BIN]
    if SANITIZE:
        args.append("SANITIZE=" + SANITIZE)
    return subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)


class Install(unittest.TestCase):
    def test_install_build_against_uninstall(self):
        with tempfile.TemporaryDirectory(prefix="semid-install-") as d:
            dest = os.path.join(d, "stage")
            p = make("install", dest)
            self.assertEqual(p.returncode, 0, p.stdout)
            root = dest + PREFIX
            for prog in ("semid", "semid-server", "semid-train"):
                self.assertTrue(os.access(os.path.join(root, "bin", prog), os.X_OK), prog)
            for f in ("lib/libsemid.a", "include/semid/encode.h", "include/semid/registry.h",
                      "share/doc/semid/proto/api.md", "share/doc/semid/proto/openapi.json",
                      "share/doc/semid/README.md", "share/doc/semid/config/README.md",
                      "share/doc/semid/config/semid-server.json",
                      "share/doc/semid/deploy/systemd/semid-server.service"):
                self.assertTrue(os.path.isfile(os.path.join(root, f)), f)
            # deploy/README.md runs ./docker-smoke.sh where it is installed
            self.assertTrue(os.access(os.path.join(root, "share/doc/semid/deploy/docker-smoke.sh"),
                                      os.X_OK))
            # the documents in the repository's layout: a link from one to
            # another resolves there as here (the docs were installed flat,
            # without config/README.md, which semid-server --help names)
            doc = os.path.join(root, "share", "doc", "semid")
            for r, _, fs in os.walk(doc):
                for f in fs:
                    if not f.endswith(".md"):
                        continue
                    md = os.path.join(r, f)
                    with open(md, encoding="utf-8") as fh:
                        links = re.findall(r"\]\(([^)#\s]+)", fh.read())
                    for link in links:
                        if "://" in link:
                            continue
                        rel = os.path.normpath(os.path.join(os.path.relpath(r, doc), link))
                        if rel.split(os.sep)[0] in ("config", "proto", "deploy", "README.md") \
                                and os.path.exists(os.path.join(ROOT, rel)):
                            self.assertTrue(os.path.exists(os.path.join(doc, rel)),
                                            "%s links %s, not installed" % (md, link))
            # the units' Documentation= is an installed file
            for unit in ("semid-server.service", "semid-server.socket", "semid-server-ops.socket"):
                with open(os.path.join(ROOT, "deploy", "systemd", unit)) as fh:
                    url = re.search(r"^Documentation=file://(\S+)", fh.read(), re.M).group(1)
                self.assertTrue(os.path.isfile(dest + url), "%s: %s" % (unit, url))

            env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib", "pkgconfig"),
                       PKG_CONFIG_SYSROOT_DIR=dest)
            pc = subprocess.run(["pkg-config", "--cflags", "--libs", "semid"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.assertEqual(pc.returncode, 0, pc.stderr)
            self.assertIn("-I%s/include" % root, pc.stdout)
            self.assertIn("-lsemid", pc.stdout)
            exe = os.path.join(d, "encode_example")
            cc = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Werror",
                                 os.path.join(HERE, "encode_example.c"), "-o", exe] +
                                pc.stdout.split() +
                                (["-fsanitize=" + SANITIZE] if SANITIZE else []),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.assertEqual(cc.returncode, 0, cc.stdout)

            rng = np.random.default_rng(7)
            model = os.path.join(d, "m.safetensors")
            T.write_model(model, {"item": T.random_tower(rng, 12, [16], 4, [8, 8, 8])}, "inst")
            x = os.path.join(d, "x.npy")
            np.save(x, rng.standard_normal((50, 12)).astype(np.float32))
            mine = subprocess.run([exe, model, x], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
            self.assertEqual(mine.returncode, 0, mine.stderr)
            ref = subprocess.run([os.path.join(BIN, "semid"), "encode", "-m", model, "-i", x,
                                  "-o", "-", "--no-progress"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, timeout=60)
            self.assertEqual(ref.returncode, 0, ref.stderr)
            self.assertEqual(len(mine.stdout.splitlines()), 50)
            self.assertEqual(mine.stdout, ref.stdout)

            # and codes known without semid: a tower whose latent is its
            # input, rows next to one codeword per level (semid_testlib)
            tower = T.tie_free_tower(rng)
            T.write_model(model, {"item": tower}, "tie-free")
            xs, codes = T.tie_free_inputs(rng, tower, 40)
            np.save(x, xs)
            mine = subprocess.run([exe, model, x], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
            self.assertEqual(mine.returncode, 0, mine.stderr)
            want = "".join("%d\t%s\n" % (i, "-".join(map(str, c))) for i, c in enumerate(codes))
            self.assertEqual(mine.stdout, want)

            p = make("uninstall", dest)
            self.assertEqual(p.returncode, 0, p.stdout)
            left = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs]
            self.assertEqual(left, [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
