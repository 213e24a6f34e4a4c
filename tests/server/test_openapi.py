#!/usr/bin/python3
"""proto/openapi.json describes the server that runs: every request of
proto/api.md's examples, and more for the operations and statuses those do
not reach, is sent to a live semid-server (the demo model, then a server
with no model and no registry), and each answer's status must be one the
document declares for that operation, with a body its schema accepts; the
good requests must match their request schema; every operation of the
document must be reached.  The schemas are checked by a small JSON Schema
validator here, which refuses any keyword it does not implement, so the
document cannot lean on a rule nothing checks.

Run: SEMID_BIN=/path/to/bin /usr/bin/python3 tests/server/test_openapi.py
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
import test_api_doc as D  # noqa: E402

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto",
                    "openapi.json")
# what the validator implements; annotations it may ignore
CHECKED = {"type", "properties", "required", "additionalProperties", "items", "enum", "const",
           "oneOf", "allOf", "$ref", "minimum", "maximum", "minItems", "maxItems", "minLength",
           "maxLength", "pattern", "minProperties"}
ANNOTATIONS = {"description", "default"}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class Invalid(Exception):
    pass


class Validator:
    def __init__(self, spec):
        self.spec = spec

    def resolve(self, ref):
        if not ref.startswith("#/"):
            raise Invalid("only local $ref: %s" % ref)
        node = self.spec
        for part in ref[2:].split("/"):
            if part not in node:
                raise Invalid("$ref %s does not resolve" % ref)
            node = node[part]
        return node

    def check_schema(self, schema, where):
        """Every keyword is one this validator implements."""
        if not isinstance(schema, dict):
            raise Invalid("%s: a schema must be an object" % where)
        unknown = set(schema) - CHECKED - ANNOTATIONS
        if unknown:
            raise Invalid("%s: keywords not checked by this test: %s" % (where, sorted(unknown)))
        if "$ref" in schema:
            self.resolve(schema["$ref"])
        for k, sub in schema.get("properties", {}).items():
            self.check_schema(sub, "%s.properties.%s" % (where, k))
        for k in ("items",):
            if k in schema:
                self.check_schema(schema[k], "%s.%s" % (where, k))
        if isinstance(schema.get("additionalProperties"), dict):
            self.check_schema(schema["additionalProperties"], where + ".additionalProperties")
        for k in ("oneOf", "allOf"):
            for i, sub in enumerate(schema.get(k, [])):
                self.check_schema(sub, "%s.%s[%d]" % (where, k, i))

    def validate(self, v, schema, where="$"):
        if "$ref" in schema:
            self.validate(v, self.resolve(schema["$ref"]), where)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(TYPES[t](v) for t in types):
                raise Invalid("%s: %r is not %s" % (where, v, "/".join(types)))
        if "enum" in schema and v not in schema["enum"]:
            raise Invalid("%s: %r is not one of %r" % (where, v, schema["enum"]))
        if "const" in schema and v != schema["const"]:
            raise Invalid("%s: %r is not %r" % (where, v, schema["const"]))
        if TYPES["number"](v):
            if "minimum" in schema and v < schema["minimum"]:
                raise Invalid("%s: %r < %r" % (where, v, schema["minimum"]))
            if "maximum" in schema and v > schema["maximum"]:
                raise Invalid("%s: %r > %r" % (where, v, schema["maximum"]))
        if isinstance(v, str):
            if len(v) < schema.get("minLength", 0):
                raise Invalid("%s: %r is too short" % (where, v))
            if "maxLength" in schema and len(v) > schema["maxLength"]:
                raise Invalid("%s: %r is too long" % (where, v))
            if "pattern" in schema and not re.search(schema["pattern"], v):
                raise Invalid("%s: %r does not match %s" % (where, v, schema["pattern"]))
        if isinstance(v, list):
            if len(v) < schema.get("minItems", 0):
                raise Invalid("%s: fewer than %d items" % (where, schema["minItems"]))
            if "maxItems" in schema and len(v) > schema["maxItems"]:
                raise Invalid("%s: more than %d items" % (where, schema["maxItems"]))
            for i, x in enumerate(v):
                if "items" in schema:
                    self.validate(x, schema["items"], "%s[%d]" % (where, i))
        if isinstance(v, dict):
            if len(v) < schema.get("minProperties", 0):
                raise Invalid("%s: fewer than %d members" % (where, schema["minProperties"]))
            for k in schema.get("required", []):
                if k not in v:
                    raise Invalid("%s: no %r" % (where, k))
            props = schema.get("properties", {})
            for k, x in v.items():
                if k in props:
                    self.validate(x, props[k], "%s.%s" % (where, k))
                elif schema.get("additionalProperties") is False:
                    raise Invalid("%s: %r is not a known member" % (where, k))
                elif isinstance(schema.get("additionalProperties"), dict):
                    self.validate(x, schema["additionalProperties"], "%s.%s" % (where, k))
        for sub in schema.get("allOf", []):
            self.validate(v, sub, where)
        if "oneOf" in schema:
            good = 0
            for sub in schema["oneOf"]:
                try:
                    self.validate(v, sub, where)
                    good += 1
                except Invalid:
                    pass
            if good != 1:
                raise Invalid("%s: matches %d of oneOf's schemas, not one" % (where, good))


def load_spec():
    with open(SPEC) as f:
        return json.load(f)


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(spec):
    """[(method, template, regex, operation)]"""
    out = []
    for template, item in spec["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        for method, op in item.items():
            if method in METHODS:
                out.append((method.upper(), template, rx, op))
    return out


def response(spec, op, status):
    """@op's response for @status (a $ref to components.responses resolved),
    or None when it declares none."""
    r = op["responses"].get(str(status))
    while r is not None and "$ref" in r:
        r = Validator(spec).resolve(r["$ref"])
    return r


def headers_of(spec, resp):
    """{name: header object} that @resp declares, $refs resolved."""
    v = Validator(spec)
    return {name: v.resolve(h["$ref"]) if "$ref" in h else h
            for name, h in resp.get("headers", {}).items()}


def check_headers(v, spec, resp, got_h, where):
    """The headers @resp declares are in @got_h (lower-case names) when
    required, and valid for their schema where present (an integer schema
    reads the value as a decimal integer).  Raises Invalid."""
    for name, h in headers_of(spec, resp).items():
        value = got_h.get(name.lower())
        if value is None:
            if h.get("required"):
                raise Invalid("%s: no %s header, which the document requires" % (where, name))
            continue
        if h["schema"].get("type") == "integer":
            if not re.fullmatch(r"[0-9]+", value):
                raise Invalid("%s: %s %r is not an integer" % (where, name, value))
            value = int(value)
        v.validate(value, h["schema"], "%s: header %s" % (where, name))


class TestOpenApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.spec = load_spec()
        cls.v = Validator(cls.spec)
        cls.ops = operations(cls.spec)
        cls.reached = set()

    def find(self, method, path):
        bare = path.partition("?")[0]
        hits = [(t, op) for m, t, rx, op in self.ops if m == method and rx.match(bare)]
        self.assertLessEqual(len(hits), 1, (method, path, hits))
        return hits[0] if hits else (None, None)

    def check(self, srv, method, path, body=None, headers=None):
        """Send one request; its answer must be declared and valid.  -> status."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = dict(headers or {})
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        st, got_h, got = srv.request(method, path, data, h)
        template, op = self.find(method, path)
        if template is None:
            # only an unknown route or a known one with another method
            self.assertIn(st, (404, 405), (method, path))
            self.v.validate(json.loads(got), {"$ref": "#/components/schemas/Error"})
            return st
        self.reached.add((method, template))
        self.assertTrue(str(st) in op["responses"], "%s %s answered %d, which the document "
                        "does not declare" % (method, path, st))
        content = response(self.spec, op, st).get("content", {})
        ctype = got_h.get("content-type", "").partition(";")[0]
        self.assertIn(ctype, content, (method, path, st))
        try:
            check_headers(self.v, self.spec, response(self.spec, op, st), got_h,
                          "%s %s -> %d" % (method, path, st))
        except Invalid as e:
            self.fail(str(e))
        schema = content[ctype]["schema"]
        value = json.loads(got) if ctype == "application/json" else got.decode()
        try:
            self.v.validate(value, schema)
        except Invalid as e:
            self.fail("%s %s -> %d: %s" % (method, path, st, e))
        if 200 <= st < 300 and data is not None and "requestBody" in op:
            try:
                self.v.validate(json.loads(data),
                                op["requestBody"]["content"]["application/json"]["schema"])
            except Invalid as e:
                self.fail("%s %s was served, but its body breaks the request schema: %s"
                          % (method, path, e))
        return st

    def test_0_document(self):
        self.assertEqual(self.spec["openapi"], "3.1.0")
        for name, schema in self.spec["components"]["schemas"].items():
            self.v.check_schema(schema, name)
        for template, item in self.spec["paths"].items():
            # the methods, and the path's description (where 405 is told)
            self.assertLessEqual(set(item) - set(METHODS), {"description"}, template)
        for method, template, _, op in self.ops:
            self.assertIn(method, ("GET", "POST", "DELETE"), template)
            self.assertIn("operationId", op)
            for code in op["responses"]:
                resp = response(self.spec, op, code)
                self.assertTrue(code == "default" or re.fullmatch(r"[1-5]\d\d", code), code)
                for ctype, c in resp.get("content", {}).items():
                    self.v.check_schema(c["schema"], "%s %s %s" % (method, template, code))
                for name, h in headers_of(self.spec, resp).items():
                    self.assertLessEqual(set(h), {"description", "required", "schema"}, name)
                    self.v.check_schema(h["schema"], "%s %s %s %s" % (method, template, code,
                                                                       name))
                # every 503 tells when to retry (api.md: "carries Retry-After")
                if code == "503":
                    self.assertTrue(headers_of(self.spec, resp).get("Retry-After", {})
                                    .get("required"), (method, template))
            if "requestBody" in op:
                self.v.check_schema(op["requestBody"]["content"]["application/json"]["schema"],
                                    template)

    def test_1_validator_refuses(self):
        """The validator is not vacuous: a few wrong bodies fail."""
        bad = [
            ({"model_version": "m", "results": [{"codes": ["7"], "sid": "7", "distance": 0}]},
             "EncodeResponse"),
            ({"model_version": "m", "results": [], "extra": 1}, "EncodeResponse"),
            ({"inputs": [{"embedding": [1], "embedding_b64": "AAAA"}]}, "EncodeRequest"),
            ({"inputs": [{"embedding": [1]}]}, "AssignRequest"),
            ({"error": {"code": "teapot", "message": "x"}}, "Error"),
            ({"status": "ok", "model_version": "m"}, "Ready"),
        ] + [
            # EncodeResult.sid: the dash or the tokens form, as the server writes them
            ({"model_version": "m", "results": [{"codes": [7, 1], "sid": sid, "distance": 0}]},
             "EncodeResponse")
            for sid in ("", "7-1-", "-7-1", "7--1", "07-1", "7_1", "7 1", "<a_7><b_1",
                        "<a_7>-1", "<A_7>", "<a_07>", "<q_7>", "<a_>", "a_7")
        ]
        for value, name in bad:
            with self.subTest(name=name, value=value), self.assertRaises(Invalid):
                self.v.validate(value, {"$ref": "#/components/schemas/" + name})
        for sid in ("7", "0", "7-1-200", "1048575-0", "<a_7>", "<a_7><b_1><c_200>",
                    "".join("<%s_1>" % chr(97 + i) for i in range(16))):
            self.v.validate({"model_version": "m", "results": [{"codes": [7], "sid": sid,
                                                                 "distance": 0}]},
                            {"$ref": "#/components/schemas/EncodeResponse"})
        with self.assertRaises(Invalid):
            self.v.check_schema({"type": "string", "format": "uuid"}, "x")
        # and the header check: a 503 without Retry-After, or with a date
        op = self.spec["paths"]["/v1/sids"]["get"]
        for got in ({}, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"},
                    {"retry-after": "-1"}, {"retry-after": "3601"}):
            with self.subTest(got=got), self.assertRaises(Invalid):
                check_headers(self.v, self.spec, response(self.spec, op, 503), got, "503")
        check_headers(self.v, self.spec, response(self.spec, op, 503), {"retry-after": "1"},
                      "503")
        with self.assertRaises(Invalid):  # an X-Request-Id of 129 characters
            check_headers(self.v, self.spec, response(self.spec, op, 200),
                          {"x-request-id": "x" * 129}, "200")

    def test_2_live(self):
        with open(D.DOC) as f:
            text = f.read()
        m = re.search(r"^    semid-server (--model demo\.safetensors.*)$", text, re.M)
        work = tempfile.mkdtemp(prefix="semid-openapi-")
        model = os.path.join(work, "demo.safetensors")
        T.doc_model(model)
        srv = T.Server(m.group(1).replace("demo.safetensors", model).split(), work)
        try:
            blocks = D.http_blocks(text)
            for req in blocks[0::2]:
                line, headers, body = D.split_message(req)
                method, path, _ = line.split()
                with self.subTest(request=line):
                    self.check(srv, method, path, body.encode() if body else None, headers)
            emb = [0.12, -0.5, 0.33, 0.9]
            self.assertEqual(self.check(srv, "GET", "/v1/users/u-1001"), 200)
            self.assertEqual(self.check(srv, "GET", "/v1/users/u-nobody"), 404)
            admin = {"Authorization": "Bearer demo-token"}
            self.assertEqual(self.check(srv, "DELETE", "/v1/users/u-1001", None, admin), 200)
            self.assertEqual(self.check(srv, "DELETE", "/v1/users/u-1001", None, admin), 404)
            self.assertEqual(self.check(srv, "DELETE", "/v1/users/u-1001"), 403)
            self.assertEqual(self.check(srv, "DELETE", "/v1/items/a%00b", None, admin), 400)
            self.assertEqual(self.check(srv, "DELETE", "/v1/items/sku-1", None,
                                        {"Authorization": "Bearer wrong"}), 403)
            self.assertEqual(self.check(srv, "POST", "/v1/users:delete", {"ids": ["u-1001", 5]},
                                        admin), 200)
            self.assertEqual(self.check(srv, "POST", "/v1/users:delete", {"ids": ["u-1"]}), 403)
            self.assertEqual(self.check(srv, "POST", "/v1/items:delete", {"ids": []}, admin), 400)
            self.assertEqual(self.check(srv, "POST", "/v1/items:delete", {"ids": ["a"] * 9},
                                        admin), 413)
            self.assertEqual(self.check(srv, "POST", "/v1/items:delete", b"ids=a",
                                        dict(admin, **{"Content-Type": "text/plain"})), 415)
            self.assertEqual(self.check(srv, "GET", "/v1/items:delete"), 405)
            self.assertEqual(self.check(srv, "GET", "/v1/sids?prefix=5&tower=user"), 200)
            self.assertEqual(self.check(srv, "GET", "/v1/sids?limit=0"), 400)
            self.assertEqual(self.check(srv, "POST", "/v1/items:encode",
                                        {"inputs": [{"embedding": emb}] * 9}), 413)
            self.assertEqual(self.check(srv, "POST", "/v1/items:assign",
                                        {"inputs": [{"id": 7, "embedding": emb}]}), 200)
            self.assertEqual(self.check(srv, "POST", "/v1/items:assign",
                                        {"inputs": [{"id": "x", "embedding": emb}],
                                         "top_k": 2}), 400)
            self.assertEqual(self.check(srv, "POST", "/v1/users:encode",
                                        {"inputs": [{"embedding": [1, 2, 3, 4]}], "top_k": 2,
                                         "return_quantized": True}), 200)
            # both forms of sid, against EncodeResult.sid's pattern
            for fmt in ("dash", "tokens"):
                self.assertEqual(self.check(srv, "POST", "/v1/users:encode",
                                            {"inputs": [{"embedding": [1, 2, 3, 4]}] * 2,
                                             "format": fmt}), 200)
            for path in ("/healthz", "/readyz", "/v1/model", "/metrics", "/v1/sids"):
                self.assertEqual(self.check(srv, "POST", path, b"{}"), 405)
            self.assertEqual(self.check(srv, "POST", "/v1/admin/reload", None,
                                        {"Authorization": "Bearer wrong"}), 403)
            with open(model, "r+b") as f:
                f.truncate(100)
            self.assertEqual(self.check(srv, "POST", "/v1/admin/reload", None,
                                        {"Authorization": "Bearer demo-token"}), 422)
        finally:
            self.assertEqual(srv.stop(), 0)

        # no model: the 503s; no registry (--registry none): the 501s
        srv = T.Server(["--model", os.path.join(work, "none.safetensors"), "--allow-empty",
                        "--registry", "none", "--admin-token", "t"], work)
        try:
            self.assertEqual(self.check(srv, "GET", "/readyz"), 503)
            self.assertEqual(self.check(srv, "GET", "/v1/model"), 503)
            self.assertEqual(self.check(srv, "POST", "/v1/items:encode",
                                        {"inputs": [{"embedding": [1, 2, 3, 4]}]}), 503)
            self.assertEqual(self.check(srv, "GET", "/v1/items/sku-1"), 501)
            self.assertEqual(self.check(srv, "GET", "/v1/sids/1-2-3-0"), 501)
            self.assertEqual(self.check(srv, "GET", "/v1/sids"), 501)
            for path in ("/v1/items/sku-1", "/v1/users/u-1"):
                self.assertEqual(self.check(srv, "DELETE", path, None,
                                            {"Authorization": "Bearer t"}), 501)
            for path in ("/v1/items:delete", "/v1/users:delete"):
                self.assertEqual(self.check(srv, "POST", path, {"ids": ["a"]},
                                            {"Authorization": "Bearer t"}), 501)
        finally:
            self.assertEqual(srv.stop(), 0)
            shutil.rmtree(work, ignore_errors=True)
        every = {(m, t) for m, t, _, _ in self.ops}
        self.assertEqual(every - self.reached, set(), "operations no request reached")


if __name__ == "__main__":
    unittest.main(verbosity=2)
