#!/usr/bin/python3
"""make bench-delete: deleting ids through semid-server's SQLite registry,
one DELETE /v1/items/{id} per id against POST /v1/items:delete of 64 and of
1000 ids a request, in the same run.

Each round assigns ROUND fresh ids (POST /v1/items:assign, 1000 a request,
embeddings kept), then deletes them all in one of the three ways on one
keep-alive connection; the three ways take turns, ROUNDS rounds each, so a
slow spell of the machine falls on all of them.  Reported per way: ids per
second (median and range over its rounds) and the ratio to the one-by-one
rate of the same run.  Writes bench/out/RESULTS-delete.md.

Usage: SEMID_BIN=bin /usr/bin/python3 tests/server/bench_delete.py [--rounds 3] [--out FILE]

SEMID_BENCH_SMOKE=1 (make bench-smoke): one round of 100 ids a way; the report
says its figures mean nothing.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

ROUND = 2000
ADMIN = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
WAYS = (("DELETE /v1/items/{id}, 1 id a request", 1),
        ("POST /v1/items:delete, 64 ids a request", 64),
        ("POST /v1/items:delete, 1000 ids a request", 1000))


def assign(srv, conn, ids, rng):
    for k in range(0, len(ids), 1000):
        part = ids[k:k + 1000]
        x = rng.standard_normal((len(part), 4)).astype(np.float32)
        body = {"inputs": [{"id": i, "embedding_b64": T.b64_row(r)} for i, r in zip(part, x)]}
        st, _, data = srv.request("POST", "/v1/items:assign", body, conn=conn)
        assert st == 200, data[:300]


def delete(srv, conn, ids, per):
    """-> seconds to delete @ids, @per a request (1: DELETE of each)."""
    t0 = time.perf_counter()
    if per == 1:
        for i in ids:
            st, _, data = srv.request("DELETE", "/v1/items/" + i, headers=ADMIN, conn=conn)
            assert st == 200, data[:300]
    else:
        for k in range(0, len(ids), per):
            body = json.dumps({"ids": ids[k:k + per]}).encode()
            st, _, data = srv.request("POST", "/v1/items:delete", body, ADMIN, conn=conn)
            assert st == 200 and json.loads(data)["deleted"] == len(ids[k:k + per]), data[:300]
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n = 100 if T.SMOKE else ROUND
    if T.SMOKE:
        args.rounds = 1
    rng = np.random.default_rng(7)
    work = tempfile.mkdtemp(prefix="semid-bench-delete-")
    model = os.path.join(work, "model.safetensors")
    T.doc_model(model)
    srv = T.Server(["--model", model, "--admin-token", "bench", "--log-level", "warn"], work)
    rates = {per: [] for _, per in WAYS}
    try:
        conn = srv.conn()
        for r in range(args.rounds):
            for name, per in WAYS:
                ids = ["r%d-%d-%d" % (r, per, k) for k in range(n)]
                assign(srv, conn, ids, rng)
                rates[per].append(n / delete(srv, conn, ids, per))
                print("round %d: %-42s %8.0f ids/s" % (r + 1, name, rates[per][-1]),
                      flush=True)
        conn.close()
    finally:
        assert srv.stop() == 0
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rates[1])
    lines = ["## Deleting ids (make bench-delete)", "",
             "%s UTC, %s, %d cores, %s; SQLite store (WAL, synchronous=FULL) in %s "
             "(a temp dir); %d ids a round, embeddings kept; %d rounds a way, the ways taking turns; "
             "one keep-alive connection." % (
                 datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                 T.cpu_model(), os.cpu_count(), platform.platform(terse=True), work,
                 n, args.rounds), "",
             "| way | ids/s (median) | range | vs one by one |", "| --- | ---: | ---: | ---: |"]
    for name, per in WAYS:
        m = statistics.median(rates[per])
        lines.append("| %s | %.0f | %.0f-%.0f | %.1fx |" % (
            name, m, min(rates[per]), max(rates[per]), m / base))
    T.report(lines, args.out)


if __name__ == "__main__":
    main()
