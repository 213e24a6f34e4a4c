#!/usr/bin/python3
"""make bench-reassign: what `semid registry reassign` costs after a retrain,
against assigning the same number of new ids in the same run.

N ids (default 200 000) with 384-d float32 embeddings (standard normal) are
assigned with `semid registry assign --batch 1000` by one tower (bench_assign.py's
recipe: 384 -> 256 -> 128 -> 32, 3 x 256 codebooks drawn from the latents)
into a fresh SQLite store; then `semid registry diff` and `semid registry
reassign` with a tower of another seed, which changes nearly every code tuple.
Twice, each on a fresh store.  Writes bench/out/RESULTS-reassign.md.

Usage: SEMID_BIN=bin /usr/bin/python3 tests/server/bench_reassign.py [--items N] [--out FILE]

SEMID_BENCH_SMOKE=1 (make bench-smoke): 2000 ids, no `sync` before a run; the
report says its figures mean nothing.
"""
import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_assign as B  # noqa: E402
import semid_testlib as T  # noqa: E402

D = 384


def tower_file(path, seed, version):
    T.write_model(path, {"item": B.spread_tower(np.random.default_rng(seed), D)}, version)


def timed(args):
    t0 = time.monotonic()
    p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)
    if p.returncode:
        sys.exit("%s failed: %s" % (" ".join(args), p.stderr.decode()))
    return time.monotonic() - t0, p.stderr.decode().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200000)
    ap.add_argument("--out", default="bench/out/RESULTS-reassign.md")
    args = ap.parse_args()
    if T.SMOKE:
        args.items = 2000
    semid = os.path.join(T.BIN, "semid")
    work = tempfile.mkdtemp(prefix="semid-bench-reassign-")
    a, b = os.path.join(work, "a.safetensors"), os.path.join(work, "b.safetensors")
    tower_file(a, 1, "model-a")
    tower_file(b, 2, "model-b")
    x = os.path.join(work, "x.npy")
    np.save(x, np.random.default_rng(3).standard_normal((args.items, D)).astype(np.float32))
    ids = os.path.join(work, "ids.txt")
    with open(ids, "w") as f:
        f.write("".join("sku-%d\n" % i for i in range(args.items)))
    rows = []
    try:
        for run in (1, 2):
            db = os.path.join(work, "reg%d.db" % run)
            T.bench_sync()
            ta, _ = timed([semid, "registry", "assign", "--model", a, "--input", x, "--ids", ids,
                           "--db", db, "--batch", "1000", "-o", "/dev/null", "--no-progress"])
            T.bench_sync()
            td, _ = timed([semid, "registry", "diff", "--model", b, "--db", db, "-o",
                           os.path.join(work, "diff.json"), "--no-progress"])
            tr, msg = timed([semid, "registry", "reassign", "--model", b, "--db", db, "-o",
                             os.path.join(work, "moves%d.tsv" % run), "--no-progress"])
            moved = int(msg.split("reassigned ")[1].split()[0])
            rows.append((run, ta, td, tr, moved))
            print("run %d: assign %.2f s, diff %.2f s, reassign %.2f s (%d moved)" % (
                run, ta, td, tr, moved), flush=True)
            os.unlink(db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = T.cpu_model()
    n = args.items
    out = ["# semid registry reassign after a retrain (make bench-reassign)\n",
           "- date: %s UTC" % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
           "- machine: %s, %d cores, %s" % (cpu, os.cpu_count(), platform.platform()),
           "- command: `make bench-reassign` (= `SEMID_BIN=$(BIN) %s tests/server/"
           "bench_reassign.py --items %d`)" % (sys.executable, n),
           "- %d ids, 384-d embeddings kept, SQLite; assign --batch 1000 by one tower, "
           "then diff and reassign (default batch 1000) by a tower of another seed; each "
           "run on a fresh store" % n,
           "", "| run | assign s (ids/s) | diff s (ids/s) | reassign s (ids/s) | moved | "
           "reassign vs assign |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run, ta, td, tr, moved in rows:
        out.append("| %d | %.2f (%.0f) | %.2f (%.0f) | %.2f (%.0f) | %d | %.2fx |" % (
            run, ta, n / ta, td, n / td, tr, moved / tr, moved, (moved / tr) / (n / ta)))
    T.report(out, args.out)


if __name__ == "__main__":
    main()
