#!/usr/bin/python3
"""Write the seed corpora and dictionaries of the libFuzzer harnesses.

    /usr/bin/python3 tests/fuzz/make_corpus.py        (from the repository root)

Writes tests/fuzz/corpus/<target>/<name> (a few small, deterministic files per
target: valid inputs that reach deep into each parser, and a few typical
rejections) and tests/fuzz/dict/<target>.dict (the tokens each format is made
of).  The output is the same bytes on every run, so the committed seeds can be
regenerated and compared (`git diff --exit-code tests/fuzz`).  Only the
standard library is used: the files are built by hand from the formats in
proto/model-format.md, proto/api.md, numpy's .npy spec and trainer/data.h,
independently of the C code under test.
"""
import base64
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), laid out back to back."""
    header, off, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def grid(rows, cols, scale, shift=0):
    """Deterministic small floats (exact in float32), different in every cell."""
    return [scale * (((r * cols + c + shift) * 7) % 11 - 5) / 4 for r in range(rows)
            for c in range(cols)]


def tower(name, dims, levels, bias=True):
    """dims: D, H.., E; levels: K per level. Returns the safetensors entries."""
    out = []
    for i in range(len(dims) - 1):
        n_in, n_out = dims[i], dims[i + 1]
        out.append(("%s.encoder.%d.weight" % (name, i), "F32", (n_out, n_in),
                    f32(grid(n_out, n_in, 0.5, i))))
        if bias:
            out.append(("%s.encoder.%d.bias" % (name, i), "F32", (n_out,),
                        f32(grid(1, n_out, 0.125, i))))
    E = dims[-1]
    for l, K in enumerate(levels):
        out.append(("%s.codebook.%d" % (name, l), "F32", (K, E), f32(grid(K, E, 0.5 ** l, l))))
    return out


def semid_meta(towers, version="fuzz-1", **extra):
    meta = {"format_version": 1, "model_version": version, "towers": towers}
    meta.update(extra)
    return {"semid": json.dumps(meta, sort_keys=True)}


def model_seeds():
    relu = {"activation": "relu", "input_norm": "none"}
    return {
        "item_relu_2layer": safetensors(tower("item", (4, 5, 3), (4, 3)),
                                        semid_meta({"item": relu})),
        "two_towers_gelu_l2": safetensors(
            tower("item", (3, 2), (3, 2, 2), bias=False) +
            tower("user", (2, 4, 2), (2,)),
            semid_meta({"item": {"activation": "gelu", "input_norm": "l2"},
                        "user": {"activation": "silu", "input_norm": "none"}})),
        "extra_tensors_tanh": safetensors(
            tower("item", (2, 2, 2), (2, 2)) +
            [("item.decoder.0.weight", "F32", (2, 2), f32([1, 0, 0, 1])),
             ("step", "I64", (), struct.pack("<q", 7)),
             ("mask", "BOOL", (3,), b"\x01\x00\x01")],
            dict(semid_meta({"item": {"activation": "tanh", "input_norm": "none"}},
                            created_at="2026-01-01T00:00:00Z"), note="seed")),
        "identity_1layer": safetensors(tower("user", (2, 2), (3,)),
                                       semid_meta({"user": {"activation": "identity",
                                                            "input_norm": "l2"}})),
        # rejections: a NaN codeword, a layer chain that breaks, a bad version
        "bad_nan_codebook": safetensors(
            tower("item", (2, 2), (1,))[:-1] +
            [("item.codebook.0", "F32", (1, 2), f32([0.5, math.nan]))],
            semid_meta({"item": relu})),
        "bad_chain": safetensors(
            [("item.encoder.0.weight", "F32", (3, 2), f32(grid(3, 2, 1))),
             ("item.encoder.1.weight", "F32", (2, 2), f32(grid(2, 2, 1))),
             ("item.codebook.0", "F32", (2, 2), f32(grid(2, 2, 1)))],
            semid_meta({"item": relu})),
        "bad_format_version": safetensors(tower("item", (2, 2), (2,)),
                                          {"semid": json.dumps({"format_version": 2,
                                                                "model_version": "x",
                                                                "towers": {"item": relu}})}),
    }


def safetensors_seeds():
    seeds = dict(model_seeds())
    seeds.update({
        "empty_header": safetensors([]),
        "meta_only": safetensors([], {"a": "b", "k\u00e9y": "v\\\"al\u2603"}),
        "dtypes": safetensors([
            ("f64", "F64", (2,), struct.pack("<2d", 1.5, -2)),
            ("f16", "F16", (1, 2), b"\x00\x3c\x00\xc0"),
            ("bf16", "BF16", (2,), b"\x80\x3f\x00\x40"),
            ("i64", "I64", (), struct.pack("<q", -1)),
            ("i32", "I32", (1,), struct.pack("<i", 42)),
            ("i16", "I16", (2, 1), struct.pack("<2h", 1, -1)),
            ("i8", "I8", (3,), b"\x01\xff\x7f"),
            ("u8", "U8", (0, 4), b""),
            ("bool", "BOOL", (1, 1, 1), b"\x01"),
        ]),
        "unaligned_header": (lambda t: struct.pack("<Q", len(t)) + t + b"\x00" * 4)(
            b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
        "bad_overlap": (lambda t: struct.pack("<Q", len(t)) + t + b"\x00" * 8)(
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'),
    })
    return seeds


def npy(descr, shape, raw, version=(1, 0), fortran=False, pad_to=64):
    shape_txt = "(%s)" % ("%d," % shape[0] if len(shape) == 1 else ", ".join(map(str, shape)))
    text = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", shape_txt)
    pre = 10 if version[0] == 1 else 12
    text += " " * (-(pre + len(text) + 1) % pad_to) + "\n"
    lenfmt = "<H" if version[0] == 1 else "<I"
    return (b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(text)) + text.encode() +
            raw)


def npy_seeds():
    return {
        "f4_3x4": npy("<f4", (3, 4), f32(grid(3, 4, 0.5))),
        "f8_2x3_v2": npy("<f8", (2, 3), struct.pack("<6d", *grid(2, 3, 0.25)), version=(2, 0)),
        "i4_2x2_v3": npy("<i4", (2, 2), struct.pack("<4i", 1, -2, 3, -4), version=(3, 0)),
        "f4_7x1_chunks": npy("<f4", (7, 1), f32(grid(7, 1, 1.0))),
        "f4_0x5": npy("<f4", (0, 5), b""),
        "f8_inf_row1": npy("<f8", (2, 2), struct.pack("<4d", 1, 2, math.inf, 4)),
        "f8_big": npy("<f8", (1, 2), struct.pack("<2d", 1e300, 1)),
        "f4_nan": npy("<f4", (2, 1), f32([0.0, math.nan])),
        "f2_2x3_sub_inf": npy("<f2", (2, 3), struct.pack("<6e", 1, -2, 65504, 2.0 ** -24, 0,
                                                           math.inf)),
        "bad_fortran": npy("<f4", (2, 2), f32([1, 2, 3, 4]), fortran=True),
        "bad_1d": npy("<f4", (3,), f32([1, 2, 3])),
        "bad_truncated": npy("<f4", (4, 4), f32([1, 2, 3])),
        "bad_bigendian": npy(">f4", (1, 1), b"\x3f\x80\x00\x00"),
    }


def b64(values):
    return base64.b64encode(f32(values)).decode()


def api_seeds():
    """Bodies for a tower of width 4 (the harness's D), at most 8 inputs."""
    row = [0.5, -1.25, 3e-3, 1e2]
    bodies = {
        "one_json": {"inputs": [{"id": "sku-1", "embedding": row}]},
        "one_b64": {"inputs": [{"embedding_b64": b64(row)}]},
        "mixed_options": {"inputs": [{"id": 7, "embedding": [1, 2, 3, 4]},
                                     {"id": "b\u00e9\u2603\"\\/", "embedding_b64": b64(row)},
                                     {"embedding": [-0.0, 1e-7, 12345.678, -2.5e+3]}],
                          "top_k": 4, "return_quantized": True, "format": "tokens"},
        "dash_topk16": {"inputs": [{"embedding": row}], "top_k": 16, "format": "dash",
                        "return_quantized": False},
        "bad_length": {"inputs": [{"embedding": [1, 2, 3]}]},
        "bad_both_fields": {"inputs": [{"embedding": row, "embedding_b64": b64(row)}]},
        "too_many": {"inputs": [{"embedding": row}] * 9},
    }
    out = {k: json.dumps(v).encode() for k, v in bodies.items()}
    # spellings only a hand-written body has: whitespace, escapes, no padding
    out["spacing_escapes"] = (b'\r\n{ "inputs" :[ {"embedding_b64":"AAAAPwAAoL8AAEBAAADIQg",'
                              b'"id":"\\u00e9\\ud83d\\ude00\\n"} ] ,"top_k":2}\n')
    out["bad_json"] = b'{"inputs": [{"embedding": [1, 2, 3, 4]}'
    out["bad_b64"] = b'{"inputs": [{"embedding_b64": "AAAA*AAA"}]}'
    return out


def trainer_seeds():
    return {
        "tsv_basic": b"0\t1\n1\t2\n15\t12\n",
        "tsv_extra_columns_crlf": b"3\t4\t1700000000\tclick\r\n4\t5\t9\r\n5\t0",
        "tsv_cold_item": b"0\t1\n2\t13\n",
        "tsv_ragged": b"0\t1\n2\n",
        "tsv_empty_line": b"0\t1\n\n1\t1\n",
        "cold_list": b"13\n14\n15\n",
        "cold_repeat": b"13\n13\n",
        "npy_f4_3x2": npy("<f4", (3, 2), f32(grid(3, 2, 0.5))),
        "npy_f8_nan": npy("<f8", (2, 2), struct.pack("<4d", 1, math.nan, 3, 4)),
    }


def config_seeds():
    """The documented example (config/semid-server.json) and variations of it."""
    with open(os.path.join(HERE, "..", "..", "config", "semid-server.json"), "rb") as f:
        example = f.read()
    return {
        "example": example,
        "small": b'{"listen": "[::1]:0", "model": "m.safetensors", "workers": 1, '
                 b'"log_level": "debug", "admin_token": "t\\u00e9"}',
        "empty_object": b"{}",
        "bad_unknown_key": b'{"max_batchh": 4}',
        "bad_type": b'{"max_batch": "4"}',
        "bad_range": b'{"max_batch": -1, "queue_rows": 9223372036854775807}',
        "long_string": b'{"listen": "' + b"a" * 300 + b'"}',
    }


def registry_seeds():
    """First byte: 0 text (sid, prefix, id), 1 TSV import, 2 JSON-lines import."""
    t = b"2026-01-02T03:04:05.006Z"
    emb = base64.b64encode(f32([0.5, -1.0, 2.0])).decode().encode()
    head = b"kind\tid\tsid\tmodel_version\tcreated_at\tupdated_at\tembedding_b64\n"
    row = b"item\tsku-1\t12-7-200-0\tv1\t" + t + b"\t" + t + b"\t\n"
    js = (b'{"kind":"item","id":"sku-1","codes":[12,7,200],"suffix":0,"sid":"12-7-200-0",'
          b'"model_version":"v1","created_at":"' + t + b'","updated_at":"' + t + b'"}\n')
    return {
        "text_sid": b"\x0012-7-200-0",
        "text_prefix": b"\x0012-7",
        "text_bad_sid": b"\x001-02",
        "text_id_utf8": b"\x00sku-\xc3\xa9\xf0\x9f\x98\x80",
        "text_id_control": b"\x00a\x7fb",
        "tsv_header_row": b"\x01" + head + row,
        "tsv_six_columns": b"\x01" + row[:-2] + b"\n",
        "tsv_embedding": b"\x01user\tu-1\t3-4-1\tv2\t" + t + b"\t" + t + b"\t" + emb + b"\n",
        "tsv_conflicts": b"\x01" + row + row.replace(b"sku-1", b"sku-2") +
                         row.replace(b"-0\t", b"-1\t"),
        "tsv_bad_time": b"\x01" + row.replace(b"03:04:05", b"25:04:05"),
        "jsonl_row": b"\x02" + js,
        "jsonl_embedding": b"\x02" + js.replace(b"}\n", b',"embedding_b64":"' + emb + b'"}\n'),
        "jsonl_disagrees": b"\x02" + js.replace(b'"suffix":0', b'"suffix":1'),
        "jsonl_crlf_blank": b"\x02" + js.replace(b"\n", b"\r\n") + b"\r\n" + js,
    }


CONFIG_KEYS = [b"listen", b"model", b"allow_empty", b"watch", b"reload_debounce_ms", b"workers",
               b"http_threads", b"max_batch", b"max_delay_us", b"queue_rows", b"max_body_bytes",
               b"max_inputs", b"admin_token", b"shutdown_timeout_ms", b"connection_timeout_s",
               b"connection_limit", b"retry_after_s", b"entropy_window", b"log_level",
               b"registry", b"registry_embeddings"]

DICTS = {
    "safetensors": [b"__metadata__", b"dtype", b"shape", b"data_offsets", b"F64", b"F32",
                    b"F16", b"BF16", b"I64", b"I32", b"I16", b"I8", b"U8", b"BOOL", b"[]",
                    b"[0,0]", b"18446744073709551615", b"9223372036854775807", b"4294967296",
                    b"\\u0000", b"\\ud800", b"{}", b'":"', b'","'],
    "model": [b"semid", b"format_version", b"model_version", b"towers", b"item", b"user",
              b"activation", b"input_norm", b"relu", b"silu", b"gelu", b"tanh", b"identity",
              b"none", b"l2", b".encoder.", b".weight", b".bias", b".codebook.",
              b"item.encoder.0.weight", b"user.codebook.0", b'\\"', b"65536", b"1048576"],
    "npy": [b"\x93NUMPY", b"\x01\x00", b"\x02\x00", b"\x03\x00", b"'descr'", b"'fortran_order'",
            b"'shape'", b"'<f4'", b"'<f8'", b"'<f2'", b"'<i4'", b"'>f4'", b"True", b"False", b"(1, 1)",
            b",)", b"18446744073709551615", b"L"],
    "api": [b"inputs", b"embedding", b"embedding_b64", b"id", b"top_k", b"return_quantized",
            b"format", b"dash", b"tokens", b"true", b"false", b"null", b"1e39", b"-0.0",
            b"\\u0000", b"\\ud83d\\ude00", b"AAAAPw==", b"AACAfw==", b"2.5e-45",
            b"9223372036854775808"],
    "trainer_data": [b"\t", b"\r\n", b"2147483647", b"2147483648", b"\x93NUMPY", b"'<f4'",
                     b"'shape'", b"13", b"15", b"16"],
}
DICTS["registry"] = [b"\t", b"\r\n", b"kind", b"item", b"user", b"sid", b"codes", b"suffix",
                     b"model_version", b"created_at", b"updated_at", b"embedding_b64",
                     b"2026-01-02T03:04:05.006Z", b"1048575", b"1048576",
                     b"9223372036854775807", b"9223372036854775808", b"-0-", b"\\u0000",
                     b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"AAAAPw=="]
DICTS["model"] = DICTS["safetensors"] + DICTS["model"]
DICTS["config"] = CONFIG_KEYS + [b"true", b"false", b"null", b"debug", b"info", b"warn",
                                 b"error", b"none", b"2147483648", b"-1", b"1e3", b"0.5",
                                 b"127.0.0.1:0", b"[::1]:8080"]


def dict_entry(word):
    """A libFuzzer dictionary line: printable ASCII as is, \\\\ and \\" escaped,
    everything else as \\xHH."""
    out = []
    for b in word:
        c = chr(b)
        if c in '\\"':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append("\\x%02X" % b)
    return '"%s"\n' % "".join(out)


def main():
    sets = {"model": model_seeds(), "safetensors": safetensors_seeds(), "npy": npy_seeds(),
            "api": api_seeds(), "trainer_data": trainer_seeds(), "config": config_seeds(),
            "registry": registry_seeds()}
    for target, seeds in sets.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            os.remove(os.path.join(d, name))
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    os.makedirs(os.path.join(HERE, "dict"), exist_ok=True)
    for target, words in DICTS.items():
        with open(os.path.join(HERE, "dict", target + ".dict"), "w") as f:
            f.write("# libFuzzer dictionary for fuzz_%s (written by make_corpus.py)\n" % target)
            for w in words:
                f.write(dict_entry(w))


if __name__ == "__main__":
    main()
