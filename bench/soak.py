#!/usr/bin/python3
"""make soak: semid-server under sustained mixed traffic with model swaps.

A few client threads (keep-alive connections on loopback) send a mix of
requests for --secs seconds:

  encode, JSON and base64, 1 and 64 items        (POST /v1/items:encode)
  assign new ids, 1 and 16 per request            (POST /v1/items:assign)
  assign known ids, 1 and 16 per request          (must return the stored ID)

while the model file is replaced every --swap-every seconds by an atomic
rename: mostly a good model (two versions taking turns), every fourth time
a bad one (truncated, corrupt header, wrong shapes) that the server must
reject while the old model keeps serving.  Every 10-second window records
requests served, errors, p50/p99 latency (client side, Python http.client
included) and the server's VmRSS; the report is a markdown table with the
command, date, machine and a verdict line:

  errors == 0, and VmRSS grew by less than 10% between the end of the second
  minute (the first window that ends at or after 120 s; for a run shorter
  than that, the second window) and the end.

An error is any answer other than 200, a connection error, an encode
answer without one result per input, or a known id whose ID changed.  Bad
model files are expected to fail their reload: that is counted in the
reload column, not as an error.

SEMID_BENCH_SMOKE=1 (make bench-smoke): three 1-second windows whatever
--secs says, a swap every 0.25 s, each client pausing 20 ms between
requests; the report says it is a smoke run, and the verdict leaves VmRSS
growth unjudged (seconds after a start, it measures nothing), but still
fails on an error, a crash or a client that ended early.

Usage: SEMID_BIN=bin /usr/bin/python3 bench/soak.py [--secs 600] [--out FILE]
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
import semid_testlib as T  # noqa: E402

WINDOW = 1.0 if T.SMOKE else 10.0
# a smoke run's clients pause between requests, so that it does not load the machine
PAUSE = 0.02 if T.SMOKE else 0.0
D = 128

# request kinds and their weights in the mix
MIX = [("encode-json-1", 4), ("encode-b64-1", 4), ("encode-json-64", 1), ("encode-b64-64", 2),
       ("assign-new-1", 2), ("assign-new-16", 1), ("assign-known-1", 2), ("assign-known-16", 1)]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


class Stats:
    """Per-window counters, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lat, self.n, self.err, self.samples = [], 0, 0, []

    def add(self, secs, ok, what=None):
        with self.lock:
            self.lat.append(secs)
            self.n += 1
            if not ok:
                self.err += 1
                if len(self.samples) < 5:
                    self.samples.append(what)

    def take(self):
        with self.lock:
            out = (self.lat, self.n, self.err, self.samples)
            self.lat, self.n, self.err, self.samples = [], 0, 0, []
        return out


class Client(threading.Thread):
    def __init__(self, k, srv, stats, halt, seed):
        super().__init__(daemon=True)
        self.k, self.srv, self.stats, self.halt = k, srv, stats, halt
        self.rng = np.random.default_rng(seed)
        self.pick = random.Random(seed)
        self.known = {}  # id -> sid acknowledged to this client
        self.known_ids = []
        self.next_id = 0
        self.kinds = [k for k, w in MIX for _ in range(w)]
        self.rows = self.pool()

    def pool(self):
        """Rows pre-rendered both ways, so building a request costs the
        client little: (JSON array text, base64 text) per row."""
        x = self.rng.standard_normal((256, D)).astype(np.float32)
        return [("[" + ",".join("%.6g" % v for v in r) + "]", T.b64_row(r)) for r in x]

    def body(self, rows, ids=None, b64=True):
        items = []
        for j, (js, b) in enumerate(rows):
            emb = '"embedding_b64": "%s"' % b if b64 else '"embedding": %s' % js
            items.append("{%s%s}" % ('"id": "%s", ' % ids[j] if ids else "", emb))
        return ('{"inputs": [' + ", ".join(items) + "]}").encode()

    def post(self, conn, path, body):
        st, _, data = self.srv.request("POST", path, body,
                                       {"Content-Type": "application/json"}, conn=conn)
        return st, json.loads(data) if data else None

    def one(self, conn, kind):
        n = int(kind.rsplit("-", 1)[1])
        rows = self.pick.sample(self.rows, n)
        if kind.startswith("encode"):
            st, r = self.post(conn, "/v1/items:encode", self.body(rows, b64="b64" in kind))
            ok = st == 200 and len(r["results"]) == n
            return ok, (kind, st, r if not ok else None)
        if kind.startswith("assign-known") and len(self.known_ids) >= n:
            ids = self.pick.sample(self.known_ids, n)
        else:
            ids = ["c%d-%d" % (self.k, self.next_id + j) for j in range(n)]
            self.next_id += n
        st, r = self.post(conn, "/v1/items:assign", self.body(rows, ids))
        if st != 200 or len(r["results"]) != n:
            return False, (kind, st, r)
        for res in r["results"]:
            old = self.known.get(res["id"])
            if old is None:
                self.known[res["id"]] = res["sid"]
                self.known_ids.append(res["id"])
            elif old != res["sid"]:
                return False, (kind, "ID changed", res["id"], old, res["sid"])
        return True, None

    def run(self):
        conn = self.srv.conn(timeout=30)
        while not self.halt.is_set():
            kind = self.pick.choice(self.kinds)
            t0 = time.perf_counter()
            try:
                ok, what = self.one(conn, kind)
            # any exception is an error answer (http.client's IncompleteRead and
            # BadStatusLine are not OSErrors; a 200 with no body gives a
            # TypeError): were it not caught, the thread would end silently
            # and the run would report 0 errors with one client fewer
            except Exception as e:  # noqa: BLE001
                ok, what = False, (kind, repr(e))
                conn.close()
                conn = self.srv.conn(timeout=30)
            self.stats.add(time.perf_counter() - t0, ok, what)
            if PAUSE:
                self.halt.wait(PAUSE)
        conn.close()


def model_files():
    rng = np.random.default_rng(6)
    towers = [T.random_tower(rng, D, [64], 16, [64, 64, 32], act="silu", norm="l2")
              for _ in range(2)]
    good = [T.model_bytes({"item": t}, "soak-%s" % v) for t, v in zip(towers, "AB")]
    wrong = T.Tower(towers[0].layers, [c[:, :15] for c in towers[0].codebooks],
                    towers[0].act, towers[0].norm)
    bad = [good[0][: len(good[0]) // 2],
           good[1][:8] + b"!" + good[1][9:],  # the header's '{' replaced
           T.model_bytes({"item": wrong}, "soak-bad")]
    return good, bad


def reloads(srv):
    m = srv.metrics()
    out = {}
    for k, v in m.items():
        r = re.match(r'semid_model_reloads_total\{result="(\w+)"\}', k)
        if r:
            out[r.group(1)] = int(v)
    return out


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except Exception:
        name = platform.processor() or "unknown"
    return "%s, %d cores (nproc), Linux %s" % (name, os.cpu_count() or 0, platform.release())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=600)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--swap-every", type=float, default=3.0)
    ap.add_argument("--out", default="bench/out/RESULTS-soak.md")
    a = ap.parse_args()
    if T.SMOKE:
        a.secs, a.swap_every = 3 * WINDOW, 0.25
    # the report and its verdict are per window: a shorter run has no row
    if a.secs < WINDOW:
        ap.error("--secs %g: at least one window, %g s" % (a.secs, WINDOW))

    work = tempfile.mkdtemp(prefix="semid-soak-")
    good, bad = model_files()
    model = os.path.join(work, "model.safetensors")
    T.publish(model, good[0])
    # assignments only, no embeddings: about 100 bytes per new id on disk
    # (a 10-minute run assigns a million or so)
    srv = T.Server(["--model", model, "--reload-debounce-ms", "50", "--registry",
                    os.path.join(work, "registry.db"), "--registry-embeddings=false"], work)
    stats, halt = Stats(), threading.Event()
    clients = [Client(k, srv, stats, halt, 100 + k) for k in range(a.clients)]
    swaps = {"good": 0, "bad": 0}
    swap_lock = threading.Lock()

    def swapper():
        k = 0
        while not halt.wait(a.swap_every):
            k += 1
            if k % 4 == 0:
                data, what = bad[(k // 4) % len(bad)], "bad"
            else:
                data, what = good[k % 2], "good"
            T.publish(model, data)
            with swap_lock:
                swaps[what] += 1

    sw = threading.Thread(target=swapper, daemon=True)
    t_start = time.monotonic()
    for c in clients:
        c.start()
    sw.start()
    rows, samples = [], []
    rss_start = rss_kib(srv.proc.pid)
    prev_swaps, prev_reloads = dict(swaps), reloads(srv)
    try:
        end = t_start + a.secs
        next_t = t_start + WINDOW
        while next_t <= end + 1e-6:
            time.sleep(max(0.0, next_t - time.monotonic()))
            lat, n, err, smp = stats.take()
            lat.sort()
            rl = reloads(srv)
            with swap_lock:
                sw_now = dict(swaps)
            rows.append({
                "t": next_t - t_start, "n": n, "rps": n / WINDOW, "err": err,
                "p50": pct(lat, 0.50) * 1e3, "p99": pct(lat, 0.99) * 1e3,
                "max": (lat[-1] if lat else float("nan")) * 1e3,
                "rss": rss_kib(srv.proc.pid),
                "swaps": "%d/%d" % (sw_now["good"] - prev_swaps["good"],
                                    sw_now["bad"] - prev_swaps["bad"]),
                "reloads": "%d/%d" % (rl.get("success", 0) - prev_reloads.get("success", 0),
                                      rl.get("error", 0) - prev_reloads.get("error", 0)),
            })
            prev_swaps, prev_reloads = sw_now, rl
            samples += smp
            r = rows[-1]
            print("t=%4.0fs  %6d req  %5.0f/s  err %d  p50 %.2f ms  p99 %.2f ms  rss %.1f MiB  "
                  "swaps %s  reloads %s" % (r["t"], r["n"], r["rps"], r["err"], r["p50"],
                                           r["p99"], r["rss"] / 1024, r["swaps"], r["reloads"]),
                  flush=True)
            next_t += WINDOW
    finally:
        dead = sum(not c.is_alive() for c in clients)
        halt.set()
        for c in clients:
            c.join(30)
        sw.join(10)
        final_model = srv.json("GET", "/v1/model")[2]
        db_bytes = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
                       if f.startswith("registry.db"))
        rc = srv.stop(60)
        log = srv.log_text()
        shutil.rmtree(work, ignore_errors=True)

    total = sum(r["n"] for r in rows)
    errors = sum(r["err"] for r in rows)
    base = next((r for r in rows if r["t"] >= 120 - 1e-6), rows[1] if len(rows) > 1 else rows[0])
    growth = (rows[-1]["rss"] - base["rss"]) / base["rss"] * 100
    crashes = rc != 0 or "status=500" in log
    ok = errors == 0 and (growth < 10 or T.SMOKE) and not crashes and dead == 0
    lines = [
        "# semid-server soak (`make soak`)",
        "",
        "- command: `make soak SOAK_SECS=%g` (bench/soak.py --secs %g --clients %d "
        "--swap-every %g)" % (a.secs, a.secs, a.clients, a.swap_every),
        "- date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "- machine: %s" % machine(),
        "- model: one item tower, D %d -> 64 -> E 16, 3 levels (64, 64, 32), silu, l2; two good "
        "versions taking turns, every fourth swap a bad file (truncated, corrupt header, wrong "
        "codebook width)" % D,
        "- traffic: %d keep-alive clients (Python http.client, so latency includes the client), "
        "request bodies pre-rendered from 256 random rows per client, mix by weight: %s; registry SQLite without embeddings" % (
            a.clients, ", ".join("%s x%d" % kw for kw in MIX)),
        "- server: defaults (workers = cores), --reload-debounce-ms 50; VmRSS at start %.1f MiB"
        % (rss_start / 1024),
        "",
        "| window end (s) | requests | req/s | errors | p50 (ms) | p99 (ms) | max (ms) | "
        "VmRSS (MiB) | swaps good/bad | reloads ok/failed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append("| %.0f | %d | %.0f | %d | %.2f | %.2f | %.1f | %.1f | %s | %s |" % (
            r["t"], r["n"], r["rps"], r["err"], r["p50"], r["p99"], r["max"], r["rss"] / 1024,
            r["swaps"], r["reloads"]))
    lines += [
        "",
        "Totals: %d requests in %.0f s, %d errors; %d good and %d bad swaps; server exit "
        "status %d; last model %s; registry files %.1f MiB." % (
            total, rows[-1]["t"], errors, swaps["good"], swaps["bad"], rc,
            final_model.get("version"), db_bytes / 2**20),
        "",
        "**Verdict: %s** - errors %d (goal 0); VmRSS %.1f MiB at %.0f s -> %.1f MiB at the end "
        "(%+.1f%%, %s)%s%s." % (
            "PASS" if ok else "FAIL", errors, base["rss"] / 1024, base["t"],
            rows[-1]["rss"] / 1024, growth,
            "not judged: a smoke run" if T.SMOKE else "goal < 10%",
            "; the server crashed or answered 500" if crashes else "",
            "; %d of %d client threads ended early" % (dead, a.clients) if dead else ""),
    ]
    if samples:
        lines += ["", "First errors:", ""] + ["- `%r`" % (s,) for s in samples[:10]]
    if T.SMOKE:
        lines[1:1] = ["", T.SMOKE_BANNER]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    print("wrote", a.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
