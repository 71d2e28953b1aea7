#!/usr/bin/env python3
"""A/B timing of SeqCell variants (environment settings) on one machine, interleaved.

    python3 benchmarks/ab.py --configs A C --variant base= --variant blas=SEQCELL_PACKED_BATCH_MAX=0
    python3 benchmarks/ab.py --configs F --variant main= --binary main=/tmp/main-build/seqcell --variant new=

--binary NAME=PATH runs variant NAME with another build's seqcell (its plugins are the ones
next to it), e.g. a copy of main's release build against this one. --args NAME=ARGS adds arguments to variant
NAME's `seqcell bench --serve`, e.g. `--args model=--api=model` to time Model.forward
against the default warmed InferenceSession call.

Each variant is a persistent `seqcell bench --serve` process with its own environment;
rounds rotate through them so background load hits all alike. Prints medians and ratios
to the first variant.
"""
import argparse, json, os, statistics, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build", "release", "seqcell"))
    ap.add_argument("--configs", nargs="+", default=["A"])
    ap.add_argument("--variant", action="append", required=True, help="NAME=VAR=VALUE,VAR=VALUE")
    ap.add_argument("--binary", action="append", default=[], help="NAME=PATH: variant NAME runs this seqcell")
    ap.add_argument("--args", action="append", default=[], help="NAME=ARGS: more arguments for variant NAME's seqcell (space-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=3)
    a = ap.parse_args()
    procs = {}
    binaries = dict(b.partition("=")[::2] for b in a.binary)
    extra = {n: v.split() for n, v in (x.partition("=")[::2] for x in a.args)}
    unknown = (set(binaries) | set(extra)) - {v.partition("=")[0] for v in a.variant}
    if unknown:
        ap.error(f"--binary or --args names no --variant: {', '.join(sorted(unknown))}")
    for name, path in binaries.items():
        if not os.access(path, os.X_OK):
            ap.error(f"--binary {name}: {path} is not an executable file")
    for v in a.variant:
        name, _, assigns = v.partition("=")
        env = dict(os.environ)
        for kv in filter(None, assigns.split(",")):
            k, _, val = kv.partition("=")
            env[k] = val
        procs[name] = subprocess.Popen([binaries.get(name, a.seqcell), "bench", "--serve", "--threads", str(a.threads)] + extra.get(name, []), env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    def ask(p, line):
        p.stdin.write(line + "\n"); p.stdin.flush()
        r = json.loads(p.stdout.readline())
        assert r["ok"], r
        return r
    for c in a.configs:
        for p in procs.values():
            ask(p, f"load {c}"); ask(p, f"run {c} 2")
        times = {k: [] for k in procs}
        names = list(procs)
        for r in range(a.rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:
                time.sleep(0.05)
                times[k] += ask(procs[k], f"run {c} {a.calls}")["times"]
        base = statistics.median(times[names[0]])
        print(c + ": " + ", ".join(f"{k} {statistics.median(v)*1e3:.2f} ms ({base/statistics.median(v):.2f}x)" for k, v in times.items()))
    for p in procs.values():
        p.stdin.write("quit\n"); p.stdin.flush(); p.wait()

if __name__ == "__main__":
    main()
