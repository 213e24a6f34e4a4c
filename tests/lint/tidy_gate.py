#!/usr/bin/python3
"""make lint's clang-tidy step: run clang-tidy (the command after --) over a
copy of the sources whose NOLINT comments are defused, then hold its
findings to those comments both ways, as cppcheck_gate.py does for
cppcheck's.  A finding no NOLINT covers fails, and so does a NOLINT whose
check no longer fires on its line: the code went or changed, and left in
place the comment would one day hide a different finding.  clang-tidy 14
(Debian 12) cannot say which NOLINTs went unused (LLVM issue 69674), hence
the copy.

A NOLINT covers a finding of a check it names, glob patterns allowed, at the
comment's line (NOLINT(check)) or the next (NOLINTNEXTLINE(check)), or at a
line of a macro the finding was expanded through, as clang-tidy has it.
Only named NOLINT and NOLINTNEXTLINE comments are taken: a bare NOLINT, or
NOLINTBEGIN/END, fails (name the check, at its line).

The copy ($COPY) holds the --dirs' .c and .h files and every other file the
database's commands name (the -include), at the same relative paths, and the
tree's .clang-tidy; "NOLINT" is written "NOL1NT" there, so that line and
column numbers stay those of the tree.  Findings are reported with the
tree's paths.

usage: tidy_gate.py [-jN] DB COPY -- clang-tidy ARGS...  (run from the tree's
root; DB: its compile_commands.json, one entry per file to check)
"""
import concurrent.futures
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys

DIRS = ("core", "cli", "server", "trainer")
# "path:line:col: warning: message [check,-warnings-as-errors]"
DIAG_RE = re.compile(r"^(.+?):(\d+):\d+: (warning|error): (.*) \[([^\]]+)\]$")
MACRO_RE = re.compile(r"^(.+?):(\d+):\d+: note: expanded from macro ")
GENERATED_RE = re.compile(r"^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$")
NOLINT_RE = re.compile(r"NOLINT(NEXTLINE|BEGIN|END)?(\(([^)]*)\))?")


def nolints(text):
    """[(comment line, covered line, check pattern)] of @text's NOLINTs, and
    [(line, problem)] of the ones this gate does not take."""
    out, bad = [], []
    for n, line in enumerate(text.split("\n"), 1):
        for m in NOLINT_RE.finditer(line):
            kind, names = m.group(1), m.group(3)
            if kind in ("BEGIN", "END") or not names or not names.strip():
                bad.append((n, "%s: name the check, at its line (NOLINTNEXTLINE(check))"
                            % m.group(0)))
                continue
            for name in names.split(","):
                out.append((n, n + 1 if kind == "NEXTLINE" else n, name.strip()))
    return out, bad


def make_copy(root, copy, db):
    """Write the defused copy and its compilation database; -> the entries."""
    shutil.rmtree(copy, ignore_errors=True)
    os.makedirs(copy)
    names = set()
    for d in DIRS:
        if os.path.isdir(os.path.join(root, d)):
            names.update(os.path.join(d, f) for f in os.listdir(os.path.join(root, d))
                         if f.endswith((".c", ".h")))
    entries = []
    for e in db:
        names.add(os.path.relpath(os.path.join(e["directory"], e["file"]), root))
        args = e["command"].split()
        names.update(args[i + 1] for i, a in enumerate(args[:-1]) if a == "-include")
        entries.append(dict(e, directory=copy))
    for name in sorted(names):
        src = os.path.join(root, name)
        if os.path.isabs(name) or name.startswith("..") or not os.path.isfile(src):
            continue  # a system header, or no file of the tree
        dst = os.path.join(copy, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, errors="surrogateescape") as f:
            text = f.read()
        with open(dst, "w", errors="surrogateescape") as f:
            f.write(text.replace("NOLINT", "NOL1NT"))
    shutil.copy(os.path.join(root, ".clang-tidy"), os.path.join(copy, ".clang-tidy"))
    with open(os.path.join(copy, "compile_commands.json"), "w") as f:
        json.dump(entries, f, indent=1)
    return entries


def findings(output, copy):
    """{(path, line, check): (its lines, [(path, line) of its macro
    expansions])} of clang-tidy's @output, paths relative to the tree."""
    def rel(p):
        return os.path.relpath(p, copy) if os.path.isabs(p) else os.path.normpath(p)
    found, text, macros = {}, None, None
    for line in output.splitlines():
        m = DIAG_RE.match(line)
        if m:
            path, n = rel(m.group(1)), int(m.group(2))
            checks = [c for c in m.group(5).split(",") if not c.startswith("-")]
            text, macros = [], []
            for c in checks:
                found.setdefault((path, n, c), (text, macros))
        elif text is None or GENERATED_RE.match(line):
            continue  # clang-tidy's count of what it found
        m = MACRO_RE.match(line)
        if m:
            macros.append((rel(m.group(1)), int(m.group(2))))
        # the tree's paths, not the copy's, in what is printed
        text.append(line.replace(copy + os.sep, ""))
    return found


def jobs_option(args):
    """-jN at the head of @args, taken off it: N (at least 1), else 1."""
    if args and args[0].startswith("-j"):
        return max(1, int(args.pop(0)[2:] or "1"))
    return 1


def run_each(entries, jobs, command):
    """For each database entry, @jobs at a time, run @command(entry) (an
    (argv, cwd) pair); yields (the entry's file, its CompletedProcess: stdout
    and stderr together, as text), in the entries' order.  The largest files
    start first: in the database's order the biggest came late and ran on
    alone while the other job sat idle."""
    def run(e):
        argv, cwd = command(e)
        return e["file"], subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True,
                                          errors="replace")

    def size(e):
        try:
            return os.path.getsize(os.path.join(e["directory"], e["file"]))
        except OSError:
            return 0
    futures = [None] * len(entries)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for i in sorted(range(len(entries)), key=lambda i: size(entries[i]), reverse=True):
            futures[i] = pool.submit(run, entries[i])
        for f in futures:
            yield f.result()


def main():
    args = sys.argv[1:]
    jobs = jobs_option(args)
    if len(args) < 4 or args[2] != "--":
        sys.exit(__doc__)
    db_path, copy, cmd = args[0], os.path.abspath(args[1]), args[3:]
    root = os.getcwd()
    with open(db_path) as f:
        db = json.load(f)
    entries = make_copy(root, copy, db)

    found, bad = {}, 0
    for name, p in run_each(entries, jobs, lambda e: (cmd + ["-p", copy, e["file"]], copy)):
        got = findings(p.stdout, copy)
        if p.returncode != 0 and not got:
            sys.stdout.write(p.stdout)
            print("semid: lint: clang-tidy failed on %s (exit %d)" % (name, p.returncode))
            bad += 1
        for k, v in got.items():
            found.setdefault(k, v)

    # the NOLINTs of the files checked and of the headers, by the line they cover
    cover = {}
    for path in sorted({os.path.relpath(os.path.join(e["directory"], e["file"]), root)
                        for e in db} | {k[0] for k in found} | {
            os.path.join(d, f) for d in DIRS if os.path.isdir(d) for f in os.listdir(d)
            if f.endswith(".h")}):
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        marks, wrong = nolints(text)
        for n, why in wrong:
            print("%s:%d: %s" % (path, n, why))
            bad += 1
        for n, target, pattern in marks:
            cover.setdefault((path, target), []).append((n, pattern))
    used = set()
    printed = set()
    for (path, n, check), (text, macros) in sorted(found.items()):
        hit = [(where[0], c) for where in [(path, n)] + macros for c in cover.get(where, ())
               if fnmatch.fnmatchcase(check, c[1])]
        if hit:
            used.update(hit)
        else:
            if id(text) not in printed:  # a finding of two checks is one text
                printed.add(id(text))
                print("\n".join(text))
            bad += 1
    for (path, target), marks in sorted(cover.items()):
        for n, pattern in marks:
            if (path, (n, pattern)) not in used:
                print("%s:%d: NOLINT(%s) covers no finding of line %d: remove it"
                      % (path, n, pattern, target))
                bad += 1
    if bad:
        sys.exit("semid: lint: clang-tidy: %d finding(s) or unused NOLINT(s) above" % bad)


if __name__ == "__main__":
    main()
