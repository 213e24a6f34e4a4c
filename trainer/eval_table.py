#!/usr/bin/python3
"""Real-data evaluation of semid-train (`make eval`): train every mode with
several seeds on lastfm-2k, collect the JSON each run prints, and write a
markdown table of means and spreads into a results file.

Runs whose output already exists in --work are not repeated, and a run
that was interrupted resumes from its checkpoint (delete the directory to
start over).
The table goes between the markers <!-- eval-table:begin/end --> of --out
(the rest of the file is kept).

usage: eval_table.py --bin BIN --data DIR --work DIR --seeds "1 2 3"
                     --epochs N --out FILE [--jobs N] [--only-table]
"""
import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import time

BASE = ["--levels", "3", "--codebook-size", "64", "--latent-dim", "32", "--hidden", "256,128",
        "--batch-size", "1024", "--lr", "0.001", "--weight-decay", "0.0001", "--tau", "0.1",
        "--alpha", "1", "--beta-align", "0.5", "--threads", "1"]
# one OpenBLAS thread per run: on a shared machine two spinning OpenBLAS threads
# per process made epochs ~3x slower in wall time; --jobs runs several at once
# (name, extra flags, modes, seeds used: "all" or "first")
# 3x64-tuned: the best das setting found (bench/RESULTS.md, "Toward the 1.8x goal"),
# given to two-stage as well; rqvae is compared at its defaults, since the faster and
# longer training lowers it (0.322 -> 0.276 on seed 1); a wider encoder (1024-512) raises
# it (0.354 over three seeds), so the defaults are not its best (bench/RESULTS.md, section 6).
# 3x64-wide: that encoder for rqvae and das alike, the reference flags otherwise, so the
# table always shows rqvae at the best width found and the two compared at the same one.
TUNED = ["--epochs", "30", "--lr", "0.005", "--view4", "0", "--view2", "2"]
WIDE = ["--hidden", "1024,512"]
SETTINGS = [
    ("3x64", [], ["rqvae", "two-stage", "das"], "all"),
    ("3x64-tuned", TUNED, ["two-stage", "das"], "all"),
    ("3x64-wide", WIDE, ["rqvae", "das"], "all"),
    ("3x256", ["--codebook-size", "256"], ["rqvae", "das"], "first"),
]
FIGS = [
    ("item R@50 warm", ("item_side", "warm", "recall@50")),
    ("item R@50 cold", ("item_side", "cold", "recall@50")),
    ("item R@10 warm", ("item_side", "warm", "recall@10")),
    ("item NDCG@10 warm", ("item_side", "warm", "ndcg@10")),
    ("item NDCG@10 cold", ("item_side", "cold", "ndcg@10")),
    ("cross R@50 warm", ("cross_tower", "warm", "recall@50")),
    ("cross R@50 cold", ("cross_tower", "cold", "recall@50")),
    ("item collisions", ("item", "collision_rate")),
    ("user collisions", ("user", "collision_rate")),
    ("item util l0", ("item", "levels", 0, "utilization")),
    ("item perplexity l0", ("item", "levels", 0, "perplexity")),
    ("item recon SSE", ("item", "recon_sse")),
]


def get(d, path):
    """The figure at @path, or None: a ranking with no user to average over
    (e.g. test users without train clicks) gives null figures."""
    for p in path:
        if d is None:
            return None
        d = d[p]
    return d


def f3(x):
    return "-" if x is None else f"{x:.3f}"


def mean(vals):
    """The mean of the figures that are not null; None if none is."""
    vals = [v for v in vals if v is not None]
    return statistics.mean(vals) if vals else None


def evaluate(args, model):
    """Figures of a trained model, from `semid-train eval` (always the current
    evaluation code, one OpenBLAS thread so ties break the same way)."""
    d = args.data
    cmd = [os.path.join(args.bin, "semid-train"), "eval", "--model", model, "--items",
           f"{d}/items.npy", "--users", f"{d}/users.npy", "--train", f"{d}/train.tsv",
           "--test", f"{d}/test.tsv", "--test-cold", f"{d}/cold_test.tsv", "--cold-items",
           f"{d}/cold_items.txt"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"{model}: semid-train eval exited {p.returncode}")
    return json.loads(p.stdout)


def run_one(args, setting, extra, mode, seed):
    """Train (unless the model exists; an interrupted run resumes from its
    checkpoint), then evaluate the model file."""
    tag = f"{setting}-{mode}-s{seed}"
    model = os.path.join(args.work, tag + ".st")
    timing = os.path.join(args.work, tag + ".json")
    if not os.path.exists(model):
        if args.only_table:
            return None
        d = args.data
        cmd = [os.path.join(args.bin, "semid-train"), "--items", f"{d}/items.npy", "--users",
               f"{d}/users.npy", "--train", f"{d}/train.tsv", "--test", f"{d}/test.tsv",
               "--test-cold", f"{d}/cold_test.tsv", "--cold-items", f"{d}/cold_items.txt",
               "--out", model, "--mode", mode, "--seed", str(seed), "--no-progress",
               "--resume", "--epochs", str(args.epochs)] + BASE + extra  # a later flag wins
        print(f"[{time.strftime('%H:%M:%S')}] {tag}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.stderr.write(p.stderr)
            raise SystemExit(f"{tag}: semid-train exited {p.returncode}")
        # seconds per epoch from the per-epoch lines ("... 13.02s"), joint phase only
        secs = [float(m.group(1)) for m in re.finditer(
            r"^epoch \d+/\d+ joint .* ([0-9.]+)s$", p.stderr, re.M)]
        info = {"seconds_per_epoch": statistics.mean(secs) if secs else None,
                "wall_seconds": time.time() - t0, "log": p.stderr.splitlines()[-4:]}
        with open(timing + ".tmp", "w") as f:
            json.dump(info, f, indent=1)
        os.replace(timing + ".tmp", timing)
    info = {}
    if os.path.exists(timing):
        with open(timing) as f:
            info = json.load(f)
    res = evaluate(args, model)
    res["seconds_per_epoch"] = info.get("seconds_per_epoch")
    print(f"  {tag}: item R@50 warm/cold {f3(get(res, FIGS[0][1]))}/{f3(get(res, FIGS[1][1]))}"
          f", cross {f3(get(res, FIGS[5][1]))}/{f3(get(res, FIGS[6][1]))}, "
          f"{res['seconds_per_epoch'] or 0:.2f} s/epoch", flush=True)
    return res


def run_safe(args, *t):
    """run_one, a failure reported and the run left out (the others go on)."""
    try:
        return run_one(args, *t)
    except SystemExit as e:
        print(f"  FAILED: {e}", flush=True)
        return None


def fmt(vals):
    """Mean ± spread of the runs' figures; null ones (no user ranked) left
    out and counted, "-" when every run's is null."""
    got = [v for v in vals if v is not None]
    note = "" if len(got) == len(vals) else f" ({len(got)} of {len(vals)} runs)"
    if not got:
        return "-"
    if len(got) == 1:
        return f"{got[0]:.3f}{note}"
    return f"{statistics.mean(got):.3f} ± {statistics.stdev(got):.3f}{note}"


def table(results, raw):
    head = ["setting", "mode", "seeds"] + [f[0] for f in FIGS] + ["wall s/epoch (shared box)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (setting, mode), runs in results.items():
        row = [setting, mode, str(len(runs))]
        for _, path in FIGS:
            row.append(fmt([get(r, path) for r in runs]))
        sp = [r["seconds_per_epoch"] for r in runs if r.get("seconds_per_epoch")]
        row.append(fmt(sp) if sp else "-")
        lines.append("| " + " | ".join(row) + " |")
    # raw content reference (the same in every run)
    row = ["raw content", "(no IDs)", "-"]
    for name, path in FIGS:
        if path[0] in ("item_side", "cross_tower"):
            row.append(f3(get(raw, ('raw_' + path[0],) + path[1:])))
        else:
            row.append("-")
    row.append("-")
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def goals(results, raw, title, das_setting, rq_setting="3x64"):
    """The issue's goals at 3x64, from the means over seeds: das and two-stage
    of @das_setting against rqvae of @rq_setting (3x64: its defaults)."""
    def m(mode, path):
        runs = results.get((rq_setting if mode == "rqvae" else das_setting, mode))
        return mean(get(r, path) for r in runs) if runs else None
    iw, ic = ("item_side", "warm", "recall@50"), ("item_side", "cold", "recall@50")
    cw = ("cross_tower", "warm", "recall@50")
    das, rq, ts = "das", "rqvae", "two-stage"
    rows = []

    def check(name, ok, detail):
        if ok is None:
            rows.append(f"| {name} | not run | {detail} |")
        else:
            rows.append(f"| {name} | {'met' if ok else 'MISSED'} | {detail} |")

    def both(*xs):
        return None if any(x is None for x in xs) else True
    d_iw, d_ic, r_iw, r_ic = m(das, iw), m(das, ic), m(rq, iw), m(rq, ic)
    t_iw, t_ic, d_cw, r_cw = m(ts, iw), m(ts, ic), m(das, cw), m(rq, cw)
    raw_w, raw_c = get(raw, ("raw_item_side", "warm", "recall@50")), get(
        raw, ("raw_item_side", "cold", "recall@50"))
    if both(d_iw, r_iw, d_ic, r_ic):
        check("das item R@50 warm >= 1.8x rqvae, cold above", d_iw >= 1.8 * r_iw and d_ic > r_ic,
              f"warm {d_iw:.3f} vs {r_iw:.3f} ({d_iw / r_iw:.2f}x), cold {d_ic:.3f} vs {r_ic:.3f}")
    else:
        check("das item R@50 warm >= 1.8x rqvae, cold above", None, "")
    if both(d_iw, t_iw, d_ic, t_ic):
        check("das above two-stage (warm and cold)", d_iw > t_iw and d_ic > t_ic,
              f"warm {d_iw:.3f} vs {t_iw:.3f}, cold {d_ic:.3f} vs {t_ic:.3f}")
    else:
        check("das above two-stage (warm and cold)", None, "")
    if both(d_iw, d_ic, raw_w, raw_c):
        check("das above raw content (warm and cold)", d_iw > raw_w and d_ic > raw_c,
              f"warm {d_iw:.3f} vs {raw_w:.3f}, cold {d_ic:.3f} vs {raw_c:.3f}")
    u0 = m(das, ("item", "levels", 0, "utilization"))
    if both(u0):
        check("das level-0 utilization >= 90%", u0 >= 0.9, f"{u0 * 100:.1f}%")
    if both(d_cw, r_cw):
        check("das cross R@50 warm >= 3x rqvae", d_cw >= 3 * r_cw,
              f"{d_cw:.3f} vs {r_cw:.3f} ({d_cw / max(r_cw, 1e-9):.1f}x)")
        dc, rc = m(das, ("item", "collision_rate")), m(rq, ("item", "collision_rate"))
        check("das item collisions <= 2x rqvae", dc <= 2 * rc, f"{dc:.3f} vs {rc:.3f}")
    return (f"\n\nGoals of issue 4, {title} (means over seeds):\n\n| goal | status | figures |\n"
            "|---|---|---|\n" + "\n".join(rows))


def require_data(path, prog):
    """Exit 2 at once when the Last.fm data is not at @path: without it
    (a clone without ../shared) every run failed in turn, then "no runs"."""
    if not os.path.isfile(os.path.join(path, "items.npy")):
        print("%s: %s is missing (it sits beside the checkout in CI only; LASTFM=DIR "
              "names another copy)" % (prog, path), file=sys.stderr)
        sys.exit(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seeds", default="1 2 3")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--only", default="", help="e.g. 3x64:das,3x256:rqvae (default: all)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only-table", action="store_true",
                    help="train nothing: evaluate and tabulate the models that exist")
    args = ap.parse_args()
    require_data(args.data, "eval")
    os.makedirs(args.work, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split()]
    todo = [(setting, extra, mode, seed) for setting, extra, modes, which in SETTINGS
            for mode in modes for seed in (seeds if which == "all" else seeds[:1])
            if not args.only or f"{setting}:{mode}" in args.only.split(",")]
    # independent runs, --jobs at a time (each run's files are its own)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda t: run_safe(args, *t), todo))
    results = {}
    for (setting, _, mode, _), res in zip(todo, done):
        if res is not None:
            results.setdefault((setting, mode), []).append(res)
    if not results:
        raise SystemExit("no runs")
    raw = next(iter(results.values()))[0]
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, stdout=subprocess.PIPE,
                         text=True).stdout.split(":")[-1].strip()
    body = (f"<!-- eval-table:begin -->\n"
            f"lastfm-2k, {args.epochs} epochs, hidden 256-128, E 32, batch 1024, AdamW lr 1e-3 "
            f"wd 1e-4, tau 0.1, alpha 1, beta_align 0.5; seeds {args.seeds} (3x64; the larger "
            f"setting with the first seed, das and rqvae); 3x64-tuned: das and two-stage with "
            f"`{' '.join(TUNED)}`, the best das setting found, against rqvae at its defaults "
            f"(3x64; the best of the learning rates and epochs tried, not of the encoder "
            f"widths: a 1024-512 encoder raises it); 3x64-wide: rqvae and das with "
            f"`{' '.join(WIDE)}`, the reference flags otherwise. Mean ± sample std over "
            f"seeds. Warm: test items ranked among all non-cold items, train items excluded; "
            f"cold: among the cold items only. Machine: {cpu}, {os.cpu_count()} cores (shared), "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}; `make eval`.\n\n"
            + table(results, raw)
            + goals(results, raw, "the reference settings (3x64)", "3x64")
            + goals(results, raw, "das and two-stage tuned (3x64-tuned)", "3x64-tuned")
            + goals(results, raw, "das and rqvae with the 1024-512 encoder (3x64-wide)",
                    "3x64-wide", "3x64-wide")
            + "\n<!-- eval-table:end -->\n")
    text = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            text = f.read()
    if "<!-- eval-table:begin -->" in text:
        text = re.sub(r"<!-- eval-table:begin -->.*<!-- eval-table:end -->\n", lambda m: body,
                      text, flags=re.S)
    else:
        text = text + ("\n" if text else "") + "## Real-data evaluation (lastfm-2k)\n\n" + body
    with open(args.out, "w") as f:
        f.write(text)
    print(body)


if __name__ == "__main__":
    main()
