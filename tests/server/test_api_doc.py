#!/usr/bin/python3
"""proto/api.md's examples are real: every ```http request block in the
document is sent, in order, to a live semid-server serving the demo model
(semid_testlib.doc_model) with the flags the document names, and the next
```http block (the response) must match: the status, every header shown
(Date and Content-Length are left out of the document), and the body: JSON
compared as values with their keys in the order shown (floats to 1e-6 relative;
`path`, `loaded_at`, `time`, `store`, `created_at` and `updated_at` only need to
exist), the metrics excerpt by series name; and a JSON body is indented one
value per line exactly where the document says the server indents it.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_api_doc.py
"""
import json
import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "api.md")
VOLATILE = {"path", "loaded_at", "time", "store", "created_at", "updated_at"}


def http_blocks(text):
    return [b.strip("\n") for b in re.findall(r"^```http\n(.*?)^```", text, re.M | re.S)]


def split_message(block):
    head, _, body = block.partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip()] = v.strip()
    return lines[0], headers, body.strip()


def same_json(test, want, got, where="$"):
    if isinstance(want, dict):
        test.assertIsInstance(got, dict, where)
        test.assertEqual(list(want), list(got), where)
        for k in want:
            if k in VOLATILE:
                continue
            same_json(test, want[k], got[k], "%s.%s" % (where, k))
    elif isinstance(want, list):
        test.assertIsInstance(got, list, where)
        test.assertEqual(len(want), len(got), where)
        for i, (a, b) in enumerate(zip(want, got)):
            same_json(test, a, b, "%s[%d]" % (where, i))
    elif isinstance(want, float) or isinstance(got, float):
        test.assertAlmostEqual(want, got, delta=1e-6 * max(1.0, abs(want)), msg=where)
    else:
        test.assertEqual(want, got, where)


class TestApiDoc(unittest.TestCase):
    def test_examples(self):
        with open(DOC) as f:
            text = f.read()
        m = re.search(r"^    semid-server (--model demo\.safetensors.*)$", text, re.M)
        self.assertIsNotNone(m, "the document names the server's flags")
        work = tempfile.mkdtemp(prefix="semid-doc-")
        model = os.path.join(work, "demo.safetensors")
        T.doc_model(model)
        args = m.group(1).replace("demo.safetensors", model).split()
        srv = T.Server(args, work)
        try:
            blocks = http_blocks(text)
            self.assertGreaterEqual(len(blocks), 50)
            self.assertEqual(len(blocks) % 2, 0, "every request has its response")
            for req, resp in zip(blocks[0::2], blocks[1::2]):
                line, headers, body = split_message(req)
                method, path, version = line.split()
                self.assertEqual(version, "HTTP/1.1")
                with self.subTest(request=line):
                    st, got_h, got_body = srv.request(method, path,
                                                      body.encode() if body else None, headers)
                    rline, want_h, want_body = split_message(resp)
                    self.assertEqual(int(rline.split()[1]), st, got_body)
                    for k, v in want_h.items():
                        self.assertEqual(got_h.get(k.lower()), v, k)
                    if want_h.get("Content-Type", "").startswith("application/json"):
                        same_json(self, json.loads(want_body), json.loads(got_body))
                        route = path.split("?")[0]
                        indented = route == "/v1/model" or (st < 400 and route in (
                            "/healthz", "/readyz", "/v1/admin/reload"))
                        self.assertEqual(b"\n  " in got_body, indented, got_body)
                    else:
                        series = {ln.rpartition(" ")[0] for ln in got_body.decode().splitlines()
                                  if ln and not ln.startswith("#")}
                        for ln in want_body.splitlines():
                            self.assertIn(ln.rpartition(" ")[0], series)
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
