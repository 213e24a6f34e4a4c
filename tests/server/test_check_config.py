#!/usr/bin/python3
"""semid-server --check-config: the checks a start makes, and nothing started.

- a good configuration exits 0 and says the model's version and towers, the
  config file and the settings it gives;
- each kind of input a start refuses (a bad flag, a bad config value, a model
  that is missing or corrupt, a registry a newer semid wrote, a listen address
  that does not resolve or that this host does not have, ops_listen on
  listen's port) exits 2 with the message the start itself gives (the same
  arguments run without --check-config, as a start);
- with allow_empty a missing model is said and still 0, as a start serves;
- beside a running server on the same ports and registry it exits 0 (the
  ports are not bound), reads the registry through the server's -wal, and
  leaves the registry's directory as it was (no -wal, -shm or file made
  beside a registry closed cleanly, nor one created where there was none);
- while it runs (held at the model load by SEMID_TEST_LOAD_GATE) it has one
  thread and no socket;
- PostgreSQL (a throwaway cluster, pg_fixture; skipped without one): an empty
  database is said and left without a schema, a store a server wrote is read
  with its levels, a newer schema is refused as a start refuses it.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_check_config.py
"""
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np

import pg_fixture
import semid_testlib as T


def run(args, env=None, timeout=30):
    """semid-server @args -> (exit status, stdout, stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([T.SERVER] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=e, timeout=timeout * T.SLOW)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def refusals(stderr):
    """The lines a refused start says its reason on (not its log lines)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("semid-server: ")]


def blocked_in_fifo_open(pid):
    """Whether process @pid waits in open(2) of a FIFO for a writer."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            if f.read().strip() == "wait_for_partner":
                return True
        with open("/proc/%d/syscall" % pid) as f:  # openat: x86-64, arm64
            return f.read().split()[0] in ("257", "56")
    except (OSError, IndexError):
        return False


def listing(d):
    return sorted(os.listdir(d))


class ModelDir(unittest.TestCase):
    """A temp dir with proto/api.md's model in it, for each test."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="semid-check-")
        self.model = os.path.join(self.dir, "model.safetensors")
        T.doc_model(self.model)

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.dir])


class CheckConfig(ModelDir):

    def config(self, **keys):
        path = os.path.join(self.dir, "semid-server.json")
        with open(path, "w") as f:
            json.dump(keys, f)
        return path

    def same_refusal(self, args, needle):
        """@args refused by a start (exit 2, @needle in its message) and by
        --check-config with the start's own words; returns the check's stdout."""
        rc, _, start_err = run(["--listen", "127.0.0.1:0"] + args)
        self.assertEqual(rc, 2, start_err)
        said = refusals(start_err)
        self.assertTrue(said and needle in said[0], start_err)
        before = listing(self.dir)
        rc, out, err = run(["--check-config", "--listen", "127.0.0.1:0"] + args)
        self.assertEqual(rc, 2, out + err)
        self.assertIn(said[0], refusals(err))
        self.assertEqual(listing(self.dir), before, "the check left a file behind")
        return out

    def test_good_config(self):
        # retry_after_s at its default, as in a copy of semid-server.json,
        # which gives every key: said to be the default, so that what was
        # changed stands out (it read as one of them)
        cfg = self.config(model=self.model, max_batch=64, log_level="warn", retry_after_s=1)
        before = listing(self.dir)
        rc, out, err = run(["--check-config", "--config", cfg, "--workers", "2"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn('model_version "demo-1"', out)
        self.assertRegex(out, r"item tower: D 4, 2 layers, L 3 levels, K 8/8/8")
        self.assertRegex(out, r"user tower: D 4, 2 layers, L 2 levels, K 8/8")
        self.assertIn("config      " + cfg, out)
        self.assertRegex(out, r"max_batch +64 +\(%s\)\n" % cfg)
        self.assertRegex(out, r"retry_after_s +1 +\(%s, the default\)\n" % cfg)
        self.assertRegex(out, r"workers +2 +\(--workers\)")
        self.assertNotRegex(out, r"\n  max_inputs ")  # at its default, given nowhere
        self.assertIn("the port is not tested", out)
        self.assertIn("none yet; a start creates it", out)
        self.assertIn("result      OK", out)
        self.assertEqual(refusals(err), [])
        # the registry a start would create beside the model: not created
        self.assertEqual(listing(self.dir), before)

    def test_summary_that_cannot_be_written(self):
        """A summary lost to a full disk (stdout /dev/full) exited 0 without a
        word: a deploy step that keeps the report had an empty file and a
        pass.  It says so and exits 1; a refusal, said on stderr, stays 2;
        a reader that took what it wanted (| head -1) is no failure."""
        for args, status in ((["--model", self.model], 1),
                             (["--model", os.path.join(self.dir, "none.st")], 2)):
            with self.subTest(args=args), open("/dev/full", "w") as full:
                p = subprocess.run([T.SERVER, "--check-config", "--listen", "127.0.0.1:0"] + args,
                                   stdout=full, stderr=subprocess.PIPE, timeout=30 * T.SLOW)
                err = p.stderr.decode()
                self.assertEqual(p.returncode, status, err)
                self.assertIn("semid-server: --check-config: stdout: the summary could not "
                              "be written: No space left on device", err)
        p = subprocess.run(["bash", "-o", "pipefail", "-c",
                            "%s --check-config --listen 127.0.0.1:0 --model %s | head -c 1"
                            % (T.SERVER, self.model)], capture_output=True, timeout=30 * T.SLOW)
        self.assertEqual((p.returncode, p.stdout, p.stderr.decode()), (0, b"s", ""))

    def test_help_and_version_that_cannot_be_written(self):
        """--help and --version into a full disk exited 0 with nothing
        written (semid and semid-train said so and exited 1); a reader that
        took what it wanted (| head -c 1) is no failure."""
        for flag, first in (("--help", b"u"), ("--version", b"s")):
            with self.subTest(flag=flag), open("/dev/full", "w") as full:
                p = subprocess.run([T.SERVER, flag], stdout=full, stderr=subprocess.PIPE,
                                   timeout=30 * T.SLOW)
                self.assertEqual((p.returncode, p.stderr.decode()),
                                 (1, "semid-server: stdout: write failed: "
                                     "No space left on device\n"))
            p = subprocess.run(["bash", "-o", "pipefail", "-c", "%s %s | head -c 1"
                                % (T.SERVER, flag)], capture_output=True, timeout=30 * T.SLOW)
            self.assertEqual((p.returncode, p.stdout, p.stderr.decode()), (0, first, ""))

    def test_secrets_not_shown(self):
        token = "s3cret-token-of-32-bytes-or-more!!"
        rc, out, err = run(["--check-config", "--model", self.model, "--admin-token=" + token,
                            "--registry", "postgresql://u:pw-xyz@127.0.0.1:1/db"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("admin_token", out)
        self.assertNotIn(token, out + err)
        self.assertNotIn("pw-xyz", out + err)
        # a connection was tried (bounded by registry_timeout_ms), and failed:
        # a start serves without the store and retries
        self.assertIn("registry    postgresql: not reached", out)
        self.assertIn("result      OK", out)

    def test_bad_flag(self):
        self.same_refusal(["--model", self.model, "--max-batch", "0"], "max_batch = 0")
        self.same_refusal(["--model", self.model, "--max-bach", "8"], "unknown flag")

    def test_bad_config_value(self):
        cfg = self.config(model=self.model, queue_rows=10, max_inputs=100)
        self.same_refusal(["--config", cfg], "queue_rows (10) must be at least max_inputs")
        cfg = self.config(model=self.model, watch="yes")
        self.same_refusal(["--config", cfg], "watch must be true or false")

    def test_bad_model(self):
        missing = os.path.join(self.dir, "nope.safetensors")
        self.same_refusal(["--model", missing], "cannot load the model")
        corrupt = os.path.join(self.dir, "corrupt.safetensors")
        with open(self.model, "rb") as f:
            data = bytearray(f.read())
        data[8:16] = b"{\"x\": [}"  # the header's JSON broken
        with open(corrupt, "wb") as f:
            f.write(data)
        out = self.same_refusal(["--model", corrupt], "cannot load the model")
        self.assertIn("REFUSED", out)

    def test_allow_empty_without_model(self):
        missing = os.path.join(self.dir, "later.safetensors")
        rc, out, err = run(["--check-config", "--model", missing, "--allow-empty"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("not loaded", out)
        self.assertIn("allow_empty", out)
        self.assertIn("result      OK", out)
        # but the directory the watcher would watch must be there
        gone = os.path.join(self.dir, "no-such-dir", "model.safetensors")
        self.same_refusal(["--model", gone, "--allow-empty"], "cannot watch")

    def test_registry_none(self):
        """With --registry none the summary says which routes answer 501, as
        a server started so answers them: deletes too, which it left out."""
        rc, out, err = run(["--check-config", "--model", self.model, "--registry", "none"])
        self.assertEqual(rc, 0, out + err)
        line = [ln for ln in out.splitlines() if ln.startswith("registry ")]
        self.assertEqual(line, ["registry    none: assign, lookups and deletes answer 501"])
        srv = T.Server(["--model", self.model, "--registry", "none", "--admin-token",
                        "t" * 32], self.dir)
        try:
            auth = {"Authorization": "Bearer " + "t" * 32, "Content-Type": "application/json"}
            for method, path, body in (
                    ("POST", "/v1/items:assign",
                     b'{"inputs": [{"id": "a", "embedding": [0, 0, 0, 1]}]}'),
                    ("GET", "/v1/items/a", None), ("GET", "/v1/sids/1-2-3-0", None),
                    ("DELETE", "/v1/items/a", None),
                    ("POST", "/v1/items:delete", b'{"ids": ["a"]}')):
                st, _, answer = srv.request(method, path, body, headers=auth)
                self.assertEqual(st, 501, (method, path, answer))
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_every_config_file_is_listed(self):
        """The summary lists every --config file read: of five it listed the
        first four, and then gave the fifth as the source of a setting it
        had not listed.  Past SRV_CONFIG_FILES_MAX (16) a start, and the
        check, refuse the next file, naming it."""
        files = []
        for i in range(17):
            files.append(self.config(max_batch=10 + i).replace(".json", "-%d.json" % i))
            os.rename(self.config(max_batch=10 + i), files[-1])
        args = ["--model", self.model, "--registry", "none", "--listen", "127.0.0.1:0"]
        five = [w for f in files[:5] for w in ("--config", f)]
        rc, out, err = run(["--check-config"] + args + five)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual([ln[12:] for ln in out.splitlines() if ln.startswith("config ")],
                         files[:5])
        self.assertRegex(out, r"max_batch +14 +\(%s\)\n" % files[4])
        sixteen = [w for f in files[:16] for w in ("--config", f)]
        rc, out, err = run(["--check-config"] + args + sixteen)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(len([ln for ln in out.splitlines() if ln.startswith("config ")]), 16)
        all17 = [w for f in files for w in ("--config", f)]
        self.same_refusal(args[:-2] + all17,
                          "config file: %s: more than 16 --config files" % files[16])

    def test_registry_unreadable_names_the_file(self):
        """A SQLite store a start could not use (not a database; missing, in a
        directory that is not there) passes, as a start serves without it,
        and its line names the file, as the line of one read does: it said
        "registry    sqlite: cannot be read: no such file, and this user
        cannot create one in DIR", naming no file, so a wrong file name in
        the config was not to be seen."""
        bad = os.path.join(self.dir, "not-a-db.db")
        with open(bad, "w") as f:
            f.write("not a database\n")
        gone = os.path.join(self.dir, "no-such-dir", "ids.db")
        for reg in (bad, gone):
            with self.subTest(registry=reg):
                rc, out, err = run(["--check-config", "--model", self.model, "--registry", reg])
                self.assertEqual(rc, 0, out + err)
                line = [ln for ln in out.splitlines() if ln.startswith("registry ")]
                self.assertEqual(len(line), 1, out)
                self.assertTrue(line[0].startswith("registry    sqlite %s: cannot be read: " % reg),
                                line[0])
                self.assertTrue(line[0].endswith("; a start serves without it (assign and "
                                                 "lookup answer 503) and retries"), line[0])

    def test_registry_schema_newer(self):
        reg = os.path.join(self.dir, "reg.db")
        db = sqlite3.connect(reg)
        db.execute("CREATE TABLE semid_meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO semid_meta VALUES ('schema_version', '7')")
        db.commit()
        db.close()
        self.same_refusal(["--model", self.model, "--registry", reg],
                          "schema version 7 is newer than this build's")

    def test_registry_bad_connection_string(self):
        self.same_refusal(["--model", self.model, "--registry", "host=h dbname=d nosuch=1"],
                          "bad connection string")

    def test_registry_bad_connection_value(self):
        """Values libpq checks only as it connects were taken at start: the
        server said its store was not reached and retried for ever.  Now a
        start and --check-config refuse them, naming the option (never the
        password, nor the value)."""
        for conninfo, option in (
                ("postgresql://u:pw-xyz@127.0.0.1:1/db?sslmode=requir", "sslmode"),
                ("host=127.0.0.1 port=abc dbname=d password=pw-xyz", "port"),
                ("postgresql://u:pw-xyz@127.0.0.1:abc/db", "port")):
            out = self.same_refusal(["--model", self.model, "--registry", conninfo],
                                    "bad connection string: " + option)
            self.assertNotIn("pw-xyz", out)
            rc, _, err = run(["--listen", "127.0.0.1:0", "--model", self.model,
                              "--registry", conninfo])
            self.assertEqual(rc, 2, err)
            self.assertNotIn("pw-xyz", err)
            self.assertNotIn("requir\"", err)
            self.assertNotIn("abc", err)

    def test_bad_listen(self):
        self.same_refusal(["--model", self.model, "--listen", "no-such-host.invalid:8080"],
                          "no-such-host.invalid:8080")
        # TEST-NET-1: an address this host does not have (bound, never sent to)
        self.same_refusal(["--model", self.model, "--listen", "192.0.2.1:8080"],
                          "cannot listen on 192.0.2.1:8080")
        self.same_refusal(["--model", self.model, "--listen", "127.0.0.1:18080",
                           "--ops-listen", "127.0.0.1:18080"], "is on listen's port")

    def test_port_held(self):
        # the port in use is what a restart finds: the check does not bind it
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = "127.0.0.1:%d" % s.getsockname()[1]
        try:
            rc, _, err = run(["--model", self.model, "--listen", addr])
            self.assertEqual(rc, 2, err)
            self.assertIn("Address already in use", err)
            rc, out, err = run(["--check-config", "--model", self.model, "--listen", addr])
            self.assertEqual(rc, 0, out + err)
            self.assertIn(addr + ": resolves", out)
        finally:
            s.close()

    def test_beside_running_server(self):
        reg = os.path.join(self.dir, "reg.db")
        srv = T.Server(["--model", self.model, "--registry", reg, "--watch=false"])
        try:
            rng = np.random.default_rng(1)
            body = {"inputs": [{"id": "a", "embedding": rng.standard_normal(4).tolist()}]}
            st, _, r = srv.json("POST", "/v1/items:assign", body)
            self.assertEqual(st, 200, r)
            before = listing(self.dir)
            self.assertIn("reg.db-wal", before)
            rc, out, err = run(["--check-config", "--model", self.model, "--registry", reg,
                                "--listen", "127.0.0.1:%d" % srv.port])
            self.assertEqual(rc, 0, out + err)
            self.assertIn("registry    sqlite %s: read" % reg, out)
            self.assertIn("item ids: 3 levels", out)
            self.assertEqual(listing(self.dir), before)
            body["inputs"][0]["id"] = "b"
            st, _, r = srv.json("POST", "/v1/items:assign", body)
            self.assertEqual(st, 200, r)
        finally:
            self.assertEqual(srv.stop(), 0)
        # closed cleanly: the file alone, and a check makes no -wal or -shm
        before = listing(self.dir)
        self.assertNotIn("reg.db-wal", before)
        rc, out, err = run(["--check-config", "--model", self.model, "--registry", reg])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("registry    sqlite %s: read" % reg, out)
        self.assertEqual(listing(self.dir), before)

    def test_starts_nothing(self):
        gate = os.path.join(self.dir, "gate")
        os.mkfifo(gate)
        before = listing(self.dir)
        p = subprocess.Popen([T.SERVER, "--check-config", "--model", self.model,
                              "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, SEMID_TEST_LOAD_GATE=gate))
        opened = threading.Event()

        def release():  # the FIFO's open returns once the check opens it too
            with open(gate, "w"):
                opened.set()

        t = threading.Thread(target=release, daemon=True)
        try:
            # held at the model load (after the listen checks): what it has
            deadline = time.monotonic() + 10 * T.SLOW
            while not blocked_in_fifo_open(p.pid):
                self.assertLess(time.monotonic(), deadline, "never reached the model load")
                time.sleep(0.01)
            links = []
            for fd in os.listdir("/proc/%d/fd" % p.pid):
                try:
                    links.append(os.readlink("/proc/%d/fd/%s" % (p.pid, fd)))
                except OSError:
                    pass
            self.assertEqual([ln for ln in links if ln.startswith("socket:")], [], links)
            self.assertEqual(len(os.listdir("/proc/%d/task" % p.pid)), 1)
        finally:
            t.start()
            out, err = p.communicate(timeout=30 * T.SLOW)
        self.assertTrue(opened.is_set())
        self.assertEqual(p.returncode, 0, out + err)
        self.assertEqual(listing(self.dir), before)

    def test_interrupted_is_no_pass(self):
        # a start stopped while it loads exits 0 (nothing was served); a
        # check stopped there checked nothing, and must not say 0
        gate = os.path.join(self.dir, "gate")
        os.mkfifo(gate)
        p = subprocess.Popen([T.SERVER, "--check-config", "--model", self.model],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ, SEMID_TEST_LOAD_GATE=gate))
        try:
            deadline = time.monotonic() + 10 * T.SLOW
            while not blocked_in_fifo_open(p.pid):
                self.assertLess(time.monotonic(), deadline, "never reached the model load")
                time.sleep(0.01)
            p.terminate()
            out, err = p.communicate(timeout=30 * T.SLOW)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, -15, out + err)
        self.assertNotIn(b"result      OK", out)


class CheckConfigPostgres(ModelDir):
    @classmethod
    def setUpClass(cls):
        cls.pg = pg_fixture.PgCluster.start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def psql(self, db, sql):
        return subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                               str(self.pg.port), "-U", "postgres", "-d", db, "-XAtq", "-c",
                               sql], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()

    def test_postgres(self):
        db = "semid_check_%d" % os.getpid()
        self.psql("postgres", "CREATE DATABASE " + db)
        target = self.pg.conninfo.replace("dbname=postgres", "dbname=" + db)
        args = ["--check-config", "--model", self.model, "--registry", target]
        rc, out, err = run(args)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("registry    postgresql (the database holds no semid registry): none yet",
                      out)
        self.assertEqual(self.psql(db, "SELECT to_regclass('semid_meta') IS NULL"), "t")
        srv = T.Server(["--model", self.model, "--registry", target, "--watch=false"])
        try:
            body = {"inputs": [{"id": "a", "embedding": [0.5, 0.1, 0.2, 0.3]}]}
            st, _, r = srv.json("POST", "/v1/items:assign", body)
            self.assertEqual(st, 200, r)
            rc, out, err = run(args + ["--listen", "127.0.0.1:%d" % srv.port])
        finally:
            self.assertEqual(srv.stop(), 0)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"registry    postgresql postgresql://\S+: read .*connected")
        self.assertIn("item ids: 3 levels", out)
        self.psql(db, "UPDATE semid_meta SET value = '7' WHERE key = 'schema_version'")
        rc, _, start_err = run(["--listen", "127.0.0.1:0"] + args[1:])
        self.assertEqual(rc, 2, start_err)
        said = refusals(start_err)
        self.assertTrue(said and "schema version 7 is newer" in said[0], start_err)
        rc, out, err = run(args)
        self.assertEqual(rc, 2, out + err)
        self.assertIn(said[0], refusals(err))


if __name__ == "__main__":
    unittest.main()
