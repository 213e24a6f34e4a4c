#!/usr/bin/python3
"""Benchmark `semid encode` end to end on a TIGER-sized tower.

Writes a random TIGER-sized model (768 -> 512 -> 256 -> 128 -> 32, relu,
3 levels x 256 codewords) and an (N, 768) float32 .npy (default N = 1,000,000,
about 3 GB) into a temp dir, then times `semid encode` to a .npy output with
1 thread and with all cores, with peak RSS and CPU time from wait4.  The
baseline, measured in the same run on the same file, is numpy (OpenBLAS, all
cores) computing the same MLP and greedy codes in 4096-row chunks from a
memory map.  Prints a markdown table.

  SEMID_BIN=bin /usr/bin/python3 cli/bench_encode.py [ROWS]

Needs disk for the input (ROWS * 3 KiB) under $TMPDIR.  SEMID_BENCH_SMOKE=1
(make bench-smoke): 2000 rows whatever ROWS says, and the report says its
figures mean nothing.
"""
import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
import time


def blas_core():
    """The kernel family OpenBLAS picks in this process (numpy's BLAS)."""
    for lib in ("libopenblas.so.0", "libblas.so.3"):
        try:
            f = ctypes.CDLL(lib).openblas_get_corename
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return f().decode()
    return "unknown"


# The numpy baseline must not run the SSE3 "Prescott" kernels that Debian's
# OpenBLAS 0.3.21 falls back to on CPUs it does not know (the Intel hosts
# here): its sgemm is 4-5x slower there than the AVX-512 one, which made the
# baseline about half as fast as numpy can be.  Same rule as sid_blas_tune
# (core/blas.c), which semid's own programs apply: re-run with the right
# OPENBLAS_CORETYPE (it is read when the library loads, before numpy).
if "OPENBLAS_CORETYPE" not in os.environ and blas_core().lower() == "prescott":
    with open("/proc/cpuinfo") as _f:
        _flags = _f.read()
    _want = ("SkylakeX" if " avx512f" in _flags else
             "Haswell" if " avx2" in _flags and " fma" in _flags else None)
    if _want:
        os.environ["OPENBLAS_CORETYPE"] = _want
        os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402

DIMS = [768, 512, 256, 128, 32]
K, L = 256, 3
CHUNK = 4096


def write_model(path, rng):
    tensors, header, off = [], {}, 0
    for i in range(len(DIMS) - 1):
        fan_in = DIMS[i]
        lim = 1 / np.sqrt(fan_in)
        tensors.append((f"item.encoder.{i}.weight",
                        rng.uniform(-lim, lim, (DIMS[i + 1], fan_in)).astype(np.float32)))
        tensors.append((f"item.encoder.{i}.bias",
                        rng.uniform(-lim, lim, DIMS[i + 1]).astype(np.float32)))
    for l in range(L):
        tensors.append((f"item.codebook.{l}",
                        (rng.standard_normal((K, DIMS[-1])) * 0.3 / (l + 1)).astype(np.float32)))
    blobs = []
    for name, a in tensors:
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"semid": json.dumps({
        "format_version": 1, "model_version": "bench-tiger",
        "towers": {"item": {"activation": "relu", "input_norm": "none"}}})}
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
    return tensors


def write_input(path, rows, rng):
    """Stream the input to disk in chunks so the generator stays small too."""
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, DIMS[0])
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr = hdr + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
        done = 0
        while done < rows:
            n = min(65536, rows - done)
            f.write(rng.standard_normal((n, DIMS[0]), dtype=np.float32).tobytes())
            done += n


def numpy_encode(model, path):
    w = {n: a for n, a in model}
    x = np.load(path, mmap_mode="r")
    out = np.empty((x.shape[0], L), np.int32)
    cb = [w[f"item.codebook.{l}"] for l in range(L)]
    cn = [(c * c).sum(1) for c in cb]
    n_layers = len(DIMS) - 1
    for s in range(0, x.shape[0], CHUNK):
        h = np.asarray(x[s:s + CHUNK])
        for i in range(n_layers):
            h = h @ w[f"item.encoder.{i}.weight"].T + w[f"item.encoder.{i}.bias"]
            if i < n_layers - 1:
                np.maximum(h, 0, out=h)
        for l in range(L):
            k = (cn[l] - 2 * h @ cb[l].T).argmin(1)
            out[s:s + CHUNK, l] = k
            h = h - cb[l][k]
    return out


def timed(cmd):
    """-> wall seconds, peak RSS MiB, CPU seconds (user + system) of @cmd,
    the last two the kernel's account of the child (wait4; Debian's
    /usr/bin/time, used before, is not installed by default)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode()
    p.stderr.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{err}")
    return dt, ru.ru_maxrss / 1024.0, ru.ru_utime + ru.ru_stime


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    smoke = os.environ.get("SEMID_BENCH_SMOKE", "") not in ("", "0")
    if smoke:
        rows = 2000
        print("**SMOKE RUN** (SEMID_BENCH_SMOKE): tiny sizes, to check that the benchmark "
              "runs; its figures mean nothing, do not copy them\n")
    semid = os.path.join(os.environ.get("SEMID_BIN", "bin"), "semid")
    ncpu = os.cpu_count()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="semid-bench-") as d:
        mpath, xpath = os.path.join(d, "tiger.safetensors"), os.path.join(d, "x.npy")
        model = write_model(mpath, rng)
        write_input(xpath, rows, rng)
        size_gb = os.path.getsize(xpath) / 1e9
        subprocess.run(["cat", xpath], stdout=subprocess.DEVNULL, check=True)  # warm cache
        res = []
        for threads in (1, ncpu):
            out = os.path.join(d, f"o{threads}.npy")
            dt, rss, cpu = timed([semid, "encode", "--model", mpath, "--input", xpath,
                             "--output", out, "--threads", str(threads), "--no-progress"])
            res.append((f"semid encode --threads {threads}", dt, rss, cpu))
        t0, c0 = time.time(), os.times()
        ref = numpy_encode(model, xpath)
        dt_np, c1 = time.time() - t0, os.times()
        cpu_np = (c1.user - c0.user) + (c1.system - c0.system)
        ours = np.load(os.path.join(d, f"o{ncpu}.npy"))
        agree = float((ours == ref).all(1).mean())
        same = bool((np.load(os.path.join(d, "o1.npy")) == ours).all())
        # numpy's peak memory, in a child so it is measured alone
        code = ("import sys; sys.path.insert(0, %r); import bench_encode as b, numpy as np; "
                "b.numpy_encode(b.write_model('/dev/null', np.random.default_rng(1)), %r)"
                % (os.path.dirname(os.path.abspath(__file__)), xpath))
        _, rss_np, _ = timed([sys.executable, "-c", code])
    print(f"`semid encode` on {rows} x 768 float32 ({size_gb:.2f} GB, page cache warm), "
          f"TIGER tower 768-512-256-128-32, 3 x 256, output .npy; {ncpu} CPUs; numpy's "
          f"OpenBLAS kernels: {blas_core()}")
    print()
    print("| run | wall s | rows/s (wall) | CPU s | rows per CPU-s | peak RSS MiB "
          "| wall vs numpy |")
    print("|---|---|---|---|---|---|---|")
    for name, dt, rss, cpu in res:
        print(f"| {name} | {dt:.2f} | {rows / dt:,.0f} | {cpu:.2f} | {rows / cpu:,.0f} "
              f"| {rss:.0f} | {dt_np / dt:.2f}x |")
    print(f"| numpy baseline (OpenBLAS, all cores, {CHUNK}-row chunks from mmap) | {dt_np:.2f} "
          f"| {rows / dt_np:,.0f} | {cpu_np:.2f} | {rows / cpu_np:,.0f} | {rss_np:.0f} "
          f"| 1.00x |")
    print()
    print(f"codes identical for 1 and {ncpu} threads: {same}; rows agreeing with numpy "
          f"float32: {agree * 100:.3f}% (differences are float32 near-ties)")
    print("peak RSS counts the input file's pages mapped into the process: numpy's np.load "
          "memory map keeps every page it touched (about the file's size), semid encode "
          "drops them as it goes; neither needs that memory of its own (numpy's chunks "
          "take tens of MiB)")


if __name__ == "__main__":
    main()
