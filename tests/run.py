#!/usr/bin/python3
"""Run every test suite given on the command line and sum the results.

A suite is either a Check binary (its summary line "NN%: Checks: N, Failures:
F, Errors: E" is parsed, and each "SKIP <test>: <why>" line that
CHECK_SKIP of tests/check_main.h prints moves a test from passed to skipped)
or a python unittest script under tests/ (run with Debian's python3; "Ran N
tests" and "FAILED (failures=F, errors=E, skipped=K)" parsed).
Each suite's own output is shown.  The closing line is "tests: N passed, M
failed, K skipped" (skipped tests are not counted as passed); the exit status
is non-zero when anything failed, a suite crashed without a summary, or a
suite ran no test at all.

SEMID_TEST_JOBS suites run at once (default 1).  Many suites spend most of
their time waiting (on timeouts they test, on fsync, on a server), so two on
two cores take about half the time; each suite's output is shown whole when
it ends, and the suites are independent (their own temporary directories,
servers on free ports, their own PostgreSQL clusters).

With more than one at once, the longest start first, so that a long suite
started last does not run on alone at the end: how long each took, wall and
CPU time (its own and that of the processes it waited for), is kept per build
(SEMID_SANITIZE: under ASan a suite takes about twice the CPU) in the JSON
file SEMID_TEST_TIMES names (make test: $(O)/test-times.json; a suite is known
by its path from tests/ on).  A suite that file has no time for, in this
build, takes it from SEMID_TEST_SEED (make test: tests/suite-times.json, kept
in the repository, `make test-seed` refreshes it from the local file), so a
fresh clone (CI's) schedules as well as a second run; its wall time for order
from another build when this one has none.  A suite with no time at all counts
as long: python suites (servers, trainers) before Check binaries, in the order
given.  Beside those SEMID_TEST_JOBS, up to three times as many more start
while the CPU time per second of the running suites' last runs adds up to no
more than the cores (SEMID_TEST_CPUS, default: this process's CPU affinity),
so that a suite that sleeps through the timeouts it tests does not hold a slot
a busy one could use; a suite with no CPU time for this build counts as busy.

`tests/run.py --merge-times FROM INTO` writes INTO the times of FROM laid
over its own, dropping suites whose file is gone (make test-seed).
"""
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time

CHECK_RE = re.compile(r"(\d+)%: Checks: (\d+), Failures: (\d+), Errors: (\d+)")
RAN_RE = re.compile(r"^Ran (\d+) tests? in", re.M)
VERDICT_RE = re.compile(r"^(?:FAILED|OK) \((.*)\)", re.M)
CHECK_SKIP_RE = re.compile(r"^SKIP \S+: ", re.M)


# What a suite starts with: the signals its tests send at their default.  A
# runner started with them ignored (`nohup make test`; `make test &` in a
# script, whose shell ignores SIGINT and SIGQUIT in the background; `perf
# record make test`, which leaves SIGUSR2 ignored in what it runs) would
# hand that on, the programs rightly keep an ignored signal ignored, and
# every test of what those signals do would fail.  The runner itself keeps
# what it was given.
DEFAULT_SIGNALS = ["env", "--default-signal=HUP,INT,QUIT,TERM,USR1,USR2"]


def run_suite(path):
    if path.endswith(".py"):
        cmd = DEFAULT_SIGNALS + [sys.executable, path]
    else:
        cmd = DEFAULT_SIGNALS + [path]
    env = dict(os.environ)
    env.setdefault("CK_DEFAULT_TIMEOUT", "120")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode("utf-8", "replace")
    proc.stdout.close()
    # wait4: the CPU time of the suite and of every process it waited for
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = ru.ru_utime + ru.ru_stime
    dt = time.time() - t0
    passed = failed = skipped = 0
    m = CHECK_RE.findall(out)
    if m:
        for _, checks, fails, errs in m:
            failed += int(fails) + int(errs)
            passed += int(checks) - int(fails) - int(errs)
        skipped = min(len(CHECK_SKIP_RE.findall(out)), passed)
        passed -= skipped
    elif RAN_RE.search(out):
        ran = int(RAN_RE.search(out).group(1))
        vm = VERDICT_RE.search(out)
        if vm:
            for part in vm.group(1).split(","):
                k, _, v = part.strip().partition("=")
                if k in ("failures", "errors", "unexpected successes"):
                    failed += int(v)
                elif k in ("skipped", "expected failures"):
                    skipped += int(v)
        passed = ran - failed - skipped
    if proc.returncode != 0 and failed == 0:
        failed = 1  # crashed or exited non-zero without reporting a failure
    with OUTPUT:
        sys.stdout.write(out)
        if passed + failed + skipped == 0:
            print(f"== {path}: ran no test")
            failed = 1  # a suite that runs nothing is broken, not green
        print(f"== {path}: {passed} passed, {failed} failed, {skipped} skipped "
              f"({dt:.1f}s, {cpu:.1f}s CPU, exit {proc.returncode})", flush=True)
    return passed, failed, skipped, cpu


OUTPUT = threading.Lock()  # one suite's output at a time, whole


def suite_key(path):
    """A suite's name in the times file: its path from tests/ on."""
    i = path.rfind("tests/")
    return path[i + len("tests/"):] if i >= 0 else path


# The build the suites run (SEMID_SANITIZE, exported by the Makefile): times
# are kept per build.
BUILD = os.environ.get("SEMID_SANITIZE", "")


def read_times(path):
    """{suite: {build: [wall seconds, CPU seconds or None]}} from a times
    file, {} when there is none or it cannot be read.  Files of earlier
    runners are read too: [wall, cpu, build] per suite, or a wall time."""
    try:
        with open(path) as f:
            raw = json.load(f)
        out = {}
        for k, v in raw.items():
            if isinstance(v, dict):
                out[k] = {str(b): [float(t[0]), None if t[1] is None else float(t[1])]
                          for b, t in v.items()}
            elif isinstance(v, list):
                out[k] = {v[2] if len(v) > 2 else "": [float(v[0]),
                                                       None if v[1] is None else float(v[1])]}
            else:
                out[k] = {None: [float(v), None]}  # wall only, of no known build
        return out
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
        return {}


def write_times(path, times):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as f:  # a suite a line
            f.write("{\n%s\n}\n" % ",\n".join(
                "%s: %s" % (json.dumps(k), json.dumps({b: t for b, t in v.items() if b is not None},
                                                     sort_keys=True))
                for k, v in sorted(times.items())))
        os.replace(tmp, path)
    except OSError as e:
        print("tests: cannot keep the suites' times in %s: %s" % (path, e), file=sys.stderr)


def suite_times(local, seed):
    """{suite: (wall, CPU or None)} for this build: the local file's, else
    the seed's; without either, a wall time of another build (for order)."""
    out = {}
    for k in set(local) | set(seed):
        for src in (local, seed):
            t = src.get(k, {}).get(BUILD)
            if t:
                out[k] = (t[0], t[1])
                break
        else:
            walls = [t[0] for src in (local, seed) for t in src.get(k, {}).values()]
            if walls:
                out[k] = (walls[0], None)
    return out


def merge_times(src, dst):
    """Lay the times file @src over @dst, dropping suites whose file is gone
    (a suite is named by its path from tests/ on)."""
    merged = read_times(dst)
    for k, v in read_times(src).items():
        merged.setdefault(k, {}).update(v)
    here = os.path.dirname(os.path.abspath(__file__))
    merged = {k: v for k, v in merged.items()
              if any(os.path.exists(os.path.join(here, k + ext)) for ext in ("", ".c"))}
    write_times(dst, merged)


def start_order(suites, times):
    """Longest first; a suite never timed before the timed ones, python
    suites first among those."""
    def rank(i):
        t = times.get(suite_key(suites[i]))
        if t is None:
            return (0, not suites[i].endswith(".py"), 0.0, i)
        return (1, False, -t[0], i)
    return sorted(range(len(suites)), key=rank)


def cpu_share(times, suite):
    """The cores a suite kept busy on average in its last run (CPU / wall),
    1.0 when not known."""
    t = times.get(suite_key(suite))
    if not t or t[1] is None or t[0] <= 0:
        return 1.0
    return min(1.0, t[1] / t[0])


def main():
    total_p = total_f = total_s = 0
    bad = []
    suites = sys.argv[1:]
    jobs = max(1, int(os.environ.get("SEMID_TEST_JOBS", "1") or 1))
    cores = float(os.environ.get("SEMID_TEST_CPUS") or len(os.sched_getaffinity(0)))
    times_file = os.environ.get("SEMID_TEST_TIMES")
    local = read_times(times_file) if times_file else {}
    seed = read_times(os.environ["SEMID_TEST_SEED"]) if os.environ.get("SEMID_TEST_SEED") else {}
    times = suite_times(local, seed)
    pending = list(start_order(suites, times) if jobs > 1 else range(len(suites)))
    results = [None] * len(suites)
    share = [cpu_share(times, p) for p in suites]
    # kept as read, with this build's times of each suite run now replaced
    last = local

    def timed(i):
        t0 = time.time()
        results[i] = run_suite(suites[i])
        last.setdefault(suite_key(suites[i]), {})[BUILD] = [round(time.time() - t0, 1),
                                                           round(results[i][3], 1)]

    # jobs suites at a time, and beside them (up to four times as many in
    # all) suites that mostly wait, as long as the CPU the running ones used
    # in their last run adds up to no more than the cores: a suite that sleeps
    # through the timeouts it tests no longer holds a slot a busy one could use
    running = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4 * jobs) as pool:
        while pending or running:
            while pending:
                load = sum(share[i] for i in running)
                pick = next((i for i in pending
                             if len(running) < jobs or
                             (len(running) < 4 * jobs and load + share[i] <= cores)), None)
                if pick is None:
                    break
                pending.remove(pick)
                running[pick] = pool.submit(timed, pick)
            done, _ = concurrent.futures.wait(running.values(),
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for i in [i for i, f in running.items() if f in done]:
                running.pop(i).result()
    if times_file:
        write_times(times_file, last)
    for path, (p, f, k, _) in zip(suites, results):
        total_p += p
        total_f += f
        total_s += k
        if f:
            bad.append(path)
    if bad:
        print("failing suites: " + " ".join(bad))
    print(f"tests: {total_p} passed, {total_f} failed, {total_s} skipped")
    return 1 if total_f or not total_p else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--merge-times"] and len(sys.argv) == 4:
        merge_times(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
