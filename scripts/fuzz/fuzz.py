#!/usr/bin/env python3
"""Mutation fuzzing of SeqCell's file readers through the real CLI.

Builds a corpus of valid files (checkpoints of every cell kind made with `seqcell new`, one
written by h5py alone, `run` inputs as .h5 and .npy, safetensors, Keras .keras / .h5 /
.weights.h5 / JSON), mutates them with fixed seeds, runs the command that reads each one in
a subprocess with a time limit, and classifies the outcome:

  ok        exit 0
  refused   exit 1 with a one-line `Error:` message            (ok and refused pass)
  crash     killed by a signal, or an exit code other than 0/1
  hang      still running at the time limit
  memory    peak RSS above the limit (--max-rss-mb)
  leftover  an output or temporary file left behind by a failed run, or anything written to TMPDIR
  message   the refusal is not one `Error:` line, or shows a temp path, control characters,
            HDF5 function names or ZIPFoundation error names

Usage:
  scripts/fuzz/fuzz.py --quick                      # a few hundred cases, < 2 minutes
  scripts/fuzz/fuzz.py --cases 10000 --seed 1 --reader safetensors
  scripts/fuzz/fuzz.py --replay fuzz-out/safetensors-000123   # run one kept case again

Failing cases are kept under --out (default fuzz-out/) with the file, the command and what
happened, for replay. The last line is `N passed, N failed`; the exit status is 1 when any
case failed.

Needs Python 3 with numpy and h5py only.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
INTEROP = os.path.join(FIXTURES, "interop")

READERS = ["checkpoint", "input-h5", "input-npy", "safetensors", "keras-zip", "keras-h5", "keras-json", "onnx"]
ONNX = os.path.join(FIXTURES, "onnx")

INTERESTING8 = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10, 0x20, 0x40, 0xFE]
INTERESTING_INTS = [0, 1, 2, 7, 8, 15, 16, 255, 256, 4095, 4096, 65535, 65536, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 2 ** 40, 2 ** 62]
HDF5_SIGNATURES = [b"OHDR", b"OCHK", b"HEAP", b"GCOL", b"TREE", b"SNOD", b"BTHD", b"BTLF", b"FRHP",
                   b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"SMTB", b"SMLI", b"\x89HDF"]
ZIP_SIGNATURES = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"]

# What a message must never show.
MESSAGE_PROBLEMS = [
    (re.compile(r"\bH5[A-Z]{1,2}[a-z]\w*"), "HDF5 function name"),
    (re.compile(r"HDF5-DIAG"), "HDF5 error stack"),
    (re.compile(r"\.tmp-"), "temp path"),
    (re.compile(r"seqcell-keras-"), "temp path"),
    (re.compile(r"ZIPFoundation|ArchiveError|invalidCRC32|checksumMismatch|unreadableArchive|"
                r"invalidEntryPath|invalidCompressionMethod|invalidStartOfCentralDirectoryOffset|"
                r"missingEndOfCentralDirectoryRecord|unreadableFile|invalidLocalHeaderDataOffset"), "ZIPFoundation name"),
    (re.compile(r"Fatal error|Swift runtime failure|Stack dump|Illegal instruction"), "trap text"),
]


# ---------------------------------------------------------------------------------------
# The corpus

def run_checked(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"corpus: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def write_npy(path, array):
    import numpy as np
    np.save(path, array)


def make_safetensors(path, tensors, metadata=None, dtype="F32"):
    """A safetensors file written here (numpy only), tensors in the given order."""
    import numpy as np
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs, offset = [], 0
    np_dtype = {"F32": "<f4", "F64": "<f8", "F16": "<f2"}[dtype]
    for name, arr in tensors:
        b = np.ascontiguousarray(arr, dtype=np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def build_corpus(seqcell, corpus):
    """Writes the valid bases; returns {reader: [(file, command template)]}.

    A command template is a list in which "{case}" is the mutated file and "{out}" the
    output path; "{corpus}" is the corpus folder."""
    import numpy as np
    os.makedirs(corpus, exist_ok=True)
    c = lambda *p: os.path.join(corpus, *p)
    models = {
        "rnn": ["--layer", "rnn:5"],
        "lstm": ["--layer", "lstm:4", "--head", "2"],
        "gru": ["--layer", "gru:3,reset=before"],
        "bidir": ["--layer", "lstm:3:bi:concat,backward_cell=gru"],
        "stacked": ["--layer", "gru:4", "--layer", "rnn:3:reverse", "--layer", "lstm:2:bi:sum", "--head", "2:softmax"],
        "nobias": ["--layer", "lstm:4,bias=false", "--layer", "gru:3:bi,bias=false"],
    }
    for name, layers in models.items():
        run_checked([seqcell, "new", "--input-size", "3", *layers, "--seed", "7", "-o", c(f"ckpt_{name}.h5")])
    # Imported checkpoints carry /model/source (PyTorch names) and @output_steps (Keras last step).
    imported = {
        "torch_net": ["rt_torch_net.safetensors", "--head", "fc", "--head-activation", "tanh"],
        "keras_last": ["rt_keras_bidir_last_lstm_sum_dense.keras"],
    }
    for name, (fixture, *flags) in imported.items():
        run_checked([seqcell, "import", os.path.join(INTEROP, fixture), *flags, "-o", c(f"ckpt_{name}.h5")])
        models[name] = []
    run_checked([sys.executable, os.path.join(FIXTURES, "h5py_checkpoint.py"), c("ckpt_h5py.h5"), c("h5py_expected.h5")])

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3)).astype("float32")
    write_npy(c("input.npy"), x)
    write_npy(c("input_f64.npy"), x.astype("float64"))
    write_npy(c("input_bf.npy"), np.ascontiguousarray(x.transpose(1, 0, 2)))
    import h5py
    with h5py.File(c("input.h5"), "w") as f:
        f["input"] = x
        f["lengths"] = np.array([6, 4], dtype="int32")
    with h5py.File(c("input_states.h5"), "w") as f:
        f["input"] = x
        f["h0"] = rng.standard_normal((1, 2, 4)).astype("float32")
        f["c0"] = rng.standard_normal((1, 2, 4)).astype("float32")

    # Safetensors: the fixtures plus a few written here (metadata, F64, F16, a header of each
    # length class, a big header).
    st = [os.path.join(INTEROP, n) for n in sorted(os.listdir(INTEROP)) if n.endswith(".safetensors")]
    H, I = 3, 2
    lstm = [("weight_ih_l0", rng.standard_normal((4 * H, I))), ("weight_hh_l0", rng.standard_normal((4 * H, H))),
            ("bias_ih_l0", rng.standard_normal(4 * H)), ("bias_hh_l0", rng.standard_normal(4 * H))]
    make_safetensors(c("st_meta.safetensors"), lstm, metadata={"format": "pt", "note": "fuzz"})
    make_safetensors(c("st_f64.safetensors"), lstm, dtype="F64")
    make_safetensors(c("st_f16.safetensors"), lstm, dtype="F16")
    st += [c("st_meta.safetensors"), c("st_f64.safetensors"), c("st_f16.safetensors")]

    keras_zip = [os.path.join(INTEROP, n) for n in sorted(os.listdir(INTEROP))
                 if n.endswith(".keras") and not n.startswith("bad_")]
    keras_h5 = [os.path.join(INTEROP, n) for n in sorted(os.listdir(INTEROP)) if n.endswith(".legacy.h5")]
    keras_h5.append(os.path.join(INTEROP, "keras2_stack.h5"))
    weights_pairs = [(os.path.join(INTEROP, f"{n}.weights.h5"), os.path.join(INTEROP, f"{n}.json"))
                     for n in ("keras_lstm_dense_softmax", "keras_stack", "rt_keras_functional_states")]
    bare = os.path.join(INTEROP, "keras_gru_reset_after.bare.weights.h5")

    seeds = {r: [] for r in READERS}
    for name in models:
        p = c(f"ckpt_{name}.h5")
        seeds["checkpoint"].append((p, ["inspect", "{case}"]))
        seeds["checkpoint"].append((p, ["run", "{case}", "-i", c("input.npy"), "-o", "{out}"]))
    seeds["checkpoint"].append((c("ckpt_h5py.h5"), ["inspect", "{case}"]))
    seeds["checkpoint"].append((c("ckpt_h5py.h5"), ["run", "{case}", "-i", c("input.npy"), "-o", "{out}"]))
    for p in ("input.h5", "input_states.h5"):
        seeds["input-h5"].append((c(p), ["run", c("ckpt_lstm.h5"), "-i", "{case}", "-o", "{out}"]))
    seeds["input-h5"].append((c("input.h5"), ["run", c("ckpt_bidir.h5"), "-i", "{case}", "-o", "{out}"]))
    for p in ("input.npy", "input_f64.npy"):
        seeds["input-npy"].append((c(p), ["run", c("ckpt_gru.h5"), "-i", "{case}", "-o", "{out}"]))
        seeds["input-npy"].append((c(p), ["run", c("ckpt_stacked.h5"), "-i", "{case}", "-o", "{out}"]))
    seeds["input-npy"].append((c("input_bf.npy"), ["run", c("ckpt_rnn.h5"), "-i", "{case}", "--batch-first", "-o", "{out}"]))
    for p in st:
        seeds["safetensors"].append((p, ["import", "{case}", "--from", "pytorch", "-o", "{out}"]))
    for p in keras_zip:
        seeds["keras-zip"].append((p, ["import", "{case}", "--from", "keras", "-o", "{out}"]))
    for p in keras_h5:
        seeds["keras-h5"].append((p, ["import", "{case}", "--from", "keras", "-o", "{out}"]))
    for w, j in weights_pairs:
        seeds["keras-h5"].append((w, ["import", "{case}", "--from", "keras", "--keras-config", j, "-o", "{out}"]))
        seeds["keras-json"].append((j, ["import", w, "--from", "keras", "--keras-config", "{case}", "-o", "{out}"]))
    seeds["keras-h5"].append((bare, ["import", "{case}", "--from", "keras", "-o", "{out}"]))
    # ONNX: exported stacks with heads and states, single nodes with every input, the ONNX
    # package's operator tests with their weights bound.
    onnx_seeds = ["torch_lstm_2layer_bidirectional_tanh_head", "torch_gru_batch_first_softmax_head", "torch_lstm_2layer_states",
                  "node_lstm_bidirectional_lens_init", "node_gru_linear_before_reset0", "node_rnn_no_bias",
                  "node_lstm_peepholes", "node_lstm_acts_g_h", "backend_lstm_batchwise", "backend_gru_seq_length"]
    for n in onnx_seeds:
        p = os.path.join(ONNX, n, "model.onnx")
        if os.path.exists(p):
            seeds["onnx"].append((p, ["import", "{case}", "--from", "onnx", "-o", "{out}"]))
    return seeds


# ---------------------------------------------------------------------------------------
# Mutations

def hdf5_metadata_offsets(data):
    """Offsets worth aiming at in an HDF5 file: signatures of metadata structures and the
    addresses the superblock gives."""
    spots = []
    for sig in HDF5_SIGNATURES:
        i = data.find(sig)
        while i != -1 and len(spots) < 4000:
            spots.append(i)
            i = data.find(sig, i + 1)
    if data[:8] == b"\x89HDF\r\n\x1a\n" and len(data) > 48:
        version = data[8]
        addrs = []
        if version in (0, 1):
            base = 24 if version == 0 else 28
            addrs = [base + 8 * k for k in range(4)]  # base, free-space, EOF, driver info
            addrs.append(base + 32 + 8)  # root symbol table entry's object header address
        else:
            addrs = [12 + 8 * k for k in range(4)]  # base, extension, EOF, root object header
        for a in addrs:
            spots.append(a)
            if a + 8 <= len(data):
                v = struct.unpack("<Q", data[a:a + 8])[0]
                if 0 < v < len(data):
                    spots.append(v)
    return spots


def zip_metadata_offsets(data):
    spots = []
    for sig in ZIP_SIGNATURES:
        i = data.find(sig)
        while i != -1:
            spots.append(i)
            i = data.find(sig, i + 1)
    return spots


def metadata_offsets(data, kind):
    if kind == "hdf5":
        return hdf5_metadata_offsets(data)
    if kind == "zip":
        return zip_metadata_offsets(data)
    if kind == "safetensors" and len(data) >= 8:
        n = struct.unpack("<Q", data[:8])[0]
        return list(range(0, min(8 + n, len(data)), 7))
    if kind == "npy":
        return list(range(0, min(128, len(data))))
    if kind == "protobuf":
        return protobuf_offsets(data)
    return []


def protobuf_offsets(data):
    """Offsets of the tags and length prefixes of a protobuf message and the messages nested in
    it (as far as they parse), where mutations change structure rather than weights."""
    spots = []

    def varint(pos, end):
        v, shift = 0, 0
        while pos < end and shift < 70:
            b = data[pos]
            v |= (b & 0x7F) << shift
            pos += 1
            shift += 7
            if b < 0x80:
                return v, pos
        raise ValueError("varint")

    def walk(pos, end, depth):
        while pos < end and len(spots) < 20000:
            spots.append(pos)
            tag, pos = varint(pos, end)
            wire = tag & 7
            if wire == 0:
                _, pos = varint(pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                spots.append(pos)
                n, pos = varint(pos, end)
                if pos + n > end:
                    raise ValueError("length")
                if depth < 6 and n < (1 << 16):
                    try:
                        walk(pos, pos + n, depth + 1)
                    except ValueError:
                        pass
                pos += n
            else:
                raise ValueError("wire type")

    try:
        walk(0, len(data), 0)
    except ValueError:
        pass
    return spots


def pick_offset(rng, data, spots):
    n = len(data)
    r = rng.random()
    if spots and r < 0.5:
        return min(n - 1, max(0, rng.choice(spots) + rng.randrange(-8, 64)))
    if r < 0.75:
        return rng.randrange(min(n, 1024))
    return rng.randrange(n)


def mutate_bytes(rng, data, kind):
    data = bytearray(data)
    if not data:
        return bytes(data), "empty"
    spots = metadata_offsets(bytes(data), kind)
    n_mut = rng.choice([1, 1, 1, 2, 3, 5, 8])
    ops = []
    for _ in range(n_mut):
        if not data:
            break
        op = rng.choice(["bitflip", "bitflip", "byte", "byte", "int", "int", "truncate", "zero", "dup", "delete", "insert"])
        off = pick_offset(rng, data, spots)
        if op == "bitflip":
            data[off] ^= 1 << rng.randrange(8)
        elif op == "byte":
            data[off] = rng.choice(INTERESTING8)
        elif op == "int":
            width = rng.choice([1, 2, 4, 8])
            v = rng.choice(INTERESTING_INTS) & ((1 << (8 * width)) - 1)
            b = v.to_bytes(width, rng.choice(["little", "big"]))
            data[off:off + width] = b
        elif op == "truncate":
            cut = rng.choice([off, rng.randrange(len(data)), len(data) - rng.randrange(1, 64)])
            data = data[:max(0, cut)]
        elif op == "zero":
            size = rng.choice([4, 8, 16, 64, 256, 1024])
            data[off:off + size] = bytes(min(size, len(data) - off))
        elif op == "dup":
            size = rng.choice([8, 16, 64, 256])
            chunk = data[off:off + size]
            dest = pick_offset(rng, data, spots)
            if rng.random() < 0.5:
                data[dest:dest + len(chunk)] = chunk  # overwrite
            else:
                data[dest:dest] = chunk  # insert
        elif op == "delete":
            size = rng.choice([1, 4, 16, 64])
            del data[off:off + size]
        elif op == "insert":
            size = rng.choice([1, 4, 16])
            data[off:off] = bytes(rng.choice(INTERESTING8) for _ in range(size))
        ops.append(f"{op}@{off}")
    return bytes(data), "+".join(ops)


JSON_TOKENS = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"null", b"true", b"1e400", b"-1", b"0",
               b"18446744073709551616", b"9223372036854775807", b"-9223372036854775808", b"1.5", b"NaN",
               b'"\\u0000"', b'"\\ud800"', b"\xff", b"\xc3", b"\x00", b"[" * 64, b"{\"a\":" * 40]


def mutate_json_text(rng, data):
    data = bytearray(data)
    ops = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        r = rng.random()
        off = rng.randrange(len(data) + 1)
        if r < 0.3:
            # Replace a number with an interesting one.
            nums = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?", bytes(data))]
            if nums:
                a, b = rng.choice(nums)
                data[a:b] = rng.choice([b"0", b"-1", b"1", b"2", b"7", b"65536", b"4294967296", b"9223372036854775807",
                                        b"18446744073709551615", b"1e30", b"-0", b"3.5", b"100000000"])
                ops.append(f"num@{a}")
                continue
        if r < 0.5:
            # Replace a string value with another of the file's strings.
            strs = [m.span() for m in re.finditer(rb'"[^"\\]{0,40}"', bytes(data))]
            if len(strs) >= 2:
                a, b = rng.choice(strs)
                c, d = rng.choice(strs)
                data[a:b] = bytes(data[c:d])
                ops.append(f"str@{a}")
                continue
        if r < 0.7:
            tok = rng.choice(JSON_TOKENS)
            data[off:off] = tok
            ops.append(f"tok@{off}")
        elif r < 0.85:
            size = rng.choice([1, 2, 5, 20])
            del data[off:off + size]
            ops.append(f"del@{off}")
        else:
            a = rng.randrange(len(data) + 1)
            b = min(len(data), a + rng.choice([10, 50, 200]))
            data[off:off] = data[a:b]
            ops.append(f"dup@{off}")
    return bytes(data), "json:" + "+".join(ops)


def mutate_safetensors(rng, data):
    """Header-aware: mutate the JSON header and fix (or not) the length prefix."""
    if len(data) < 8:
        return mutate_bytes(rng, data, "safetensors")
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        return mutate_bytes(rng, data, "safetensors")
    header, body = data[8:8 + n], data[8 + n:]
    r = rng.random()
    if r < 0.15:
        # Many entries (a big header), valid or not.
        count = rng.choice([1000, 5000, 40000])
        extra = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(count)).encode()
        header = header.rstrip()[:-1] + b"," + extra + b"}"
        how = f"entries+{count}"
    else:
        header, how = mutate_json_text(rng, header)
    if rng.random() < 0.8:
        prefix = struct.pack("<Q", len(header))
    else:
        prefix = struct.pack("<Q", rng.choice(INTERESTING_INTS))
    return prefix + header + body, "st-" + how


def mutate_zip_member(rng, data):
    """Rebuilds a .keras archive with one member's content mutated (valid CRCs), so the
    readers behind the zip are reached; or a member replaced by a compression bomb."""
    import io
    try:
        src = zipfile.ZipFile(io.BytesIO(data))
        members = [(i, src.read(i.filename)) for i in src.infolist()]
    except Exception:
        return mutate_bytes(rng, data, "zip")
    idx = rng.randrange(len(members))
    info, content = members[idx]
    r = rng.random()
    if r < 0.1:
        content = b"\x00" * rng.choice([1 << 20, 1 << 24])
        how = "bomb"
    elif info.filename.endswith(".json"):
        content, how = mutate_json_text(rng, content)
    elif info.filename.endswith(".h5"):
        content, how = mutate_bytes(rng, content, "hdf5")
    else:
        content, how = mutate_bytes(rng, content, "other")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i, (inf, cont) in enumerate(members):
            compress = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]) if i == idx else inf.compress_type
            z.writestr(zipfile.ZipInfo(inf.filename, date_time=inf.date_time), content if i == idx else cont,
                       compress_type=compress)
    return out.getvalue(), f"member {info.filename}: {how}"


def mutate(rng, reader, data):
    if reader in ("checkpoint", "input-h5", "keras-h5"):
        return mutate_bytes(rng, data, "hdf5")
    if reader == "input-npy":
        return mutate_bytes(rng, data, "npy")
    if reader == "safetensors":
        return mutate_safetensors(rng, data) if rng.random() < 0.5 else mutate_bytes(rng, data, "safetensors")
    if reader == "keras-zip":
        return mutate_zip_member(rng, data) if rng.random() < 0.5 else mutate_bytes(rng, data, "zip")
    if reader == "keras-json":
        return mutate_json_text(rng, data) if rng.random() < 0.7 else mutate_bytes(rng, data, "json")
    if reader == "onnx":
        return mutate_bytes(rng, data, "protobuf")
    raise ValueError(reader)


# ---------------------------------------------------------------------------------------
# Running one case

def run_case(seqcell, args, timeout, max_rss_mb, workdir, tmpdir):
    """Runs seqcell with args; returns (status, returncode, stdout, stderr, seconds, rss_mb)."""
    env = dict(os.environ, TMPDIR=tmpdir, HDF5_USE_FILE_LOCKING="FALSE")
    out_f = open(os.path.join(workdir, ".stdout"), "w+b")
    err_f = open(os.path.join(workdir, ".stderr"), "w+b")
    start = time.monotonic()
    proc = subprocess.Popen([seqcell, *args], stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL,
                            cwd=workdir, env=env, start_new_session=True)
    status, rusage, hung = None, None, False
    delay = 0.002
    while True:
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid != 0:
            status, rusage = st, ru
            break
        if time.monotonic() - start > timeout:
            hung = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(delay)
        delay = min(0.02, delay * 1.5)
    proc.returncode = 0  # reaped above
    seconds = time.monotonic() - start
    out_f.seek(0)
    err_f.seek(0)
    stdout, stderr = out_f.read(), err_f.read()
    out_f.close()
    err_f.close()
    os.unlink(out_f.name)
    os.unlink(err_f.name)
    rss_mb = rusage.ru_maxrss / 1024 if rusage else 0
    if hung:
        return "hang", None, stdout, stderr, seconds, rss_mb
    if os.WIFSIGNALED(status):
        return "crash", -os.WTERMSIG(status), stdout, stderr, seconds, rss_mb
    return None, os.WEXITSTATUS(status), stdout, stderr, seconds, rss_mb


def classify(seqcell, template, case_path, timeout, max_rss_mb, workdir, tmpdir):
    out = os.path.join(workdir, "out.h5")
    args = [a.replace("{case}", case_path).replace("{out}", out) for a in template]
    status, rc, stdout, stderr, seconds, rss = run_case(seqcell, args, timeout, max_rss_mb, workdir, tmpdir)
    problems = []
    if status is None:
        if rc == 0:
            status = "ok"
        elif rc == 1:
            status = "refused"
        else:
            status = "crash"
            problems.append(f"exit code {rc}")
    if status in ("crash", "hang"):
        problems.append(f"{status} (rc {rc}, {seconds:.1f}s)")
    if rss > max_rss_mb:
        problems.append(f"memory: peak RSS {rss:.0f} MB")
    # Files left behind.
    case_name = os.path.basename(case_path)
    left = [n for n in os.listdir(workdir) if n != case_name and not (status == "ok" and n == "out.h5")]
    if left:
        problems.append("leftover: " + ", ".join(sorted(left)[:5]))
    tmp_left = os.listdir(tmpdir)
    if tmp_left:
        problems.append("leftover in TMPDIR: " + ", ".join(sorted(tmp_left)[:5]))
    if status == "refused":
        text = stderr.decode("utf-8", "replace")
        lines = [l for l in text.split("\n") if l.strip()]
        if len(lines) != 1 or not lines[0].startswith("Error:"):
            problems.append(f"message: not one 'Error:' line ({len(lines)} lines)")
        line = text.rstrip("\n")
        if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line):
            problems.append("message: control characters")
        if tmpdir in line:
            problems.append("message: temp path")
        for pattern, what in MESSAGE_PROBLEMS:
            if pattern.search(line):
                problems.append(f"message: {what}")
    kind = status
    if problems and status in ("ok", "refused"):
        kind = problems[0].split(":")[0].split(" ")[0]
    return {
        "status": status, "kind": kind, "rc": rc, "problems": problems, "args": args, "seconds": seconds,
        "rss_mb": rss, "stderr": shorten(stderr.decode("utf-8", "replace")), "stdout": stdout.decode("utf-8", "replace")[-500:],
    }


def shorten(text, keep=1500):
    return text if len(text) <= 2 * keep else text[:keep] + "\n[...]\n" + text[-keep:]


def clean_dir(path):
    for n in os.listdir(path):
        p = os.path.join(path, n)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def failure_class(result):
    """A short description of what failed, for grouping (e.g. 'crash SIGSEGV inspect')."""
    cmd = result["args"][0]
    if result["status"] == "crash" and result["rc"] is not None and result["rc"] < 0:
        try:
            sig = signal.Signals(-result["rc"]).name
        except ValueError:
            sig = f"signal {-result['rc']}"
        return f"crash {sig} ({cmd})"
    if result["status"] == "hang":
        return f"hang ({cmd})"
    if result["problems"]:
        first = result["problems"][0]
        return f"{first if first.startswith('message') else first.split(':')[0]} ({cmd})"
    return f"{result['status']} ({cmd})"


# ---------------------------------------------------------------------------------------

def campaign(args, seqcell, seeds, reader, cases, out_dir, scratch):
    import concurrent.futures
    import threading
    counts = {k: 0 for k in ("ok", "refused", "crash", "hang", "memory", "leftover", "message")}
    classes = {}
    failed = 0
    lock = threading.Lock()
    bases = seeds[reader]
    if not bases:
        print(f"{reader}: no corpus files, skipped")
        return counts, classes, 0, 0
    base_bytes = {p: open(p, "rb").read() for p, _ in bases}
    suffix_of = lambda p: ".weights.h5" if p.endswith(".weights.h5") else os.path.splitext(p)[1]

    def one(i, worker):
        rng = random.Random(f"{args.seed}:{reader}:{i}")
        base, template = bases[rng.randrange(len(bases))]
        data, how = mutate(rng, reader, base_bytes[base])
        workdir = os.path.join(scratch, f"w{worker}")
        tmpdir = os.path.join(scratch, f"t{worker}")
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(tmpdir, exist_ok=True)
        clean_dir(workdir)
        clean_dir(tmpdir)
        case_path = os.path.join(workdir, "case" + suffix_of(base))
        with open(case_path, "wb") as f:
            f.write(data)
        res = classify(seqcell, template, case_path, args.timeout, args.max_rss_mb, workdir, tmpdir)
        res.update(index=i, base=os.path.basename(base), mutation=how)
        if res["problems"]:
            keep = os.path.join(out_dir, f"{reader}-{i:06d}")
            os.makedirs(keep, exist_ok=True)
            kept_case = os.path.join(keep, os.path.basename(case_path))
            shutil.copyfile(case_path, kept_case)
            replay_args = [a.replace(case_path, kept_case).replace(os.path.join(workdir, "out.h5"), os.path.join(keep, "out.h5"))
                           for a in res["args"]]
            with open(os.path.join(keep, "case.json"), "w") as f:
                json.dump(dict(res, reader=reader, seed=args.seed, replay=[seqcell, *replay_args]), f, indent=1)
        clean_dir(workdir)
        clean_dir(tmpdir)
        return res

    jobs = max(1, args.jobs)
    done = 0
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        free = list(range(jobs))
        futures = {}
        i = 0
        def submit(k):
            w = free.pop()
            futures[pool.submit(one, k, w)] = w
        while i < cases and free:
            submit(i)
            i += 1
        while futures:
            finished, _ = concurrent.futures.wait(list(futures), return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                free.append(futures.pop(fut))
                res = fut.result()
                done += 1
                with lock:
                    counts[res["kind"]] = counts.get(res["kind"], 0) + 1
                    if res["problems"]:
                        failed += 1
                        cls = failure_class(res)
                        classes.setdefault(cls, []).append(res["index"])
                        if args.verbose:
                            print(f"  FAIL {reader} #{res['index']} {cls}: {res['base']} {res['mutation']}", flush=True)
                if args.progress and done % args.progress == 0:
                    print(f"  {reader}: {done}/{cases} ({time.monotonic() - start:.0f}s, {failed} failed)", flush=True)
                if i < cases and not (args.time_limit and time.monotonic() - start > args.time_limit):
                    submit(i)
                    i += 1
    return counts, classes, done - failed, failed


def replay(path):
    with open(os.path.join(path, "case.json")) as f:
        case = json.load(f)
    print("$", " ".join(case["replay"]))
    r = subprocess.run(case["replay"])
    print(f"exit {r.returncode}")
    return r.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build", "debug", "seqcell"), help="the CLI to test")
    ap.add_argument("--reader", action="append", choices=READERS, help="reader(s) to fuzz (default: all)")
    ap.add_argument("--cases", type=int, default=1000, help="cases per reader")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a few hundred cases in all (for scripts/test.sh)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0, help="peak RSS above which a case fails")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="fuzz-out", help="folder for failing cases")
    ap.add_argument("--corpus", help="folder for the corpus (default: a temporary folder)")
    ap.add_argument("--progress", type=int, default=0, help="print progress every N cases")
    ap.add_argument("--time-limit", type=float, default=0, help="seconds per reader after which no new case starts")
    ap.add_argument("--verbose", action="store_true", help="print each failing case")
    ap.add_argument("--replay", metavar="CASE_DIR", help="run one kept case again and exit")
    args = ap.parse_args()
    if args.replay:
        sys.exit(replay(args.replay))
    seqcell = os.path.abspath(args.seqcell)
    if not os.access(seqcell, os.X_OK):
        sys.exit(f"fuzz: no seqcell at {seqcell} (build it first, or pass --seqcell)")
    readers = args.reader or READERS
    if args.quick:
        cases = {r: 50 for r in readers}
        cases["checkpoint"] = 80 if "checkpoint" in cases else 0
    else:
        cases = {r: args.cases for r in readers}
    scratch = tempfile.mkdtemp(prefix="seqcell-fuzz-")
    try:
        corpus = args.corpus or os.path.join(scratch, "corpus")
        seeds = build_corpus(seqcell, corpus)
        out_dir = os.path.abspath(args.out)
        os.makedirs(out_dir, exist_ok=True)
        total_pass = total_fail = 0
        rows = []
        all_classes = {}
        t0 = time.monotonic()
        for r in readers:
            t = time.monotonic()
            counts, classes, p, f = campaign(args, seqcell, seeds, r, cases[r], out_dir, scratch)
            rows.append((r, counts, p, f, time.monotonic() - t))
            all_classes[r] = classes
            total_pass += p
            total_fail += f
        cols = ["ok", "refused", "crash", "hang", "memory", "leftover", "message"]
        print(f"\nseed {args.seed}, {args.seqcell}")
        print(f"{'reader':<12} {'cases':>6} " + " ".join(f"{c:>8}" for c in cols) + f" {'failed':>7} {'secs':>6}")
        for r, counts, p, f, secs in rows:
            print(f"{r:<12} {p + f:>6} " + " ".join(f"{counts.get(c, 0):>8}" for c in cols) + f" {f:>7} {secs:>6.0f}")
        for r, classes in all_classes.items():
            for cls, idx in sorted(classes.items(), key=lambda kv: -len(kv[1])):
                shown = ", ".join(f"{r}-{k:06d}" for k in idx[:3])
                print(f"  {r}: {len(idx)} × {cls}  (e.g. {shown})")
        if total_fail:
            print(f"failing cases kept in {out_dir} (replay: {sys.argv[0]} --replay DIR)")
        print(f"({time.monotonic() - t0:.0f}s)")
        print(f"{total_pass} passed, {total_fail} failed")
        sys.exit(1 if total_fail else 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
