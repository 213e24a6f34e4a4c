#!/usr/bin/python3
"""Training benchmarks for semid-train (`make bench-train`).

1. lastfm-2k, the issue's reference setting (3 x 64, E 32, hidden 256-128,
   batch 1024): seconds per das epoch with all cores and with one OpenBLAS
   thread (the other modes' epoch times are in the `make eval` table).
2. The share of time in sgemm: `perf record` over one das run (1 epoch,
   one thread, loading and k-means included), samples
   whose symbol is an OpenBLAS sgemm routine (kernel, copies, beta) against
   all samples of the process.
3. Scale: `semid-train gen` at 1M items, 1M users, 20M clicks (D 64), its
   time and peak memory; then das training on it for 2 and --scale-steps
   steps of the first epoch (`--max-steps`), CPU per step from the
   difference, the full epoch extrapolated, with the peak memory of the
   whole process (data, model, Adam state).

CPU times and peak memory are the kernel's account of each child (wait4).
The markdown goes between <!-- bench-train:begin/end --> in --out.

SEMID_BENCH_SMOKE=1 (make bench-smoke): no Last.fm data needed (--data is not
read): `semid-train gen` makes a tiny stand-in for it and for the scale data,
the scale run times 3 steps, and the report says its figures mean nothing.

usage: bench_train.py --bin BIN --data LASTFM_DIR --work DIR [--out FILE]
                      [--scale-steps N] [--skip-scale]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import types

from eval_table import require_data

REF = ["--levels", "3", "--codebook-size", "64", "--latent-dim", "32", "--hidden", "256,128",
       "--batch-size", "1024", "--no-progress", "--no-eval"]


SMOKE = os.environ.get("SEMID_BENCH_SMOKE", "") not in ("", "0")


def sh(cmd, env=None):
    """Run @cmd; -> .stdout, .stderr, .cpu (its CPU seconds, user + system)
    and .rss_mb (its peak RSS), the kernel's account of the child (wait4:
    Debian's /usr/bin/time, used before, is not installed by default)."""
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e, env=dict(os.environ, **(env or {})))
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        o.seek(0)
        e.seek(0)
        r = types.SimpleNamespace(stdout=o.read().decode(errors="replace"),
                                  stderr=e.read().decode(errors="replace"),
                                  cpu=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}\n{r.stderr[-2000:]}")
    return r


def gen(bin_dir, out, items, users, interactions, dim):
    return sh([os.path.join(bin_dir, "semid-train"), "gen", "--out", out, "--items", str(items),
               "--users", str(users), "--interactions", str(interactions), "--dim", str(dim),
               "--seed", "1"])


def epoch_secs(stderr):
    return [float(m.group(1)) for m in
            re.finditer(r"^epoch \d+/\d+ joint .* ([0-9.]+)s$", stderr, re.M)]


def lastfm_args(args, out):
    d = args.data
    return [os.path.join(args.bin, "semid-train"), "--items", f"{d}/items.npy", "--users",
            f"{d}/users.npy", "--train", f"{d}/train.tsv", "--cold-items",
            f"{d}/cold_items.txt", "--out", out] + REF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default="bench/out/RESULTS-bench-train.md")
    ap.add_argument("--scale-steps", type=int, default=20)
    ap.add_argument("--skip-scale", action="store_true")
    args = ap.parse_args()
    if not SMOKE:
        require_data(args.data, "bench-train")
    os.makedirs(args.work, exist_ok=True)
    if SMOKE:
        args.data = os.path.join(args.work, "smoke-data")
        args.scale_steps = 3
        gen(args.bin, args.data, 400, 300, 6000, 16)
    out = os.path.join(args.work, "bench.st")
    lines = []
    cpu_name = sh(["bash", "-c", "lscpu | grep 'Model name'"]).stdout.split(":")[-1].strip()
    load = os.getloadavg()[0]

    # 1. time per epoch: CPU seconds (user + sys, one OpenBLAS thread) of the
    # epochs alone, as the difference of a 3-epoch and a 1-epoch run (load,
    # indexes and k-means cancel); wall seconds of the epoch lines beside it
    # (on a shared machine those mostly measure the other jobs)
    rows = []
    for mode in ("das", "rqvae", "two-stage"):
        cpu, wall = {}, []
        for ep in (1, 3):
            p = sh(lastfm_args(args, out) + [
                "--mode", mode, "--epochs", str(ep), "--icdm-epochs", "1", "--seed", "1",
                "--threads", "1"])
            cpu[ep] = p.cpu
            wall += epoch_secs(p.stderr)
        rows.append((mode, (cpu[3] - cpu[1]) / 2, statistics.mean(wall)))
        print(f"{mode}: cpu {cpu}, wall {wall}", flush=True)
    lines.append("### Time per epoch, lastfm-2k (1425 items, 1858 users, 40367 clicks, "
                 "39 steps of 1024), one OpenBLAS thread\n")
    lines.append("| mode | CPU s / epoch (user+sys) | wall s / epoch on the shared machine |"
                 "\n|---|---|---|")
    for mode, c, w in rows:
        lines.append(f"| {mode} (joint phase) | {c:.2f} | {w:.1f} |")

    # 2. sgemm share under perf
    perf = shutil.which("perf")
    if perf:
        pdata = os.path.join(args.work, "perf.data")
        a = [perf, "record", "-F", "499", "-o", pdata, "--"] + lastfm_args(args, out) + [
            "--mode", "das", "--epochs", "1", "--seed", "1", "--threads", "1"]
        sh(a)
        rep = sh([perf, "report", "-i", pdata, "--stdio", "--no-children", "--sort",
                  "dso,sym"]).stdout
        share = {}
        total = 0.0
        for m in re.finditer(r"^\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", rep, re.M):
            pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
            total += pct
            key = ("sgemm" if "sgemm" in sym else
                   "other OpenBLAS" if "openblas" in dso else
                   "semid-train" if "semid-train" in dso else
                   "libm" if dso.startswith("libm") else "other")
            share[key] = share.get(key, 0) + pct
        top = [l for l in rep.splitlines() if re.match(r"^\s+[0-9.]+%", l)][:8]
        lines.append("\n### Where one das epoch spends its time (perf, 499 Hz)\n")
        lines.append("| part | share of samples |\n|---|---|")
        for k in ("sgemm", "other OpenBLAS", "semid-train", "libm", "other"):
            if k in share:
                lines.append(f"| {k} | {share[k]:.1f}% |")
        lines.append("\nTop symbols:\n```\n" + "\n".join(t.rstrip() for t in top) + "\n```")
    else:
        lines.append("\n(perf not installed: no sgemm share)")

    # 3. scale
    if not args.skip_scale:
        sdir = os.path.join(args.work, "scale")
        t0 = time.time()
        if not os.path.exists(os.path.join(sdir, "cold_test.tsv")):
            p = (gen(args.bin, sdir, 3000, 3000, 30000, 64) if SMOKE else
                 gen(args.bin, sdir, 1000000, 1000000, 20000000, 64))
            gen_s, gen_mb = time.time() - t0, p.rss_mb
            gen_note = p.stdout.strip()
        else:
            gen_s, gen_mb, gen_note = float("nan"), float("nan"), "(existing data reused)"
        runs = {}
        for steps in (2, args.scale_steps):
            a = [os.path.join(args.bin, "semid-train"), "--items",
                 f"{sdir}/items.npy", "--users", f"{sdir}/users.npy", "--train",
                 f"{sdir}/train.tsv", "--cold-items", f"{sdir}/cold_items.txt", "--out",
                 os.path.join(sdir, "scale.st"), "--mode", "das", "--epochs", "1",
                 "--max-steps", str(steps), "--seed", "1", "--threads", "1"] + REF
            t0 = time.time()
            p = sh(a)
            wall = time.time() - t0
            m = re.search(r"benchmark: (\d+) steps? in ([0-9.]+)s .*epoch of (\d+) steps?",
                          p.stderr)
            runs[steps] = dict(cpu=p.cpu, wall=wall, steps_wall=float(m.group(2)),
                               n_ep=int(m.group(3)), rss=p.rss_mb)
            print(f"scale {steps} steps: {runs[steps]}", flush=True)
        lo, hi = runs[2], runs[args.scale_steps]
        cpu_step = (hi["cpu"] - lo["cpu"]) / (args.scale_steps - 2)
        lines.append("\n### Scale: 1M items, 1M users, 20M clicks (synthetic, D 64)\n")
        lines.append(f"`semid-train gen --items 1000000 --users 1000000 --interactions 20000000 "
                     f"--dim 64 --seed 1`: {gen_s:.1f} s, peak RSS {gen_mb:.0f} MB; "
                     f"{gen_note}\n")
        lines.append("das, 3 x 64, E 32, hidden 256-128, batch 1024, one OpenBLAS thread; "
                     f"{args.scale_steps} steps of the first epoch timed (a fraction "
                     f"{args.scale_steps / hi['n_ep'] * 100:.2f}% of it), CPU per step from the "
                     f"difference to a 2-step run, the epoch extrapolated.\n")
        lines.append("| what | figure |\n|---|---|")
        lines.append(f"| steps per epoch | {hi['n_ep']} |")
        lines.append(f"| CPU per step | {cpu_step:.3f} s |")
        lines.append(f"| one epoch, extrapolated from CPU per step | "
                     f"{cpu_step * hi['n_ep'] / 60:.1f} min |")
        lines.append(f"| wall per step on the shared machine | "
                     f"{hi['steps_wall'] / args.scale_steps:.3f} s |")
        lines.append(f"| load + indexes + table init + k-means (CPU of the 2-step run) | "
                     f"{lo['cpu']:.1f} s |")
        lines.append(f"| peak RSS of the training process | {hi['rss']:.0f} MB |")
    if SMOKE:
        lines.insert(0, "**SMOKE RUN** (SEMID_BENCH_SMOKE): tiny sizes, to check that the "
                     "benchmark runs; its figures mean nothing, do not copy them\n")
    body = (f"<!-- bench-train:begin -->\n## Training benchmarks\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name}, {os.cpu_count()} "
            f"cores shared with other jobs (load average {load:.1f} at the start), "
            f"`make bench-train`.\n\n" + "\n".join(lines) + "\n<!-- bench-train:end -->\n")
    text = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            text = f.read()
    if "<!-- bench-train:begin -->" in text:
        text = re.sub(r"<!-- bench-train:begin -->.*<!-- bench-train:end -->\n",
                      lambda _: body, text, flags=re.S)
    else:
        text = text + ("\n" if text else "") + body
    with open(args.out, "w") as f:
        f.write(text)
    print(body)


if __name__ == "__main__":
    main()
