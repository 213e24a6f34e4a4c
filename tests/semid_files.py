"""Files the python tests write: a safetensors model file, byte for byte.

Written from the format's definition (8-byte little-endian header length, the
JSON header padded with spaces to 8 bytes, then the raw little-endian data),
not through semid's own writer, so a test that loads the result checks the C
loader against an independent producer.  Shared by tests/cli and tests/server
(tests/core/test_parity.py keeps its own copy on purpose: the parity reference
stands alone).

And files the programs write: writing_into, for the tests in tests/cli and
tests/trainer that interrupt a program in the middle of writing its output.
"""
import hashlib
import json
import os
import struct

import numpy as np


def safetensors_bytes(tensors, metadata, checksum=False):
    """tensors: list of (name, float32 array); metadata: dict str -> str.
    checksum: also record the data section's SHA-256 as metadata
    "data_sha256", as semid's own writer does (the loader then checks it)."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors:
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = dict(metadata)
    if checksum:
        header["__metadata__"]["data_sha256"] = hashlib.sha256(b"".join(blobs)).hexdigest()
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(blobs)


def writing_into(pid, directory, *besides, written=False):
    """Whether process @pid has a file in @directory open (other than
    @besides): an output being written, named or not (O_TMPFILE: "DIR/#123
    (deleted)").  written: only a file it has written something into."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if (target.startswith(directory + "/") and target not in besides and
                    (not written or os.stat(f"/proc/{pid}/fd/{fd}").st_size > 0)):
                return True
        except OSError:
            continue
    return False
