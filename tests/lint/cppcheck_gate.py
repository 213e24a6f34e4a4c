#!/usr/bin/python3
"""make lint's cppcheck step: run cppcheck (the command after --) with no
suppressions, then hold its findings to tests/lint/cppcheck.supp both ways.
A finding no entry there covers fails (a new report to fix or to judge), and
so does an entry that covers no finding (the code went or changed: left in
place it would one day hide a different finding).

An entry is "ID FILE TEXT": cppcheck's finding ID in FILE on a line that
contains TEXT.  Matched on the line's text rather than its number, so that
an edit above it does not turn make lint red for the files it touched.

usage: cppcheck_gate.py SUPPRESSIONS -- cppcheck ARGS...  (run from the tree's root)
"""
import re
import subprocess
import sys

TEMPLATE = "{id}:{file}:{line}: {severity}: {message}"
# cppcheck's notes on its own configuration, not findings in the code
NOT_FINDINGS = {"missingInclude", "missingIncludeSystem", "checkersReport"}


def suppressions(path):
    """[(id, file, text)] of the entries; '#' lines are their reasons."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) != 3:
                sys.exit("%s:%d: not \"ID FILE TEXT\": %s" % (path, n, line))
            out.append(tuple(parts))
    return out


def findings(output):
    """{(id, file, line number): message} of cppcheck's findings."""
    found = {}
    for line in output.splitlines():
        m = re.match(r"([A-Za-z0-9_]+):([^:]+):([0-9]+): (.*)$", line)
        if m and m.group(1) not in NOT_FINDINGS:
            found.setdefault((m.group(1), m.group(2), int(m.group(3))), m.group(4))
    return found


def source_line(path, n, cache={}):
    if path not in cache:
        try:
            with open(path, errors="replace") as f:
                cache[path] = f.read().split("\n")
        except OSError:
            cache[path] = []
    lines = cache[path]
    return lines[n - 1] if 0 < n <= len(lines) else ""


def judge(found, supp_path):
    """Hold @found ({(id, file, line number): message}) to the entries of
    @supp_path both ways, printing what fails; -> how many did."""
    supp = suppressions(supp_path)
    used = set()
    bad = 0
    for (cid, path, n), text in sorted(found.items()):
        covered = [e for e in supp
                   if e[0] == cid and e[1] == path and e[2] in source_line(path, n)]
        if covered:
            used.update(covered)
        else:
            print("%s:%d: %s [%s]" % (path, n, text, cid))
            bad += 1
    for e in supp:
        if e not in used:
            print("%s: \"%s %s %s\" covers no finding: remove it (or fix its text)"
                  % (supp_path, *e))
            bad += 1
    return bad


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    supp_path, cmd = sys.argv[1], sys.argv[3:]
    suppressions(supp_path)  # a malformed file fails before cppcheck runs
    p = subprocess.run(cmd + ["--template=" + TEMPLATE], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        sys.exit("semid: lint: cppcheck failed (exit %d)" % p.returncode)
    bad = judge(findings(p.stdout), supp_path)
    if bad:
        sys.exit("semid: lint: cppcheck: %d finding(s) or unused suppression(s) above" % bad)


if __name__ == "__main__":
    main()
