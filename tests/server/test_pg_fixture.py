#!/usr/bin/python3
"""The throwaway PostgreSQL of pg_fixture.py starts even when the port it
picked is taken before postgres binds it (by a suite running beside it).

Run: /usr/bin/python3 tests/server/test_pg_fixture.py (as root, PostgreSQL 15
installed; skipped otherwise).
"""
import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_fixture  # noqa: E402


class TestPgFixture(unittest.TestCase):
    def test_port_taken_before_start(self):
        if os.environ.get("SEMID_TEST_PG"):
            self.skipTest("SEMID_TEST_PG names an existing server")
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        picks = []
        real = pg_fixture.free_port

        def first_taken():
            picks.append(taken if not picks else real())
            return picks[-1]

        pg_fixture.free_port = first_taken
        pg = None
        try:
            pg = pg_fixture.PgCluster.start()
        finally:
            pg_fixture.free_port = real
            held.close()
        try:
            self.assertEqual(len(picks), 2, picks)
            self.assertNotEqual(pg.port, taken)
            self.assertIn("port=%d " % pg.port, pg.conninfo)
            out = subprocess.run([pg_fixture.PGBIN + "/psql", "-h", "127.0.0.1", "-p",
                                  str(pg.port), "-U", "postgres", "-At", "-c", "SELECT 41 + 1"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.stdout.strip(), "42", out.stderr)
        finally:
            pg.destroy()


if __name__ == "__main__":
    unittest.main()
