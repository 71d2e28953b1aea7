#!/usr/bin/env python3
"""Checkpoint load/save speed (issue 3): SeqCell vs h5py on the same ~100 MB file.

    swift build -c release
    python3 benchmarks/checkpoint_io.py [--repeats 7]

Writes a ~100 MB checkpoint with `seqcell new` (a bidirectional LSTM 1024→1024 and an
LSTM 2048→768: 26M float32 parameters), then, interleaved in rounds:
  - SeqCell: `seqcell bench --checkpoint FILE --json` (load = open, validate, read every
    dataset, build the model; save = temp file, write, fsync, rename);
  - h5py: read every dataset of the file into numpy arrays; write the same arrays into a
    new contiguous file and fsync it;
  - a raw read of the file's bytes (numpy.fromfile), the ceiling for a warm page cache.
All reads run with the file in the page cache (it was just written and is re-read every
round), so they measure per-byte work, not the disk.
"""
import argparse, json, os, statistics, subprocess, tempfile, time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build", "release", "seqcell"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="seqcell-ckpt-io-")
    path = os.path.join(work, "model.h5")
    subprocess.run([a.seqcell, "new", "--input-size", "1024", "--layer", "lstm:1024:bi", "--layer", "lstm:768",
                    "-o", path], check=True, stdout=subprocess.DEVNULL)
    size = os.path.getsize(path)
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    print(f"{path}: {size / 1e6:.1f} MB, {len(names)} datasets")

    def h5py_load():
        with h5py.File(path, "r") as f:
            return {n: f[n][()] for n in names}

    arrays = h5py_load()
    out = os.path.join(work, "h5py-copy.h5")

    def h5py_save():
        with h5py.File(out, "w") as f:
            for n, v in arrays.items():
                f.create_dataset(n, data=v)
            f.flush()
            os.fsync(f.id.get_vfd_handle())

    def raw_read():
        np.fromfile(path, dtype=np.uint8)

    sc = {"load": [], "save": []}
    py = {"load": [], "save": []}
    raw = []
    for _ in range(a.rounds):
        r = json.loads(subprocess.run([a.seqcell, "bench", "--checkpoint", path, "--json", "--warmup", "1",
                                       "--repeats", str(a.repeats)], check=True, capture_output=True, text=True).stdout)
        sc["load"] += r["load"]
        sc["save"] += r["save"]
        for _ in range(a.repeats):
            t0 = time.perf_counter(); h5py_load(); py["load"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); h5py_save(); py["save"].append(time.perf_counter() - t0)
            t0 = time.perf_counter(); raw_read(); raw.append(time.perf_counter() - t0)
    med = statistics.median
    print()
    print("| | median ms | MB/s | vs h5py |")
    print("|---|---|---|---|")
    for label, v, ref in (("SeqCell load (Checkpoint.load)", sc["load"], py["load"]),
                          ("h5py read of every dataset", py["load"], py["load"]),
                          ("raw read of the file (numpy.fromfile)", raw, py["load"]),
                          ("SeqCell save (atomic, fsync)", sc["save"], py["save"]),
                          ("h5py write of every dataset + fsync", py["save"], py["save"])):
        print(f"| {label} | {med(v) * 1e3:.1f} | {size / med(v) / 1e6:.0f} | {med(ref) / med(v):.2f}× |")


if __name__ == "__main__":
    main()
