#!/usr/bin/python3
"""GET /metrics as Prometheus reads it, against a live semid-server: what the
counters and the code-entropy gauges say, checked against what the server
answered (the codes in its responses, entropy computed here with numpy).

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_metrics.py
"""
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import semid_testlib as T  # noqa: E402


def entropy_bits(codes):
    """Shannon entropy in bits of a 1-D array of codes."""
    _, n = np.unique(codes, return_counts=True)
    p = n / n.sum()
    return float(-(p * np.log2(p)).sum())


class Metrics(unittest.TestCase):
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
