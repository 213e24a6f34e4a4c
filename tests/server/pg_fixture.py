"""A throwaway PostgreSQL cluster for the server's registry tests, started the
way tests/core/check_registry.c starts its own: initdb in a temp dir owned by
the postgres user (runuser), pg_ctl on a free loopback port, fsync off (the
tests are about semantics, not the disk), removed at the end.

    pg = PgCluster.start()      # raises unittest.SkipTest when not root or
                                # when PostgreSQL 15 is not installed
    pg.conninfo                 # "host=127.0.0.1 port=N dbname=postgres user=postgres"
    pg.stop_server(); pg.start_server()   # an outage and a recovery
    pg.trust_only_postgres()    # other roles log in with a password
    pg.destroy()

SEMID_TEST_PG (an existing server's connection string, as for check_registry)
is used instead when set; then stop/start are not available.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import unittest

PGBIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self):
        self.fsync = False
        self.options = ""
        self.dir = None
        self.conninfo = None
        self.own = False

    @classmethod
    def start(cls, fsync=False, options=""):
        """fsync=True for benchmarks (the server's default durability);
        @options: more postgres flags ("-c name=value ...")."""
        pg = cls()
        pg.fsync = fsync
        pg.options = options
        ext = os.environ.get("SEMID_TEST_PG")
        if ext:
            pg.conninfo = ext
            return pg
        if os.geteuid() != 0:
            raise unittest.SkipTest("PostgreSQL cases need root (initdb runs as postgres)")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = None
        if pw is None or not os.access(PGBIN + "/initdb", os.X_OK):
            raise unittest.SkipTest("PostgreSQL 15 is not installed (%s)" % PGBIN)
        pg.dir = tempfile.mkdtemp(prefix="semid-srv-pg-")
        os.chown(pg.dir, pw.pw_uid, pw.pw_gid)
        subprocess.run(["runuser", "-u", "postgres", "--", PGBIN + "/initdb", "-D",
                        pg.dir + "/data", "-A", "trust", "-U", "postgres", "--no-sync", "-E",
                        "UTF8"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
        pg.own = True
        # The port is free when picked, but another suite running beside
        # this one may bind it (a client socket's ephemeral port, say)
        # before postgres does: pick another and try again.
        for attempt in range(5):
            pg.port = free_port()
            try:
                pg.start_server()
                break
            except subprocess.CalledProcessError:
                with open(pg.dir + "/pg.log", errors="replace") as f:
                    taken = "already in use" in f.read()
                if not taken or attempt == 4:
                    raise
        pg.conninfo = "host=127.0.0.1 port=%d dbname=postgres user=postgres" % pg.port
        return pg

    def _ctl(self, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "-D",
                        self.dir + "/data"] + list(args), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def start_server(self):
        self._ctl("-l", self.dir + "/pg.log", "-w", "-t", "60", "-o",
                  "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=%s %s"
                  % (self.port, self.dir, "on" if self.fsync else "off", self.options),
                  "start")

    def stop_server(self, mode="immediate"):
        """@mode: pg_ctl's -m: "immediate" (a crash: no backend says
        goodbye) or "fast" (backends are told to end: sessions get 57P01)."""
        self._ctl("-m", mode, "-w", "stop")

    def trust_only_postgres(self):
        """Make pg_hba.conf ask every role but postgres for its password
        (scram-sha-256) on loopback TCP; restarts the server (a reload
        would take effect at some moment after pg_ctl returns)."""
        with open(self.dir + "/data/pg_hba.conf", "w") as f:
            f.write("local all all trust\n"
                    "host all postgres 127.0.0.1/32 trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")
        self.stop_server("fast")
        self.start_server()

    def destroy(self):
        if self.own:
            try:
                self.stop_server()
            except subprocess.CalledProcessError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)
            self.own = False
