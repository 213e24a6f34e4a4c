#!/usr/bin/python3
"""GET /metrics as Prometheus reads it, against a live semid-server: the text
exposition parsed here (HELP and TYPE for every family, label values
unescaped, histograms cumulative with +Inf == _count) and by `promtool check
metrics` (which must report only the lint proto/api.md explains), and what
the counters and the code-entropy gauges say, checked against what the
server answered (the codes in its responses, entropy computed here with
numpy).

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_metrics.py
"""
import copy
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import semid_testlib as T  # noqa: E402

API_MD = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto", "api.md")
ROUTES = {"/v1/items:encode", "/v1/users:encode", "/healthz", "/readyz", "/v1/model",
          "/v1/admin/reload", "/metrics", "/v1/items:assign", "/v1/users:assign",
          "/v1/items/{id}", "/v1/users/{id}", "/v1/sids/{sid}", "/v1/sids", "other"}


def parse_labels(text):
    """'a="x\\"y",b="z"' -> {"a": 'x"y', "b": "z"}, with the exposition
    format's escapes (backslash, double quote, n) undone."""
    out, i = {}, 0
    while i < len(text):
        m = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="').match(text, i)
        assert m, "bad labels at %r" % text[i:]
        i, value = m.end(), []
        while text[i] != '"':
            if text[i] == "\\":
                i += 1
                value.append({"n": "\n", "\\": "\\", '"': '"'}[text[i]])
            else:
                value.append(text[i])
            i += 1
        out[m.group(1)] = "".join(value)
        i += 1
        if i < len(text):
            assert text[i] == ",", "bad labels at %r" % text[i:]
            i += 1
    return out


def parse_exposition(text):
    """-> (families {name: {"help", "type", "samples": [(name, labels, value)]}},
    the family names in order of their first line).  Asserts the structure
    Prometheus relies on: HELP and TYPE once per family, before its samples,
    and a family's lines together."""
    fams, order = {}, []
    for line in text.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) (.*)$", line)
        if m:
            kind, name, rest = m.groups()
            f = fams.setdefault(name, {"help": None, "type": None, "samples": []})
            if name not in order:
                order.append(name)
            assert order[-1] == name, "%s: HELP/TYPE apart from its family" % name
            assert f[kind.lower()] is None, "%s: a second %s" % (name, kind)
            assert not f["samples"], "%s: %s after its samples" % (name, kind)
            f[kind.lower()] = rest
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), parse_labels(m.group(2) or ""), float(m.group(3))
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        if fam not in fams or fams[fam]["type"] != "histogram":
            fam = name
        assert fam in fams, "%s: a sample before its HELP and TYPE" % name
        assert order[-1] == fam, "%s: a sample apart from its family" % name
        fams[fam]["samples"].append((name, labels, value))
    return fams, order


def entropy_bits(codes):
    """Shannon entropy in bits of a 1-D array of codes."""
    _, n = np.unique(codes, return_counts=True)
    p = n / n.sum()
    return float(-(p * np.log2(p)).sum())


def documented_lint():
    """The lines proto/api.md says `promtool check metrics` prints."""
    with open(API_MD) as f:
        m = re.search(r"passes `promtool check metrics` but for one lint, on purpose:\n\n"
                      r"((?:    .*\n)+)", f.read())
    return [line.strip() for line in m.group(1).splitlines()] if m else []


class Metrics(unittest.TestCase):
    def assert_counters_not_lower(self, before, after):
        """Every counter and histogram bucket or count of the scrape
        @before is in the scrape @after, not lower."""
        old, _ = parse_exposition(before)
        new, _ = parse_exposition(after)
        for name, f in old.items():
            if f["type"] not in ("counter", "histogram"):
                continue
            now = {(n, tuple(sorted(lab.items()))): v for n, lab, v in new[name]["samples"]}
            for n, lab, v in f["samples"]:
                if not n.endswith("_sum"):
                    with self.subTest(counter=n, labels=lab):
                        self.assertGreaterEqual(now[(n, tuple(sorted(lab.items())))], v)

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="semid-metrics-")
        self.model = os.path.join(self.work, "demo.safetensors")
        T.doc_model(self.model)

    def tearDown(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def test_refused_rows_leave_encoded_and_entropy_alone(self):
        """A request refused because the encoder overflows on its values
        (400) gave no codes to anyone: its rows are not counted in
        semid_encoded_total and its meaningless codes (the same for every
        such row) do not enter the entropy window.  They did: a client
        retrying such inputs drove every level's entropy to 0 bits and the
        encode rate up, which is just what SemidCodeEntropyCollapse waits
        for.  The gauge is compared with the entropy of the last
        entropy_window codes the server answered, computed here."""
        W = 12
        srv = T.Server(["--model", self.model, "--registry", "none",
                        "--entropy-window", str(W)], self.work)
        try:
            rng = np.random.default_rng(5)
            served = []
            huge = {"embedding": [3e38, -3e38, 3e38, -3e38]}
            for k in range(4):
                rows = [{"embedding": r.tolist()} for r in rng.standard_normal((5, 4))]
                st, _, body = srv.json("POST", "/v1/items:encode", {"inputs": rows})
                self.assertEqual(st, 200, body)
                served += [r["codes"] for r in body["results"]]
                # refused requests between the good ones, alone and beside a good row
                inputs = [huge] * 4 if k % 2 else [rows[0], huge]
                st, _, body = srv.json("POST", "/v1/items:encode", {"inputs": inputs})
                self.assertEqual(st, 400, body)
                self.assertIn("too large for the model", body["error"]["message"])
            m = srv.metrics()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertEqual(m['semid_encoded_total{tower="item"}'], 20)
        window = np.array(served[-W:])
        for level in range(3):
            with self.subTest(level=level):
                self.assertAlmostEqual(
                    m['semid_code_entropy_bits{tower="item",level="%d"}' % level],
                    entropy_bits(window[:, level]), places=5)

    def test_a_new_model_starts_the_entropy_window(self):
        """semid_code_entropy_bits describes the codes of the model being
        served: the window keeps its rows across a reload of the same file
        (same sha256), starts afresh when another model is swapped in (the
        codes of two models name different codewords, so their mixture has
        no meaning, and a collapsed release stayed hidden behind the
        previous one's codes until they left the window), and a tower the
        new model lacks has no gauge.  Each level's gauge is compared with
        the entropy, computed here, of the codes the server answered."""
        rng = np.random.default_rng(11)
        item = T.random_tower(rng, 8, [], 4, [8, 8], act="relu", norm="none")
        user = T.random_tower(rng, 5, [], 3, [4, 4])
        # a collapsed release: codeword 0 at the origin, every other one far
        # away, so every row gets codes (0, 0)
        far = [np.vstack([np.zeros((1, 4)), 1e3 + rng.random((7, 4))]).astype(np.float32)
               for _ in range(2)]
        collapsed = T.Tower(item.layers, far, "relu", "none")
        T.write_model(self.model, {"item": item, "user": user}, "A")
        srv = T.Server(["--model", self.model, "--registry", "none", "--admin-token", "tok",
                        "--watch=false", "--entropy-window", "100"], self.work)
        auth = {"Authorization": "Bearer tok"}

        def encode(tower, n, D):
            rows = [{"embedding": r.tolist()} for r in rng.standard_normal((n, D))]
            st, _, body = srv.json("POST", "/v1/%s:encode" % tower, {"inputs": rows})
            self.assertEqual(st, 200, body)
            return [r["codes"] for r in body["results"]]

        def gauges():
            m = srv.metrics()
            return {k: v for k, v in m.items() if k.startswith("semid_code_entropy_bits")}, m

        try:
            served = encode("items", 30, 8)
            encode("users", 10, 5)
            # the same file again: the window goes on
            self.assertEqual(srv.request("POST", "/v1/admin/reload", headers=auth)[0], 200)
            served += encode("items", 10, 8)
            g, _ = gauges()
            for level in range(2):
                self.assertAlmostEqual(
                    g['semid_code_entropy_bits{tower="item",level="%d"}' % level],
                    entropy_bits(np.array(served)[:, level]), places=5)
            self.assertGreater(g['semid_code_entropy_bits{tower="item",level="0"}'], 1)
            # another model: item tower collapsed, no user tower
            T.write_model(self.model, {"item": collapsed}, "B")
            self.assertEqual(srv.request("POST", "/v1/admin/reload", headers=auth)[0], 200)
            g, _ = gauges()
            self.assertEqual(g, {})  # nothing encoded by B yet
            served = encode("items", 5, 8)
            self.assertEqual(served, [[0, 0]] * 5)
            g, m = gauges()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertEqual(g, {'semid_code_entropy_bits{tower="item",level="0"}': 0.0,
                             'semid_code_entropy_bits{tower="item",level="1"}': 0.0})
        # the counters go on
        self.assertEqual(m['semid_encoded_total{tower="item"}'], 45)
        self.assertEqual(m['semid_encoded_total{tower="user"}'], 10)

    def test_registry_up_is_not_reset_by_lookups(self):
        """A store that reads but cannot write (a full disk: here a 1-byte
        RLIMIT_FSIZE, writes failing with EFBIG) answers new assigns 503 and
        lookups 200.  semid_registry_up is 0 from the assign that found it
        unavailable until an assign goes through: every lookup used to set
        it back to 1, so with any lookup traffic it flapped and
        SemidRegistryDown (0 for 5 minutes) never fired while no new id
        could be assigned.  The counters do not go down across the outage."""
        def ignore_xfsz():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        srv = T.Server(["--model", self.model], self.work, preexec_fn=ignore_xfsz)
        up = "semid_registry_up"
        k = [0]

        def scrape():
            return srv.request("GET", "/metrics")[2].decode()

        def assign(n):
            k[0] += 1
            rows = [{"id": "id-%d-%d" % (k[0], i), "embedding": [1.0, 2.0, 3.0, float(i)]}
                    for i in range(n)]
            return srv.json("POST", "/v1/items:assign", {"inputs": rows})

        try:
            self.assertEqual(assign(2)[0], 200)
            self.assertEqual(srv.request("GET", "/v1/items/id-1-0")[0], 200)
            self.assertEqual(srv.metrics()[up], 1)
            before = scrape()
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            for _ in range(40):  # until a commit must grow a file
                st, _, body = assign(64)
                if st != 200:
                    break
            self.assertEqual(st, 503, body)
            self.assertEqual(srv.metrics()[up], 0)
            for _ in range(3):
                self.assertEqual(srv.request("GET", "/v1/items/id-1-0")[0], 200)
                self.assertEqual(srv.metrics()[up], 0)
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            deadline = time.monotonic() + 5 * T.SLOW
            while assign(3)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(srv.metrics()[up], 1)
            # and the store's counters went on across the outage
            self.assert_counters_not_lower(before, scrape())
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_limits_are_exported(self):
        """queue_rows, connection_limit and body_memory_bytes are exported
        beside the gauges they bound (semid_queue_rows_limit,
        semid_connections_limit, semid_request_body_limit_bytes), so that an
        alert compares the two without copying the configuration: they were
        not, and deploy/README.md's "semid_connections_open against
        connection_limit" could not be written in PromQL.  The connection
        limit is the one served: under an open-files limit too low for the
        configured one (ulimit -n 600 against 1024) the start lowers it to
        (600 - 320) * 8 / 9 = 248 and says so, and the gauge shows 248, on
        the operations port (where deploy/ scrapes) as on the main one."""
        srv = T.Server(["--model", self.model, "--registry", "none", "--queue-rows", "5000",
                        "--max-inputs", "100", "--connection-limit", "77",
                        "--max-body-bytes", "100000", "--body-memory-bytes", "3000000"],
                       self.work)
        try:
            m = srv.metrics()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        for name, want in (("semid_queue_rows_limit", 5000), ("semid_connections_limit", 77),
                           ("semid_request_body_limit_bytes", 3000000)):
            self.assertTrue(name in m, "no %s in /metrics" % name)
            self.assertEqual(m[name], want, name)
        self.assertLessEqual(m["semid_queue_rows"], m["semid_queue_rows_limit"])

        def nofile():
            resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))
        srv = T.Server(["--model", self.model, "--registry", "none",
                        "--ops-listen", "127.0.0.1:0"], self.work, preexec_fn=nofile)
        try:
            log = srv.log_text()
            # 600, or less the descriptors a SEMID_SERVER_WRAPPER keeps
            lowered = re.search(r"open files limit (\d+) is low for connection_limit 1024 "
                                r"\(want 1472\): connection_limit lowered to (\d+),", log)
            self.assertTrue(lowered, log)
            limit, fit = int(lowered.group(1)), int(lowered.group(2))
            self.assertEqual(fit, (limit - 320) * 8 // 9)
            if not T.WRAPPER:
                self.assertEqual(fit, 248)
            ops = copy.copy(srv)
            ops.port = int(re.search(r"event=listening .* ops_port=(\d+)", log).group(1))
            for where in (srv, ops):
                m = where.metrics()
                self.assertTrue("semid_connections_limit" in m, "no semid_connections_limit")
                self.assertEqual(m["semid_connections_limit"], fit)
                self.assertEqual(m["semid_queue_rows_limit"], 65536)
                self.assertEqual(m["semid_request_body_limit_bytes"], 1 << 30)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

    def test_registry_filesystem(self):
        """A full disk stops new ids (and each keeps its embedding, 4·D
        bytes, besides its entry), and nothing said how near it was:
        semid_registry_filesystem_avail_bytes and _size_bytes give the
        statvfs figures of the SQLite registry's directory, at each scrape
        (compared here with Python's own statvfs of that directory); none
        for --registry none; and when the directory cannot be read (it does
        not exist) no sample, one warn line however many scrapes."""
        regdir = os.path.join(self.work, "reg")
        os.mkdir(regdir)
        srv = T.Server(["--model", self.model, "--registry", os.path.join(regdir, "r.db")],
                       self.work)
        try:
            m = srv.metrics()
            v = os.statvfs(regdir)
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertEqual(m["semid_registry_filesystem_size_bytes"], v.f_blocks * v.f_frsize)
        # other writers share the file system: near, not equal
        self.assertAlmostEqual(m["semid_registry_filesystem_avail_bytes"],
                               v.f_bavail * v.f_frsize, delta=max(v.f_blocks * v.f_frsize // 100,
                                                                  256 << 20))
        self.assertGreater(m["semid_registry_filesystem_avail_bytes"], 0)

        srv = T.Server(["--model", self.model, "--registry", "none"], self.work)
        try:
            text = srv.request("GET", "/metrics")[2].decode()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertNotIn("semid_registry_filesystem", text)
        # nor those of a store's own calls, as proto/api.md says of each
        for name in ("semid_registry_up", "semid_registry_levels_mismatch",
                     "semid_registry_retries_total", "semid_registry_global_lock_total",
                     "semid_registry_probes_total", "semid_registry_timeouts_total"):
            self.assertNotIn(name, text)

        gone = os.path.join(self.work, "gone", "r.db")
        srv = T.Server(["--model", self.model, "--registry", gone], self.work)
        try:
            for _ in range(3):
                fams, _ = parse_exposition(srv.request("GET", "/metrics")[2].decode())
                for name in ("semid_registry_filesystem_avail_bytes",
                             "semid_registry_filesystem_size_bytes"):
                    self.assertEqual(fams[name]["type"], "gauge")
                    self.assertEqual(fams[name]["samples"], [])
            log = srv.log_text()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])
        self.assertEqual(log.count("cannot read the free space of the registry's directory "
                                   + os.path.dirname(gone)), 1, log)

    def test_exposition(self):
        """A scrape with every family in it (both towers encoded, an assign,
        a lookup, a good and a bad reload, unknown paths, a model version
        with a double quote and a backslash): the structure parses, every
        histogram is cumulative with +Inf == _count, label values come
        back unescaped, the route label holds only known routes, counters
        do not go down across the reloads, and promtool reports nothing but
        the lint proto/api.md explains (semid_code_entropy_bits is in bits
        of information, which its rule for data sizes takes for bits of
        data)."""
        rng = np.random.default_rng(9)
        item = T.random_tower(rng, 8, [6], 4, [8, 4])
        user = T.random_tower(rng, 5, [], 3, [4, 4, 2])
        version = 'nightly "7" C:\\models'
        T.write_model(self.model, {"item": item, "user": user}, version)
        srv = T.Server(["--model", self.model, "--admin-token", "tok"], self.work)
        try:
            def scrape():
                st, h, body = srv.request("GET", "/metrics")
                self.assertEqual(st, 200)
                self.assertEqual(h["content-type"], "text/plain; version=0.0.4; charset=utf-8")
                return body.decode()

            for tower, t in (("items", item), ("users", user)):
                rows = [{"id": "%s-%d" % (tower, k), "embedding": r.tolist()}
                        for k, r in enumerate(rng.standard_normal((7, t.D)))]
                for route in ("encode", "assign"):
                    st, _, body = srv.json("POST", "/v1/%s:%s" % (tower, route),
                                           {"inputs": rows})
                    self.assertEqual(st, 200, body)
            self.assertEqual(srv.request("GET", "/v1/items/items-1")[0], 200)
            for k in range(40):  # random paths: one route label, "other"
                self.assertEqual(srv.request("GET", "/x%d/%s" % (k, "a" * k))[0], 404)
            before = scrape()
            auth = {"Authorization": "Bearer tok"}
            self.assertEqual(srv.request("POST", "/v1/admin/reload", headers=auth)[0], 200)
            with open(self.model, "r+b") as f:
                f.truncate(100)
            self.assertEqual(srv.request("POST", "/v1/admin/reload", headers=auth)[0], 422)
            text = scrape()
        finally:
            self.assertEqual(srv.stop(), 0, srv.log_text()[-2000:])

        fams, _ = parse_exposition(text)
        for name, f in fams.items():
            with self.subTest(family=name):
                self.assertTrue(name.startswith(("semid_", "process_")))
                self.assertTrue(f["help"], "no HELP")
                self.assertIn(f["type"], ("counter", "gauge", "histogram"))
                if f["type"] == "counter":
                    self.assertTrue(name.endswith("_total"))
        for name in ("semid_requests_total", "semid_request_duration_seconds",
                     "semid_queue_wait_seconds", "semid_batch_size", "semid_encoded_total",
                     "semid_model_reloads_total", "semid_model_info",
                     "semid_model_loaded_timestamp_seconds", "semid_build_info",
                     "semid_code_entropy_bits"):
            self.assertIn(name, fams)
            self.assertTrue(fams[name]["samples"], name)
        # histograms: per series, cumulative buckets ending in +Inf == _count
        for name, f in fams.items():
            if f["type"] != "histogram":
                continue
            series = {}
            for sname, labels, value in f["samples"]:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                series.setdefault(key, []).append((sname[len(name):], labels.get("le"), value))
            for key, lines in series.items():
                with self.subTest(histogram=name, labels=key):
                    buckets = [(float(le), v) for s, le, v in lines if s == "_bucket"]
                    self.assertEqual(buckets[-1][0], float("inf"))
                    self.assertEqual([le for le, _ in buckets], sorted({le for le, _ in buckets}))
                    counts = [v for _, v in buckets]
                    self.assertEqual(counts, sorted(counts))
                    count = [v for s, _, v in lines if s == "_count"]
                    total = [v for s, _, v in lines if s == "_sum"]
                    self.assertEqual(count, [counts[-1]])
                    self.assertEqual(len(total), 1)
                    self.assertGreaterEqual(total[0], 0)
        samples = {(n, tuple(sorted(lab.items()))): v
                   for f in fams.values() for n, lab, v in f["samples"]}
        # rows: 7 per tower and route, each batch of one request
        self.assertEqual(samples[("semid_batch_size_sum", ())], 28)
        self.assertEqual(samples[("semid_batch_size_count", ())], 4)
        for tower in ("item", "user"):
            self.assertEqual(samples[("semid_encoded_total", (("tower", tower),))], 14)
        info = fams["semid_model_info"]["samples"]
        self.assertEqual([lab["version"] for _, lab, _ in info], [version])
        routes = {lab["route"] for _, lab, _ in fams["semid_requests_total"]["samples"]}
        self.assertLessEqual(routes, ROUTES)
        self.assertEqual(samples[("semid_requests_total", (("code", "404"), ("route", "other")))],
                         40)
        self.assertEqual(samples[("semid_model_reloads_total", (("result", "success"),))], 2)
        self.assertEqual(samples[("semid_model_reloads_total", (("result", "error"),))], 1)
        self.assert_counters_not_lower(before, text)  # across the reloads

        promtool = T.find_promtool()
        if not promtool:
            self.skipTest("no promtool ($SEMID_PROMTOOL, which `make deps-test` unpacks from "
                          "Debian's prometheus package, or on PATH)")
        p = subprocess.run([promtool, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        problems = [line for line in p.stdout.splitlines() if line.strip()]
        # exit 3: lint problems only; 1 would be a text promtool cannot parse
        self.assertEqual(p.returncode, 3 if problems else 0, p.stdout)
        self.assertEqual(problems, documented_lint(), "promtool's lint against proto/api.md")


if __name__ == "__main__":
    unittest.main(verbosity=2)
