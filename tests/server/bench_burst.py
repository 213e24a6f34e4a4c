#!/usr/bin/python3
"""make bench-burst: semid-server's resident memory after a burst of large
requests, with memory_trim_s 1 (the default is 10: this waits less) and 0
(never), the two alternating in the same run.

Each run: a server on a 384-d model (384 -> 256 -> 128 -> 32, 3 x 256
codes), eight clients sending three JSON requests of 4096 rows each (about
31 MB a body) at once, then VmRSS (/proc/<pid>/status) read at the start,
right after the burst, and after 3 s idle.  Writes a markdown table to --out
and prints each run as it ends.

Run: SEMID_BIN=bin /usr/bin/python3 tests/server/bench_burst.py [--runs 3] [--out FILE]

SEMID_BENCH_SMOKE=1 (make bench-smoke): one run, 256-row requests, 0.2 s idle;
the report says its figures mean nothing.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402


def rss_mib(pid):
    return T.rss_bytes(pid) / (1 << 20)


def one_run(model, body, trim, work, idle_s):
    srv = T.Server(["--model", model, "--registry", "none", "--max-inputs", "4096",
                    "--memory-trim-s", str(trim), "--log-level", "warn"], work)
    try:
        pid = srv.proc.pid
        start = rss_mib(pid)
        t0 = time.monotonic()
        errors = T.post_burst(srv, body)
        burst_s = time.monotonic() - t0
        if errors:
            raise SystemExit("bench-burst: requests failed: %r" % errors[:5])
        peak = rss_mib(pid)
        time.sleep(idle_s)
        idle = rss_mib(pid)
    finally:
        srv.stop()
    return start, peak, idle, burst_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    n_rows, idle_s = (256, 0.2) if T.SMOKE else (4096, 3)
    if T.SMOKE:
        a.runs = 1
    work = tempfile.mkdtemp(prefix="semid-burst-")
    try:
        rng = np.random.default_rng(1)
        model = os.path.join(work, "m384.safetensors")
        T.write_model(model, {"item": T.random_tower(rng, 384, [256, 128], 32, [256, 256, 256],
                                                     act="relu", norm="l2")}, "burst-384")
        x = rng.standard_normal((n_rows, 384)).astype(np.float32)
        body = json.dumps({"inputs": [{"id": "i%d" % i, "embedding": [float(v) for v in r]}
                                      for i, r in enumerate(x)]}).encode()
        rows = []
        for run in range(1, a.runs + 1):
            for trim in (1, 0):
                start, peak, idle, secs = one_run(model, body, trim, work, idle_s)
                rows.append((run, trim, start, peak, idle, secs))
                print("run %d memory_trim_s %d: VmRSS %.0f MiB at start, %.0f after the burst "
                      "(%.1f s), %.0f after %g s idle" % (run, trim, start, peak, secs, idle,
                                                          idle_s),
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ["# semid-server memory after a burst (make bench-burst)", "",
           "- date: %s UTC; machine: %s" % (
               datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
               "%s, %d cores" % (T.cpu_model(), os.cpu_count())),
           "- eight clients x three JSON requests of %d x 384 floats (%.1f MB a body)" % (
               n_rows, len(body) / 1e6), "",
           "| run | memory_trim_s | VmRSS start MiB | after the burst MiB | after %g s idle MiB "
           "| kept of what the burst added |" % idle_s,
           "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run, trim, start, peak, idle, _ in rows:
        out.append("| %d | %d | %.0f | %.0f | %.0f | %.0f%% |" % (
            run, trim, start, peak, idle, 100 * (idle - start) / max(peak - start, 1e-9)))
    T.report(out, a.out)


if __name__ == "__main__":
    main()
