#!/usr/bin/python3
"""make lint's gcc -fanalyzer step: compile every file of the compilation
database with gcc's static analyser (the database's own command, so the
same flags and the same -include of tests/lint/analyzer_model.h, plus
-fanalyzer and the FLAGS given), and hold its -Wanalyzer-* findings to
SUPPRESSIONS both ways, as cppcheck_gate.py does for cppcheck's (same file
format: "ID FILE TEXT", ID being the warning's option, -Wanalyzer-...).
The compiler's other warnings are the build's business, not this step's.

usage: gcc_analyzer_gate.py [-jN] DB SUPPRESSIONS [FLAGS...]  (run from the
tree's root)
"""
import json
import re
import shlex
import sys

from cppcheck_gate import judge, suppressions
from tidy_gate import jobs_option, run_each

# "path:line:col: warning: message [-Wanalyzer-...]"
DIAG_RE = re.compile(r"^(.+?):(\d+):\d+: warning: (.*) \[(-Wanalyzer-[a-z-]+)\]$")


def findings(output):
    """{(option, path, line number): message} of gcc's analyser findings."""
    found = {}
    for line in output.splitlines():
        m = DIAG_RE.match(line)
        if m:
            found.setdefault((m.group(4), m.group(1), int(m.group(2))), m.group(3))
    return found


def main():
    args = sys.argv[1:]
    jobs = jobs_option(args)
    if len(args) < 2:
        sys.exit(__doc__)
    db_path, supp_path, flags = args[0], args[1], args[2:]
    suppressions(supp_path)  # a malformed file fails before gcc runs
    with open(db_path) as f:
        db = json.load(f)

    def command(e):
        # the build's command, with gcc for its compiler (CC may name another)
        return (["gcc"] + shlex.split(e["command"])[1:] + ["-fanalyzer", "-o", "/dev/null"] +
                flags, e["directory"])
    found, bad = {}, 0
    for name, p in run_each(db, jobs, command):
        if p.returncode != 0:
            sys.stdout.write(p.stdout)
            print("semid: lint: gcc -fanalyzer failed on %s (exit %d)" % (name, p.returncode))
            bad += 1
        for k, v in findings(p.stdout).items():
            found.setdefault(k, v)
    bad += judge(found, supp_path)
    if bad:
        sys.exit("semid: lint: gcc -fanalyzer: %d finding(s) or unused suppression(s) above"
                 % bad)


if __name__ == "__main__":
    main()
