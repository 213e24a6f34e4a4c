#!/usr/bin/python3
"""The documents other people code against (README.md, config/README.md,
deploy/README.md, proto/*.md, bench/RESULTS.md) agree with the programs:

- every relative link resolves, anchors included, and every repository path
  they name exists (bench/out/ is generated and skipped);
- every --flag they give a semid program is one its --help lists (flags of
  other tools are a short list here), and every other --flag is one that
  some semid program or repository script takes;
- config/README.md's table holds exactly the keys of `semid-server --help`,
  with the defaults and ranges of server/config.c; config/semid-server.json
  holds every key at that default except those the README names;
- deploy/README.md's alert table lists exactly the alerts of
  deploy/prometheus/alerts.yml;
- proto/api.md's metric table lists exactly the metrics a live server
  exports, and every semid_* or process_* metric any document names exists; its table
  of log events names every field the server's log lines carry;
- README.md's terminal sessions ($ lines), run in order after `make run`,
  read no file that neither `make run` nor an earlier command makes, and
  what they write (and the semid-train section's data/ and models/) git
  ignores;
- README.md's quick start shows the commands `make run` echoes (the data
  generator, the trainer, the server) and the lines it prints, as the
  Makefile has them (`make -n -B run`), and installs `make` itself first,
  which a fresh Debian 12 lacks.

Fast (a few seconds: one server start).  Needs the programs in $SEMID_BIN
(make exports it).
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/meta/test_docs.py
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("SEMID_BIN", os.path.join(ROOT, "bin"))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))
os.environ.setdefault("SEMID_BIN", BIN)
import semid_testlib as T  # noqa: E402

DOCS = ["README.md", "config/README.md", "deploy/README.md", "bench/RESULTS.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "proto", "*.md")))
TOP = ("core", "cli", "server", "trainer", "tests", "bench", "proto", "config", "deploy")

# Flags of tools that are not semid's, as the documents use them.
OTHER_FLAGS = {
    "--data",  # curl
    "--from", "--rm", "--restart", "--image", "--overrides",  # kubectl
    "--system", "--uid", "--gid", "--home-dir", "--shell",  # useradd, groupadd
    "--now",  # systemctl
    "--pipe", "--wait", "--collect",  # systemd-run
    "--sort",  # perf report
    "--cflags", "--libs",  # pkg-config
    "--stop-timeout",  # docker run
}
# semid_* names that are not metrics: registry tables, test helpers.
NOT_METRICS = {"semid_meta", "semid_assignment", "semid_assignment_id", "semid_assignment_sid",
               "semid_embedding", "semid_testlib", "semid_files"}


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def run_help(*args):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return p.stdout.decode()


def split_code(text):
    """-> (prose with code blocks blanked, list of code texts: fenced and
    indented blocks, and inline spans)."""
    prose, code = [], []
    fence = None
    for line in text.split("\n"):
        m = re.match(r"\s*(```+|~~~+)", line)
        if fence is None and m:
            fence = m.group(1)
            prose.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                code.append(line)
            prose.append("")
        elif line.startswith("    "):
            code.append(line)
            prose.append("")
        else:
            prose.append(line)
    prose = "\n".join(prose)
    code += re.findall(r"`([^`\n]+)`", prose)
    return prose, code


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(rel):
    out, seen = set(), {}
    prose, _ = split_code(read(rel))
    for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", prose, re.M):
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else "%s-%d" % (s, n))
    return out


def commands(line):
    """Yield (program, words) for each semid program run on one line of code."""
    for m in re.finditer(r"(?:^|(?<=[\s(`$]))(?:\S*bin/)?(semid-server|semid-train|semid)(?=\s|$)",
                         line):
        rest = line[m.end():]
        rest = re.split(r"\s(?:\||;|&&|>|2>|#)\s|`", rest)[0]
        words = rest.split()
        prog = m.group(1)
        if prog == "semid" and words and words[0] in ("encode", "registry"):
            prog = "semid " + words[0]
        yield prog, words


def flags_in(words):
    return {w.split("=")[0] for w in words if re.match(r"--[a-z][a-z0-9-]*(=|$)", w)}


class Helps:
    """The flags each program's --help lists."""

    def __init__(self):
        srv = run_help(os.path.join(BIN, "semid-server"), "--help")
        train = run_help(os.path.join(BIN, "semid-train"), "--help")
        enc = run_help(os.path.join(BIN, "semid"), "help", "encode")
        reg = run_help(os.path.join(BIN, "semid"), "help", "registry")
        top = run_help(os.path.join(BIN, "semid"), "--help")
        self.server_help = srv
        self.flags = {
            "semid-server": set(re.findall(r"--[a-z][a-z0-9-]*", srv)),
            "semid encode": set(re.findall(r"--[a-z][a-z0-9-]*", enc)),
            "semid registry": set(re.findall(r"--[a-z][a-z0-9-]*", reg)),
            "semid": set(re.findall(r"--[a-z][a-z0-9-]*", top)) | {"--help"},
            "semid-train": self.train_flags(train),
        }
        self.all = set().union(*self.flags.values())

    @staticmethod
    def train_flags(text):
        out = set(re.findall(r"--[a-z][a-z0-9-]*", text)) | {"--help"}
        for line in text.splitlines():
            m = re.match(r"\s+--(\S+ \.\. \S+|\S+(?: / \S+)*)\s", line)
            if not m:
                continue
            spec = m.group(1)
            r = re.match(r"([a-z]+)(\d+) \.\. [a-z]+(\d+)$", spec)
            if r:
                out |= {"--%s%d" % (r.group(1), i)
                        for i in range(int(r.group(2)), int(r.group(3)) + 1)}
            else:
                out |= {"--" + s for s in spec.split(" / ")}
            if re.search(r"\[(true|false)\]", line):  # booleans also take --no-KEY
                out.add("--no-" + spec)
        m = re.search(r"^Model defaults: (\{.*\})$", text, re.M)
        for k in json.loads(m.group(1)) if m else ():
            out.add("--" + k.replace("_", "-"))
        return out


def script_flags():
    """Flags the repository's python scripts take (argparse)."""
    out = set()
    for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        with open(p, encoding="utf-8") as f:
            out |= set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", f.read()))
    return out


def server_defaults():
    """Defaults from srv_config_defaults() and ranges from the keys[] table of
    server/config.c: {key: value}, {key: (min, max)}."""
    src = read("server/config.c")
    body = re.search(r"void srv_config_defaults\(.*?\n\{(.*?)\n\}", src, re.S).group(1)
    table = re.search(r"static const struct key keys\[\] = \{(.*?)\n\};", src, re.S).group(1)
    ranges, types = {}, {}
    for name, typ, lo, hi in re.findall(
            r"\{\"(\w+)\",\s*(K_\w+),\s*F\(\w+\),\s*([^,]+),\s*([^,]+),", table):
        types[name] = typ
        ranges[name] = (int(eval(lo.replace("L", ""))), int(eval(hi.replace("L", ""))))
    defaults = {k: {"K_BOOL": False, "K_STR": ""}.get(t, 0) for k, t in types.items()}
    for k, v in re.findall(r"c->(\w+) = ([^;]+);", body):
        if k == "workers":
            defaults[k] = "CPUs it may use"
        elif k == "log_level":
            defaults[k] = v.split("_")[-1].lower()
        elif types[k] == "K_BOOL":
            defaults[k] = v.strip() == "1"
        else:
            defaults[k] = int(eval(v.replace("L", "")))
    for k, v in re.findall(r"snprintf\(c->(\w+), sizeof\(c->\w+\), \"([^\"]*)\"\)", body):
        defaults[k] = v
    return defaults, ranges


def section(text, heading):
    """The text of a markdown section, from its heading to the next one of
    the same or a higher level."""
    m = re.search(r"^(#+) %s\s*$" % re.escape(heading), text, re.M)
    if m is None:
        m = re.search(r"^(#+) %s\b.*$" % re.escape(heading), text, re.M)
    level = len(m.group(1))
    end = re.compile(r"^#{1,%d} " % level, re.M).search(text, m.end())
    return text[m.end():end.start() if end else len(text)]


def flat(text):
    """Shell text with continuations joined and runs of blanks made one."""
    return re.sub(r"\s+", " ", text.replace("\\\n", " ")).strip()


def number(text):
    text = text.strip()
    m = re.match(r"^(\d+)\^(\d+)$", text)
    return int(m.group(1)) ** int(m.group(2)) if m else int(text)


class DocsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.helps = Helps()

    def test_relative_links_resolve(self):
        for doc in DOCS:
            prose, _ = split_code(read(doc))
            for target in re.findall(r"\]\(([^)\s]+)\)", prose):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                rel = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
                with self.subTest(doc=doc, link=target):
                    self.assertTrue(os.path.exists(os.path.join(ROOT, rel)), rel)
                    if anchor:
                        self.assertIn(anchor, anchors(rel))

    def test_named_paths_exist(self):
        for doc in DOCS:
            text = read(doc)
            here = os.path.dirname(doc)
            subdirs = tuple(d for d in os.listdir(os.path.join(ROOT, here or "."))
                            if here and os.path.isdir(os.path.join(ROOT, here, d)))
            pat = r"(?<![\w./$~-])((?:%s)/[\w.*/-]*)" % "|".join(TOP + subdirs)
            for path in set(re.findall(pat, text)):
                path = path.rstrip(".,:;")
                if path.startswith("bench/out/") or path.count("/") < 1:
                    continue
                base = ROOT if path.split("/")[0] in TOP else os.path.join(ROOT, here)
                with self.subTest(doc=doc, path=path):
                    self.assertTrue(glob.glob(os.path.join(base, path), recursive=True),
                                    "%s names %s, which does not exist" % (doc, path))

    def test_flags_exist(self):
        known = self.helps.all | script_flags() | OTHER_FLAGS
        for doc in DOCS:
            _, code = split_code(read(doc))
            # join shell continuations so a command's flags stay with it
            code = "\n".join(code).replace("\\\n", " ").split("\n")
            for line in code:
                for prog, words in commands(line):
                    for flag in flags_in(words) - self.helps.flags[prog]:
                        with self.subTest(doc=doc, line=line.strip()):
                            self.fail("%s: %s has no %s" % (doc, prog, flag))
                for flag in flags_in(line.split()) - known:
                    with self.subTest(doc=doc, line=line.strip()):
                        self.fail("%s: no program takes %s" % (doc, flag))

    def config_table(self):
        rows = {}
        for line in read("config/README.md").splitlines():
            m = re.match(r"\| `(\w+)` \| ([^|]*) \| (.*) \|$", line)
            if m:
                rows[m.group(1)] = (m.group(2).strip(), m.group(3))
        return rows

    def test_config_keys_are_the_servers(self):
        rows = self.config_table()
        flags = {f[2:].replace("-", "_") for f in self.helps.flags["semid-server"]
                 if f not in ("--help", "--version", "--config", "--check-config")} - {
                     "bench_encode"}
        self.assertEqual(set(rows), flags)
        self.assertEqual(set(rows), set(json.loads(read("config/semid-server.json"))))

    def test_config_defaults_and_ranges(self):
        defaults, ranges = server_defaults()
        for key, (shown, meaning) in self.config_table().items():
            want = defaults[key]
            with self.subTest(key=key):
                if key == "model":
                    self.assertEqual(shown, "(required)")
                elif isinstance(want, bool):
                    self.assertEqual(shown, "`%s`" % str(want).lower())
                elif isinstance(want, int):
                    self.assertEqual(int(shown), want)
                elif want == "":
                    self.assertTrue(shown.startswith("empty"), shown)
                elif key == "workers":
                    self.assertIn(want, shown)
                else:
                    self.assertEqual(shown, "`%s`" % want)
                r = re.search(r"(\d+(?:\^\d+)?)\.\.(\d+(?:\^\d+)?)", meaning)
                if r and isinstance(want, int) and not isinstance(want, bool):
                    self.assertEqual((number(r.group(1)), number(r.group(2))), ranges[key])

    def test_config_example_is_at_the_defaults(self):
        defaults, _ = server_defaults()
        text = read("config/README.md")
        clause = re.search(r"at its default, except ([^)]*)\)", text)
        self.assertIsNotNone(clause, "config/README.md says which keys differ")
        for key, value in json.loads(read("config/semid-server.json")).items():
            if value != defaults[key]:
                with self.subTest(key=key):
                    self.assertIn(key, clause.group(1))

    def test_quick_start_shows_what_make_run_runs(self):
        # make -n -B prints every recipe line (the silent ones too) without
        # running one; sub-makes inherit -n.  The environment is cleaned of
        # make's own variables so that the defaults (bin/, demo/, port 8080)
        # are the ones the README shows.
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "O", "BIN",
                            "DEMO", "DEMO_EPOCHS", "LISTEN")}
        p = subprocess.run(["make", "-C", ROOT, "-n", "-B", "--no-print-directory", "run"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout)
        quick = flat(section(read("README.md"), "Quick start"))
        script = p.stdout.replace("\\\n", " ").splitlines()
        echoed = [flat(ln) for ln in script if re.match(r"(exec )?bin/semid", ln)]
        printed = [m.group(1) for ln in script for m in [re.match(r'echo "(semid: .*)"$', ln)]
                   if m]
        self.assertEqual(len(echoed), 3, "make run: generator, trainer, server")
        self.assertEqual(len(printed), 2, "make run: its trained and serving lines")
        for line in echoed + printed:
            with self.subTest(line=line):
                self.assertTrue(line in quick, "README.md's quick start does not show it")

    def test_readme_sessions_make_what_they_read(self):
        # The README's terminal sessions ($ lines) are to be run as they are,
        # in order, after `make run`: every file a command reads (a model,
        # a store, embeddings, ids, a file it shows) is one `make run` makes
        # under demo/ or an earlier command writes.  The registry diff
        # example read models/new.safetensors, which no command made.
        lines = []
        for block in re.findall(r"((?:^    .*\n)+)", read("README.md"), re.M):
            block = block.replace("\\\n", " ")
            lines += [ln[6:] for ln in block.splitlines() if ln.startswith("    $ ")]
        self.assertGreater(len(lines), 10)
        made = set()
        for line in lines:
            loop = re.match(r"for (\w+) in ([^;]*); do (.*); done", line)
            for value in loop.group(2).split() if loop else [None]:
                cmd = loop.group(3).replace("$" + loop.group(1), value) if loop else line
                words = cmd.split()
                reads, writes = [], []
                for flag, arg in zip(words, words[1:]):
                    if flag in ("--out", "-o", "--output", ">") and arg not in ("-", "/dev/null"):
                        writes.append(arg)
                    elif flag in ("--model", "--input", "--ids", "--items", "--users", "--train"):
                        reads.append(arg)
                    elif flag == "--db":  # assign creates its store
                        (writes if "registry assign" in cmd else reads).append(arg)
                if words[:2] == ["mkdir", "-p"]:
                    writes += [w + "/" for w in words[2:]]
                if words[0] in ("head", "cat"):
                    reads.append(words[-1])
                for path in reads:
                    with self.subTest(line=line, path=path):
                        self.assertTrue(path.startswith("demo/") or path in made,
                                        "README.md reads %s before any command makes it" % path)
                made.update(writes)
        # and what they write is ignored by git, so that `git status` in the
        # checkout they ran in shows no stray files
        # (not where there is no git, as in the Dockerfile's build stage)
        inside = shutil.which("git") and subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--is-inside-work-tree"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if inside and inside.returncode == 0 and inside.stdout.strip() == "true":
            for path in sorted(made | {"data/items.npy", "models/model.safetensors"}):
                p = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", "--no-index", path])
                with self.subTest(path=path):
                    self.assertEqual(p.returncode, 0, "README.md writes %s, which git does "
                                     "not ignore" % path)

    def test_quick_start_installs_make_first(self):
        # `make run` installs what the build needs, but not make itself
        _, code = split_code(section(read("README.md"), "Quick start"))
        first_make = next(i for i, ln in enumerate(code) if re.match(r"\s*make run\b", ln))
        installs = [ln for ln in code[:first_make] if re.search(r"apt-get install\b", ln)]
        self.assertTrue(any(re.search(r"\smake(\s|$)", ln.split("#")[0]) for ln in installs),
                        "README.md's quick start runs make before installing it")

    def test_helps_give_exit_statuses(self):
        # an operator's supervisor (systemd, a Kubernetes Job, cron) acts on
        # them: each program's --help says what they mean
        want = {"semid-server": ("0", "1", "2"), "semid-train": ("0", "1", "2", "75", "128 + the signal"),
                "semid": ("0", "1", "2", "3")}
        for prog, codes in want.items():
            text = run_help(os.path.join(BIN, prog), "--help")
            m = re.search(r"^exit status:(.*?)(?:\n\n|\Z)", text, re.M | re.S)
            with self.subTest(prog=prog):
                self.assertIsNotNone(m, "%s --help says no exit status" % prog)
                for code in codes:
                    self.assertRegex(m.group(1), r"(^|[\s;,(])%s\b" % re.escape(code))

    def test_train_gen_usage_shows_its_defaults(self):
        # gen runs with --out alone (every count has a default), so its usage
        # shows the counts as optional, and says the defaults
        text = run_help(os.path.join(BIN, "semid-train"), "--help")
        gen = re.search(r"semid-train gen (.*?)\n\s+semid-train", text, re.S).group(1)
        for flag in ("--items N", "--users M", "--interactions I", "--dim D"):
            with self.subTest(flag=flag):
                self.assertIn("[%s]" % flag, gen)
        with tempfile.TemporaryDirectory(prefix="semid-gen-") as d:
            p = subprocess.run([os.path.join(BIN, "semid-train"), "gen", "--out", d],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout)
            got = json.loads(p.stdout.splitlines()[-1])
        m = re.search(r"gen's defaults:\s+(\d+) items,\s+(\d+) users,\s+(\d+) interactions,"
                      r"\s+dim (\d+)", text)
        self.assertIsNotNone(m, "semid-train --help gives gen's defaults")
        self.assertEqual((got["items"], got["users"], got["dim"]),
                         (int(m.group(1)), int(m.group(2)), int(m.group(4))))

    def test_named_sections_exist(self):
        """A section named in words rather than linked, `proto/api.md "Life
        cycle"` or `(proto/api.md, Metrics)`, in a document, a help text, a
        deploy file or a comment, is a heading of that document (or a
        paragraph's bold or bulleted name in it): the CronJob pointed at
        deploy/README.md's "Publishing a model", a section called "Publish
        a model", and a test at api.md's "Connections", which it never had."""
        pat = re.compile(r"([\w./-]+\.md)`?,? "
                         r"(?:\"([^\"\n]{2,60})\"|([A-Z][a-z]+(?: [a-z]+){0,4})(?=[);]))")
        exts = (".md", ".c", ".h", ".py", ".yml", ".yaml", ".json", ".service", ".socket",
                ".timer", ".mk", ".sh")
        files = [f for f in os.listdir(ROOT)
                 if f.endswith(exts) or f in ("Makefile", "Dockerfile")]
        for top in TOP:
            for d, dirs, names in os.walk(os.path.join(ROOT, top)):
                dirs[:] = [x for x in dirs if x not in ("corpus", "regress", "out")]
                files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names
                          if n.endswith(exts)]
        seen = 0
        for rel in files:
            try:
                text = read(rel)
            except UnicodeDecodeError:
                continue
            refs = [(m.group(0), m.group(1), m.group(2) or m.group(3)) for m in pat.finditer(text)]
            refs += [(m.group(0), m.group(2), m.group(1)) for m in re.finditer(
                r"\"([A-Z][^\"\n]{2,60})\" (?:in|of) `?([\w./-]+\.md)", text)]
            for ref, doc, name in refs:
                path = doc if "/" in doc else os.path.join(os.path.dirname(rel), doc)
                if not os.path.exists(os.path.join(ROOT, path)):
                    path = doc
                if not os.path.exists(os.path.join(ROOT, path)):
                    continue  # a document not in the repository (../shared/...)
                seen += 1
                target = read(path)
                heads = re.findall(r"^#+\s+(?:\d+\.\s+)?(.*?)\s*$", split_code(target)[0], re.M)
                found = (any(re.match(re.escape(name) + r"\b", h) for h in heads)
                         or re.search(r"\*\*%s\.?\*\*|^\s*- %s:" % ((re.escape(name),) * 2),
                                      target, re.M | re.I))
                with self.subTest(file=rel, ref=ref):
                    self.assertTrue(found, "%s names a section %s has not" % (rel, path))
        self.assertGreater(seen, 10)  # the scan finds them

    def test_readme_lists_the_registry_commands_with_a_progress_bar(self):
        """README.md's list of the registry commands that draw a progress
        bar is those `semid help registry` gives --progress to (every
        command but the ones it names): delete had one, the list not."""
        top = run_help(os.path.join(BIN, "semid"), "--help")
        m = re.search(r"registry <command>\s+the durable ID registry: (.*?)\n\s+\(", top, re.S)
        commands = set(re.split(r",\s*", " ".join(m.group(1).split())))
        reg = run_help(os.path.join(BIN, "semid"), "help", "registry")
        m = re.search(r"--progress\s+all but ([a-z, ]+?) and (\w+):", reg)
        without = set(re.split(r",\s*", m.group(1))) | {m.group(2)}
        self.assertLess(without, commands)
        m = re.search(r"The long ones \(([a-z,\s]+)\) draw a progress bar",
                      " ".join(read("README.md").split()))
        self.assertIsNotNone(m, "README.md names the commands with a progress bar")
        self.assertEqual(set(re.split(r",\s*", m.group(1))), commands - without)

    def test_named_tests_exist(self):
        """A test the documents cite as proof (`test_config_of_the_first_builds`,
        `tests/server/test_faults.py`) is one the repository has: a renamed
        or dropped test would leave a claim that nothing checks."""
        names = set()
        for d, _, files in os.walk(os.path.join(ROOT, "tests")):
            for n in files:
                names.add(os.path.splitext(n)[0])
                if n.endswith((".py", ".c")):
                    with open(os.path.join(d, n), encoding="utf-8", errors="replace") as f:
                        names |= set(re.findall(r"(?:def |START_TEST\()(test_\w+)", f.read()))
        self.assertGreater(len(names), 500)  # the scan finds them
        for doc in DOCS:
            for name in set(re.findall(r"\btest_[a-z0-9_]+\b", read(doc))):
                with self.subTest(doc=doc, test=name):
                    self.assertTrue(name in names, "%s cites a test that does not exist" % doc)

    def test_quoted_model_versions_have_the_trainers_form(self):
        """Output quoted from a run shows the default model_version in the
        form semid-train writes now: `<mode>-<utc>-<seed>-<8 hex digits>`.
        README.md's reassign line kept `das-20261130T001149Z-42`, from a
        build before the random part, for a day after it came."""
        src = read("trainer/train.c")
        self.assertRegex(src, r'"%s-%s-%llu-%08x", mode')  # the form checked below
        pat = re.compile(r"\b(?:das|rqvae|two-stage)-\d{8}T\d{6}Z-\d+(?:-[0-9a-zA-Z]*)?")
        for doc in DOCS:
            for version in pat.findall(read(doc)):
                with self.subTest(doc=doc, version=version):
                    self.assertRegex(version, r"-\d+-[0-9a-f]{8}$")

    def test_alert_table_lists_every_alert(self):
        rules = set(re.findall(r"^\s*- alert: (\w+)", read("deploy/prometheus/alerts.yml"), re.M))
        table = set(re.findall(r"^\| `(Semid\w+)`", read("deploy/README.md"), re.M))
        self.assertEqual(table, rules)

    def test_every_log_event_is_in_the_table(self):
        """Every event the server's code logs (srv_log, srv_logline_begin
        and srv_log_exiting's callers name it in a string literal) is a row
        of proto/api.md's Logs table: `signal` (SIGUSR1/2 ignored) was not,
        and the live run of the next test never sends that signal."""
        doc = read("proto/api.md")
        rows = doc[doc.index("| event | fields |"):].split("\n\n")[0].splitlines()[2:]
        table = set()
        for line in rows:
            table |= set(re.findall(r"`(\w+)`", line.split(" | ")[0]))
        self.assertIn("request", table)
        code = set()
        for path in glob.glob(os.path.join(ROOT, "server", "*.c")):
            text = read(os.path.relpath(path, ROOT))
            code |= set(re.findall(r"\bsrv_log\(\s*[^,;]+,\s*\"(\w+)\"", text))
            code |= set(re.findall(r"\bsrv_logline_begin\(\s*[^,;]+,[^,;]+,\s*\"(\w+)\"", text))
        self.assertGreaterEqual(len(code), 12, sorted(code))  # the scan finds them
        self.assertLessEqual(code, table, "events missing from proto/api.md's Logs table")

    def test_metrics_and_log_fields_are_real(self):
        work = tempfile.mkdtemp(prefix="semid-docs-")
        try:
            model = os.path.join(work, "demo.safetensors")
            T.doc_model(model)
            srv = T.Server(["--model", model], work)
            try:
                _, _, body = srv.request("GET", "/metrics")
            finally:
                self.assertEqual(srv.stop(), 0)
            log = srv.log_text()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # every field a log line carries is in proto/api.md's table of events
        fields = {}
        for line in read("proto/api.md").splitlines():
            m = re.match(r"\| (`\w+`(?:, `\w+`)*) \| (.*) \|$", line)
            if m:
                words = set(" ".join(re.findall(r"`([^`]+)`", m.group(2))).split())
                for event in re.findall(r"`(\w+)`", m.group(1)):
                    fields[event] = words
        for line in log.splitlines():
            m = re.match(r"ts=\S+ level=\w+ event=(\w+) (.*)$", line)
            if not m:
                continue
            rest = re.sub(r'"(?:[^"\\]|\\.)*"', '""', m.group(2))  # quoted values
            keys = set(re.findall(r"(?:^| )(\w+)=", rest))
            with self.subTest(log=line):
                self.assertIn(m.group(1), fields, "event not in proto/api.md's Logs table")
                self.assertLessEqual(keys, fields[m.group(1)], "fields not in proto/api.md")
        real = set(re.findall(r"^# TYPE (\w+)", body.decode(), re.M))
        table = set(re.findall(r"^\| `((?:semid|process)_\w+)", read("proto/api.md"), re.M))
        self.assertEqual(table, real, "proto/api.md's metric table")
        for doc in DOCS:
            for name in set(re.findall(r"\b(?:semid|process)_[a-z0-9_]+", read(doc))) - NOT_METRICS:
                with self.subTest(doc=doc, name=name):
                    self.assertIn(re.sub(r"_(bucket|sum|count)$", "", name), real)


if __name__ == "__main__":
    unittest.main(verbosity=2)
