#!/usr/bin/python3
"""make bench-backup: what `semid registry backup` costs a server that keeps
assigning, and what it costs alone.

A semid-server on a SQLite store (embeddings kept) takes 64-item assigns of
new ids under wrk (bench_assign.py's model, rows and Lua script) until the
store holds some hundreds of MiB.  Then, per round, 10 s of assigns alone
(the round's baseline), and 10 s of assigns while `semid registry backup`
runs again and again, once per --max-rate value (0: no cap): items/s against
the baseline of the same round, p99, and how long each backup took.  After
the server stops, the backup alone against `cp` + `sync` of the same file,
the floor for any copy.  Writes bench/out/RESULTS-backup.md.

Usage: SEMID_BIN=bin /usr/bin/python3 tests/server/bench_backup.py [--grow 10]
       [--rates "0 100 40"] [--rounds 2] [--out FILE]

SEMID_BENCH_SMOKE=1 (make bench-smoke): 1 s of growth, 1 s per run, wrk's
connections paced (bench_assign.py's script), no `sync` before a run, one
round with no cap and --max-rate 200; the report says its figures mean
nothing.
"""
import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_assign as B  # noqa: E402
import semid_testlib as T  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grow", type=int, default=10, help="seconds of assigns before the rounds")
    ap.add_argument("--secs", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--rates", default="0 100 40", help="--max-rate values, 0: no cap")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench/out/RESULTS-backup.md")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench-backup needs wrk (apt-get install wrk)")
    if T.SMOKE:
        args.grow, args.secs, args.rates, args.rounds = 1, 1, "0 200", 1
    semid = os.path.join(T.BIN, "semid")
    work = tempfile.mkdtemp(prefix="semid-bench-backup-")
    model, rows, lua, _ = B.workload(work)
    store = os.path.join(work, "registry.db")
    bk = os.path.join(work, "backup.db")
    runs = [0]

    def assign(srv):
        runs[0] += 1
        env = {"ROWS_FILE": rows, "ITEMS": "64", "RUN": "r%d" % runs[0], "KNOWN": "0"}
        T.bench_sync()
        r = B.wrk(srv.port, "/v1/items:assign", lua, env, 16, args.secs)
        r["ips"] = r["rps"] * 64
        return r

    def backup(rate):
        t0 = time.monotonic()
        p = subprocess.run([semid, "registry", "backup", "--db", store, "-o", bk] +
                           (["--max-rate", rate] if rate != "0" else []),
                           stderr=subprocess.PIPE, timeout=600)
        if p.returncode:
            sys.exit("backup failed: " + p.stderr.decode())
        mib = float(re.search(r": ([\d.]+) MiB", p.stderr.decode()).group(1))
        return time.monotonic() - t0, mib

    def backups(stop, out, rate):
        while not stop.is_set():
            out.append(backup(rate))

    def wal_peak(stop, peak):
        # the WAL cannot restart behind a backup's snapshot: how far it grows
        while not stop.wait(0.1):
            try:
                peak[0] = max(peak[0], os.path.getsize(store + "-wal") / 2**20)
            except OSError:
                pass

    with open(rows) as f:
        row0 = f.readline().strip()

    def drain_wal():
        # A backup's snapshot keeps the WAL from restarting, so it ends a run
        # hundreds of MiB long, and the first commit after it copies all of
        # that into the file (the writer's RESTART checkpoint): left to the
        # next run, that run (a round's baseline among them) pays for the
        # previous one's backup.  Pay it here, one 1-id assign at a time,
        # until journal_size_limit (16 MiB) has trimmed the WAL.
        for k in range(600):
            try:
                if os.path.getsize(store + "-wal") <= 32 << 20:
                    return
            except OSError:
                return
            body = '{"inputs": [{"id": "drain-%d-%d", "embedding_b64": "%s"}]}' % (
                runs[0], k, row0)
            srv.request("POST", "/v1/items:assign", body.encode(),
                        {"Content-Type": "application/json"})
            time.sleep(0.1)

    def measured(rate):
        drain_wal()
        stop, done, peak = threading.Event(), [], [0.0]
        ths = [threading.Thread(target=wal_peak, args=(stop, peak))]
        if rate is not None:
            ths.append(threading.Thread(target=backups, args=(stop, done, rate)))
        for th in ths:
            th.start()
        r = assign(srv)
        stop.set()
        for th in ths:
            th.join()
        r["wal"] = peak[0]
        return r, done

    lines = []
    srv = T.Server(["--model", model, "--workers", str(os.cpu_count() or 2), "--registry", store,
                    "--queue-rows", "1000000"], work)
    try:
        runs[0] += 1
        B.wrk(srv.port, "/v1/items:assign", lua,
              {"ROWS_FILE": rows, "ITEMS": "64", "RUN": "grow", "KNOWN": "0"}, 16, args.grow)
        grown = os.path.getsize(store) / 2**20
        print("store: %.0f MiB" % grown, flush=True)
        for rnd in range(1, args.rounds + 1):
            base, _ = measured(None)
            lines.append((rnd, "none (baseline)", base, base, []))
            print("round %d baseline: %.0f items/s p99 %.1f ms" % (rnd, base["ips"], base["p99"]),
                  flush=True)
            for rate in args.rates.split():
                r, done = measured(rate)
                name = "no cap" if rate == "0" else "--max-rate %s" % rate
                lines.append((rnd, name, r, base, done))
                print("round %d, backups with %s: %.0f items/s (%.2fx) p99 %.1f ms; backups %s"
                      % (rnd, name, r["ips"], r["ips"] / base["ips"], r["p99"],
                         ["%.1f s / %.0f MiB" % b for b in done]), flush=True)
        m = srv.metrics()
        stored = m['semid_registry_assignments_total{tower="item",created="true"}']
    finally:
        srv.stop()
    alone = []
    for _ in range(2):
        tb, mib = backup("0")
        t0 = time.monotonic()
        subprocess.run(["cp", store, os.path.join(work, "cp.db")], check=True)
        subprocess.run(["sync", os.path.join(work, "cp.db")], check=True)
        tc = time.monotonic() - t0
        os.unlink(os.path.join(work, "cp.db"))
        alone.append((tb, tc, mib))
        print("alone: backup %.2f s, cp + sync %.2f s (%.2fx), %.0f MiB" % (tb, tc, tb / tc, mib),
              flush=True)
    shutil.rmtree(work, ignore_errors=True)

    cpu = T.cpu_model()
    out = ["# semid registry backup under load (make bench-backup)\n",
           "- date: %s UTC" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
           "- machine: %s, %d cores, %s" % (cpu, os.cpu_count(), platform.platform()),
           "- command: `make bench-backup` (= `SEMID_BIN=$(BIN) %s tests/server/bench_backup.py "
           "--grow %d --secs %d --rates \"%s\" --rounds %d`)" % (
               sys.executable, args.grow, args.secs, args.rates, args.rounds),
           "- load: 64-item assigns of new ids (wrk -t2 -c16, bench_assign.py's model and "
           "rows, embeddings kept) on a SQLite store grown to %.0f MiB first; %d ids stored "
           "by the end" % (grown, stored),
           "- each round: %d s of assigns alone (its baseline), then %d s with `semid registry "
           "backup` running back to back, once per cap" % (args.secs, args.secs),
           "- WAL peak: the largest size of the store's -wal seen (sampled every 0.1 s); "
           "before each run the WAL an earlier run's backup left is checkpointed and trimmed "
           "(1-id assigns until it is 32 MiB or less), so no run pays for the one before",
           "", "| round | backups | items/s | vs baseline | p99 ms | WAL peak MiB | backups "
           "taken (time / size) |", "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for rnd, name, r, base, done in lines:
        out.append("| %d | %s | %.0f | %.2fx | %.1f | %.0f | %s |" % (
            rnd, name, r["ips"], r["ips"] / base["ips"], r["p99"], r["wal"],
            ", ".join("%.1f s / %.0f MiB" % b for b in done)))
    out += ["", "Alone, after the server stopped, against `cp` + `sync` of the same file:", "",
            "| backup s | cp + sync s | ratio | MiB |", "| ---: | ---: | ---: | ---: |"]
    for tb, tc, mib in alone:
        out.append("| %.2f | %.2f | %.2fx | %.0f |" % (tb, tc, tb / tc, mib))
    T.report(out, args.out)


if __name__ == "__main__":
    main()
