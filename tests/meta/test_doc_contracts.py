#!/usr/bin/python3
"""The lists the code keeps and the lists the documents keep name the same
things, each read mechanically from both sides (tests/meta/test_docs.py
does the config keys, flags, metric names and log events; this file the
rest):

- metrics: server/metrics.h's list (with server/proc.h's process_* list),
  proto/api.md's metric table and a live server's /metrics (after an
  encode, an assign, a lookup and a delete, so that the labelled series
  have samples) hold the same metric names, each with one type and one set
  of labels (`le` of a histogram aside).  metrics.h's list lacked
  semid_log_lines_dropped_total and semid_model_watch_checks_total.
- log fields: every key a server/*.c source gives a log line
  (srv_logline_str/int/num(&line, "key", ...)) is among the fields of that
  line's event in proto/api.md's Logs table.  `listening` gave `inherited`
  (socket activation) and `log` gave `errno`, which the table did not name.
- environment: every variable the programs read (getenv of a literal, of a
  #define or array of literals, or of a parameter whose callers pass
  literals) is named in README.md, config/README.md, deploy/README.md,
  proto/*.md or a program's --help, unless it is a test hook (SEMID_TEST_*).
  The trainer's OpenBLAS thread count follows GOTO_NUM_THREADS,
  OMP_NUM_THREADS and OPENBLAS_DEFAULT_NUM_THREADS as well as
  OPENBLAS_NUM_THREADS, and no document said so.
- error codes: server/api.c's table of (status, code) pairs, the codes of
  proto/openapi.json's Error schema and the (status, code) rows of
  proto/api.md's error tables are the same.
- exit status 3 of `semid registry`: every registry command that can end
  with it (those its dispatch hands a conflict count) is named where
  `semid --help` and `semid help registry` explain status 3; `semid --help`
  left out diff.

Fast (one server start).  Needs the programs in $SEMID_BIN (make exports it).
Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/meta/test_doc_contracts.py
"""
import glob
import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_docs as D  # noqa: E402  (its paths, read and run_help)

ROOT, BIN, T, read, run = D.ROOT, D.BIN, D.T, D.read, D.run_help
DOCS = ["README.md", "config/README.md", "deploy/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "proto", "*.md")))
SOURCES = ("core", "server", "trainer", "cli")


def c_files(*dirs):
    out = []
    for d in dirs:
        out += sorted(glob.glob(os.path.join(ROOT, d, "*.c")))
    return out


def functions(text):
    """The top-level chunks of a C file, split where a function ends (a '}'
    alone at the start of a line): [(name of the function or None, text)]."""
    out = []
    for chunk in re.split(r"\n\}\n", text):
        m = None
        for m in re.finditer(r"^[a-z][\w \*]*?\b(\w+)\((?:[^;{]|\n)*?\)\s*\{", chunk, re.M):
            pass
        out.append((m.group(1) if m else None, chunk))
    return out


def split_labels(text):
    return frozenset(x for x in (text or "").split(",") if x)


def header_metrics():
    """{name: (type, labels)} from the lists of server/metrics.h and
    server/proc.h."""
    out = {}
    for rel in ("server/metrics.h", "server/proc.h"):
        for m in re.finditer(r"^ \*   ((?:semid|process)_[a-z0-9_]+)(?:\{([\w,]*)\})?"
                             r"(?:\s+1)?\s+(counter|gauge|histogram)\b", read(rel), re.M):
            out[m.group(1)] = (m.group(3), split_labels(m.group(2)))
    return out


def doc_metrics():
    """{name: (type, labels)} from proto/api.md's metric table."""
    out = {}
    for m in re.finditer(r"^\| `((?:semid|process)_[a-z0-9_]+)(?:\{([\w,]*)\})?` \| "
                         r"(counter|gauge|histogram)\b", read("proto/api.md"), re.M):
        out[m.group(1)] = (m.group(3), split_labels(m.group(2)))
    return out


def live_metrics(body):
    """{name: (type, labels or None when it has no sample)} from /metrics."""
    types = dict(re.findall(r"^# TYPE (\w+) (\w+)$", body, re.M))
    labels = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\w+)(?:\{(.*)\})? ", line)
        name = m.group(1)
        if name not in types:
            name = re.sub(r"_(bucket|sum|count)$", "", name)
        keys = set(re.findall(r"(\w+)=\"", m.group(2) or ""))
        if types[name] == "histogram":
            keys.discard("le")
        labels.setdefault(name, set()).update(keys)
    return {n: (t, frozenset(labels[n]) if n in labels else None) for n, t in types.items()}


def log_table():
    """{event: set of field words} from proto/api.md's Logs table."""
    doc = read("proto/api.md")
    rows = doc[doc.index("| event | fields |"):].split("\n\n")[0].splitlines()[2:]
    fields = {}
    for line in rows:
        event_cell, _, rest = line.strip("|").partition(" | ")
        words = set(" ".join(re.findall(r"`([^`]+)`", rest)).split())
        for event in re.findall(r"`(\w+)`", event_cell):
            fields[event] = words
    return fields


def env_reads():
    """{variable: file} for every environment variable the C sources read,
    and the getenv arguments that could not be resolved to literals."""
    found, unresolved = {}, []
    texts = {p: read(p) for p in c_files(*SOURCES)}
    for path, text in texts.items():
        rel = os.path.relpath(path, ROOT)
        for fn, chunk in functions(text):
            for m in re.finditer(r"\bgetenv\(\s*([^()]*?(?:\[\w+\])?)\s*\)", chunk):
                arg = m.group(1)
                lit = re.fullmatch(r"\"(\w+)\"", arg)
                if lit:
                    found.setdefault(lit.group(1), rel)
                    continue
                name = re.match(r"(\w+)", arg).group(1)
                d = re.search(r"^#define %s \"(\w+)\"" % name, text, re.M)
                a = re.search(r"\b%s\[[^\]]*\]\s*=\s*\{([^}]*)\}" % name, text)
                # a local set from a function of this file that returns an
                # element of an array: that array
                f = re.search(r"\b%s = (\w+)\(" % name, chunk)
                body = f and dict(functions(text)).get(f.group(1))
                r = body and re.search(r"return (\w+)\[", body)
                if not (d or a) and r:
                    a = re.search(r"\b%s\[[^\]]*\]\s*=\s*\{([^}]*)\}" % r.group(1), text)
                if d:
                    found.setdefault(d.group(1), rel)
                elif a:
                    for v in re.findall(r"\"(\w+)\"", a.group(1)):
                        found.setdefault(v, rel)
                elif fn and re.search(r"\b%s\([^)]*\b%s\)" % (fn, name), chunk):
                    # a parameter: what the callers pass
                    calls = [v for t in texts.values()
                             for v in re.findall(r"\b%s\(\s*\"(\w+)\"\s*\)" % fn, t)]
                    if not calls:
                        unresolved.append("%s: getenv(%s) in %s" % (rel, arg, fn))
                    for v in calls:
                        found.setdefault(v, rel)
                else:
                    unresolved.append("%s: getenv(%s)" % (rel, arg))
    return found, unresolved


class DocContractsTest(unittest.TestCase):
    def test_metric_lists_agree(self):
        work = tempfile.mkdtemp(prefix="semid-contracts-")
        try:
            model = os.path.join(work, "demo.safetensors")
            T.doc_model(model)
            token = "contracts-token-0123456789"
            srv = T.Server(["--model", model, "--admin-token", token], work)
            try:
                json_h = {"Content-Type": "application/json"}
                row = {"id": "sku-1", "embedding": [0.12, -0.5, 0.33, 0.9]}
                for path in ("/v1/items:encode", "/v1/items:assign"):
                    st, _, body = srv.request("POST", path,
                                              json.dumps({"inputs": [row]}).encode(), json_h)
                    self.assertEqual(st, 200, body)
                self.assertEqual(srv.request("GET", "/v1/items/sku-1")[0], 200)
                self.assertEqual(srv.request("DELETE", "/v1/items/sku-1", None,
                                             {"Authorization": "Bearer " + token})[0], 200)
                st, _, body = srv.request("GET", "/metrics")
                self.assertEqual(st, 200)
            finally:
                self.assertEqual(srv.stop(), 0)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        live = live_metrics(body.decode())
        header, doc = header_metrics(), doc_metrics()
        self.assertGreater(len(live), 30)
        self.assertEqual(sorted(set(header) ^ set(live)), [],
                         "server/metrics.h (proc.h) and /metrics name different metrics")
        self.assertEqual(sorted(set(doc) ^ set(live)), [],
                         "proto/api.md's table and /metrics name different metrics")
        for name, (typ, labels) in live.items():
            with self.subTest(metric=name):
                self.assertEqual(header[name][0], typ, "type in server/metrics.h")
                self.assertEqual(doc[name][0], typ, "type in proto/api.md")
                self.assertEqual(header[name][1], doc[name][1],
                                 "labels in server/metrics.h and proto/api.md")
                if labels is not None:
                    self.assertEqual(doc[name][1], labels, "labels in proto/api.md")

    def test_every_log_field_is_in_the_table(self):
        table = log_table()
        seen = 0
        for path in c_files("server"):
            rel = os.path.relpath(path, ROOT)
            for _, chunk in functions(read(path)):
                events = dict(re.findall(
                    r"\bsrv_logline_begin\(\s*&?([\w>.-]+)\s*,[^,;]+,\s*\"(\w+)\"", chunk))
                for var, key in re.findall(
                        r"\bsrv_logline_(?!begin|end)\w+\(\s*&?([\w>.-]+)\s*,\s*\"(\w+)\"",
                        chunk):
                    if var not in events:  # log.c's own helpers, given a line
                        self.assertEqual(rel, "server/log.c", (var, key))
                        continue
                    seen += 1
                    with self.subTest(event=events[var], field=key):
                        self.assertIn(events[var], table, "event not in proto/api.md's Logs")
                        self.assertIn(key, table[events[var]],
                                      "%s gives event=%s a field %s that proto/api.md's Logs "
                                      "table does not name" % (rel, events[var], key))
        self.assertGreater(seen, 20)  # the scan finds them

    def test_environment_variables_are_documented(self):
        found, unresolved = env_reads()
        self.assertEqual(unresolved, [], "getenv arguments this test cannot resolve")
        for must in ("SEMID_ADMIN_TOKEN", "OPENBLAS_NUM_THREADS", "LISTEN_FDS",
                     "SEMID_TEST_LOAD_GATE", "SEMID_TEST_STOP_DELAY_MS"):
            self.assertIn(must, found)  # the scan finds them
        text = "\n".join(read(d) for d in DOCS)
        text += run(os.path.join(BIN, "semid-server"), "--help")
        text += run(os.path.join(BIN, "semid-train"), "--help")
        text += run(os.path.join(BIN, "semid"), "--help")
        text += run(os.path.join(BIN, "semid"), "help", "encode")
        text += run(os.path.join(BIN, "semid"), "help", "registry")
        for var, rel in sorted(found.items()):
            if var.startswith("SEMID_TEST_"):
                continue  # a test hook, named as one
            with self.subTest(var=var):
                self.assertRegex(text, r"\b%s\b" % var,
                                 "%s reads %s, which no document or --help names"
                                 % (rel, var))

    def test_error_codes_agree(self):
        src = read("server/api.c")
        code = set((int(s), c) for s, c in re.findall(
            r"\[SRV_ERR_\w+\] = \{(\d+), \"(\w+)\"\}", src))
        self.assertGreaterEqual(len(code), 10)
        spec = json.loads(read("proto/openapi.json"))
        enum = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"][
            "code"]["enum"]
        self.assertEqual(sorted(enum), sorted(c for _, c in code), "proto/openapi.json")
        doc = set((int(s), c) for s, c in re.findall(r"^\| (\d{3}) \| `(\w+)` \|",
                                                     read("proto/api.md"), re.M))
        self.assertEqual(doc, code, "proto/api.md's error tables")

    def test_exit_status_3_names_every_registry_command(self):
        src = read("cli/registry_cmd.c")
        body = src[src.index("if (!strcmp(o->cmd, \"assign\"))"):]  # (run_cmd)
        cmds = set(re.findall(r"cmd_(\w+)\([^;]*\bconflicts\b", body))
        if re.search(r"delete_rows : cmd_delete\)\([^;]*\bconflicts\b", body):
            cmds.add("delete")
        self.assertGreaterEqual(cmds, {"import", "delete"})  # the scan finds them
        helps = {"semid --help": run(os.path.join(BIN, "semid"), "--help"),
                 "semid help registry": run(os.path.join(BIN, "semid"), "help", "registry")}
        for name, text in helps.items():
            m = re.search(r"\b3 (.*?)(?:[;,]\s*141|\n\n)", text, re.S)
            self.assertIsNotNone(m, "%s explains no exit status 3" % name)
            for cmd in sorted(cmds):
                with self.subTest(help=name, command=cmd):
                    self.assertRegex(m.group(1), r"\b%s\b" % cmd,
                                     "%s does not say that registry %s may exit 3"
                                     % (name, cmd))

    def sizing(self):
        """README's "Sizing" section: its text, and the cells (stripped) of
        each row of its table, header and rule left out."""
        m = re.search(r"^### Sizing\b.*?(?=^### )", read("README.md"), re.M | re.S)
        self.assertIsNotNone(m, "README.md has no Sizing section")
        rows = [[c.strip() for c in r.strip("|").split("|")]
                for r in m.group(0).splitlines() if r.startswith("|")][2:]
        self.assertGreaterEqual(len(rows), 10)
        return m.group(0), rows

    @staticmethod
    def section_name(cited):
        """The heading text a Sizing citation names, its "(bench-x)" left out."""
        return re.sub(r" \((bench|make)[-\w ]*\)$", "", cited)

    def test_sizing_names_sections_of_results(self):
        """README's "Sizing" table and the prose under it cite
        bench/RESULTS.md by section; each section named is there, so that a
        figure copied into the README can be traced to its run (and a
        renamed or removed run shows here)."""
        text, rows = self.sizing()
        cited = [row[3] for row in rows if row[3] != "same"]
        cited += re.findall(r'"([^"]+)"\)', text)
        heads = [h for h in read("bench/RESULTS.md").splitlines() if h.startswith("#")]
        for c in cited:
            name = self.section_name(c)
            with self.subTest(section=c):
                self.assertTrue([h for h in heads if name in h],
                                "README.md's Sizing cites %r, no heading of "
                                "bench/RESULTS.md holds it" % name)

    # a figure as the docs write it: 249 000, 1 137.5, 17.6, 8
    FIGURE = re.compile(r"(?<![\w.])(\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?!\w)")

    @staticmethod
    def results_section(lines, name):
        """The lines of bench/RESULTS.md from the heading holding @name to
        the next heading of its level or above, as one text ("" if none)."""
        for i, line in enumerate(lines):
            if line.startswith("#") and name in line:
                level = len(line) - len(line.lstrip("#"))
                j = i + 1
                while j < len(lines) and not (
                        lines[j].startswith("#")
                        and len(lines[j]) - len(lines[j].lstrip("#")) <= level):
                    j += 1
                return "\n".join(lines[i:j])
        return ""

    def test_sizing_figures_are_in_their_sections(self):
        """Every figure in the rate and latency columns of README's Sizing
        table is one of the section it cites, as rounded there: 249 000
        stands for 248 500 to 249 500 (a run of zeros stands for at most
        thousands), 8.1 for 8.05 to 8.15.  A section's run replaced by a
        newer one, or a figure mistyped, shows here."""
        _, rows = self.sizing()
        lines = read("bench/RESULTS.md").splitlines()
        name = None
        for cells in rows:
            if cells[3] != "same":
                name = self.section_name(cells[3])
            section = self.results_section(lines, name)
            have = [float(f.replace(" ", "")) for f in self.FIGURE.findall(section)]
            for f in self.FIGURE.findall(cells[1] + " ; " + cells[2]):
                digits = f.replace(" ", "")
                x = float(digits)
                if "." in digits:
                    unit = 10.0 ** -len(digits.split(".")[1])
                else:
                    unit = 10.0 ** min(len(digits) - len(digits.rstrip("0")), 3) if x else 1
                with self.subTest(row=cells[0], figure=f):
                    self.assertTrue([h for h in have if abs(h - x) <= unit / 2 + 1e-9],
                                    "README.md's Sizing gives %s for %r; section %r of "
                                    "bench/RESULTS.md has no figure that rounds to it"
                                    % (f, cells[0], name))


if __name__ == "__main__":
    unittest.main(verbosity=2)
