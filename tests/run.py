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
started last does not run on alone at the end: how long each took is kept in
the JSON file SEMID_TEST_TIMES names (make test: $(O)/test-times.json; a
suite is known by its path from tests/ on, so the sanitized build's run
uses the plain build's times).  A suite with no time yet counts as long:
python suites (servers, trainers) before Check binaries, in the order given.
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


def run_suite(path):
    if path.endswith(".py"):
        cmd = [sys.executable, path]
    else:
        cmd = [path]
    env = dict(os.environ)
    env.setdefault("CK_DEFAULT_TIMEOUT", "120")
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.decode("utf-8", "replace")
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
              f"({dt:.1f}s, exit {proc.returncode})", flush=True)
    return passed, failed, skipped


OUTPUT = threading.Lock()  # one suite's output at a time, whole


def suite_key(path):
    """A suite's name in the times file: its path from tests/ on."""
    i = path.rfind("tests/")
    return path[i + len("tests/"):] if i >= 0 else path


def load_times(path):
    try:
        with open(path) as f:
            times = json.load(f)
        return {k: float(v) for k, v in times.items()} if isinstance(times, dict) else {}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # none yet, or unreadable: the order given


def save_times(path, times):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as f:
            json.dump(times, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        print("tests: cannot keep the suites' times in %s: %s" % (path, e), file=sys.stderr)


def start_order(suites, times):
    """Longest first; a suite never timed before the timed ones, python
    suites first among those."""
    def rank(i):
        t = times.get(suite_key(suites[i]))
        if t is None:
            return (0, not suites[i].endswith(".py"), 0.0, i)
        return (1, False, -t, i)
    return sorted(range(len(suites)), key=rank)


def main():
    total_p = total_f = total_s = 0
    bad = []
    suites = sys.argv[1:]
    jobs = max(1, int(os.environ.get("SEMID_TEST_JOBS", "1") or 1))
    times_file = os.environ.get("SEMID_TEST_TIMES")
    times = load_times(times_file) if times_file else {}
    order = start_order(suites, times) if jobs > 1 else range(len(suites))
    results = [None] * len(suites)

    def timed(i):
        t0 = time.time()
        results[i] = run_suite(suites[i])
        times[suite_key(suites[i])] = round(time.time() - t0, 1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in [pool.submit(timed, i) for i in order]:
            fut.result()
    if times_file:
        save_times(times_file, times)
    for path, (p, f, k) in zip(suites, results):
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
    sys.exit(main())
