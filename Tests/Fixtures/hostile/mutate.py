"""Damages HDF5 checkpoints' metadata and sorts the mutants by what a reader does with them.

    python3 mutate.py make BASE.h5 OUTDIR --seed S --count N
        writes OUTDIR/m<seed>-<k>.h5: N mutants of BASE.h5 (bit flips, byte overwrites, zeroed
        blocks, copied blocks, truncations), aimed at metadata: every byte outside the raw
        data of the base's datasets (found with h5py).
    python3 mutate.py run SEQCELL OUTDIR [--timeout SECONDS] [--command inspect]
        runs `SEQCELL inspect FILE` on every mutant with a timeout and prints one line per
        mutant (ok / refused / CRASH signal / HANG) and the totals.

The fixtures in this folder were made with this script (see README.md there).
"""
import argparse
import os
import random
import signal
import subprocess
import sys


def data_ranges(path):
    import h5py

    ranges = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            try:
                offset = obj.id.get_offset()
                size = obj.id.get_storage_size()
            except Exception:
                return
            if offset is not None and size:
                ranges.append((offset, offset + size))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return ranges


def metadata_offsets(path, size):
    ranges = data_ranges(path)
    return [i for i in range(size) if not any(a <= i < b for a, b in ranges)]


def mutate(base, rng, targets):
    data = bytearray(base)
    kind = rng.choice(["flip", "flip", "overwrite", "zero", "copy", "truncate"])
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(64, len(data))])
    for _ in range(rng.randint(1, 4)):
        at = rng.choice(targets)
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            for k in range(rng.randint(1, 8)):
                if at + k < len(data):
                    data[at + k] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif kind == "zero":
            for k in range(rng.randint(4, 64)):
                if at + k < len(data):
                    data[at + k] = 0
        elif kind == "copy":
            src = rng.choice(targets)
            n = rng.randint(4, 32)
            data[at:at + n] = base[src:src + n][: max(0, len(data) - at)]
            data = data[: len(base)]
    return kind, bytes(data)


def make(args):
    with open(args.base, "rb") as f:
        base = f.read()
    targets = metadata_offsets(args.base, len(base))
    os.makedirs(args.outdir, exist_ok=True)
    rng = random.Random(args.seed)
    for k in range(args.count):
        kind, data = mutate(base, rng, targets)
        with open(os.path.join(args.outdir, f"m{args.seed}-{k:05d}.h5"), "wb") as f:
            f.write(data)
    print(f"{args.count} mutants of {args.base} ({len(targets)} metadata bytes of {len(base)}) in {args.outdir}")


def run(args):
    names = sorted(n for n in os.listdir(args.outdir) if n.endswith(".h5"))
    totals = {"ok": 0, "refused": 0, "crash": 0, "hang": 0}
    for name in names:
        path = os.path.join(args.outdir, name)
        try:
            p = subprocess.run([args.seqcell, args.command, path], capture_output=True, timeout=args.timeout)
            if p.returncode == 0:
                what = "ok"
            elif p.returncode == 1:
                what = "refused"
            else:
                what = "crash"
            detail = p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if p.stderr else []
            code = p.returncode
            if code < 0:
                code = f"signal {signal.Signals(-code).name}"
        except subprocess.TimeoutExpired:
            what, code, detail = "hang", "timeout", []
        totals[what] += 1
        if what in ("crash", "hang") or args.verbose:
            print(f"{name}\t{what}\t{code}\t{detail[0][:200] if detail else ''}", flush=True)
    print(f"{len(names)} cases: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    return 1 if totals["crash"] or totals["hang"] else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("make")
    m.add_argument("base")
    m.add_argument("outdir")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--count", type=int, default=100)
    r = sub.add_parser("run")
    r.add_argument("seqcell")
    r.add_argument("outdir")
    r.add_argument("--timeout", type=float, default=20)
    r.add_argument("--command", default="inspect")
    r.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.what == "make":
        make(args)
    else:
        sys.exit(run(args))


if __name__ == "__main__":
    main()
