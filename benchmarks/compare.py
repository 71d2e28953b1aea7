#!/usr/bin/env python3
"""SeqCell vs PyTorch vs ONNX Runtime on the issue-6 configurations A–F, in one run.

    pip install torch onnx onnxruntime h5py numpy
    swift build -c release
    python3 benchmarks/compare.py                 # 2 threads, then 1 thread
    python3 benchmarks/compare.py --threads 2 --configs A D

What it does, per configuration:
  1. `seqcell new` writes a freshly initialised checkpoint; h5py reads its weights and
     builds the same model in PyTorch (nn.LSTM/GRU/RNN) and in ONNX (one LSTM/GRU/RNN node
     per layer, gates reordered to ONNX's i,o,f,c and z,r,h; linear_before_reset=1).
  2. `seqcell run` runs the checkpoint on a random input; the three outputs must agree to
     1e-4 (max |diff|).
  3. Timing: SeqCell runs in a persistent `seqcell bench --serve` process that times only
     the calls; PyTorch (inference_mode) and ONNX Runtime run in this process. Rounds
     interleave the runtimes (rotating the order), with a pause between blocks so no
     runtime's spinning worker threads steal the next one's cores. Medians over all calls.
  4. The limit: the same GEMMs as the model (one input GEMM per layer and direction, T
     recurrent GEMMs of [B,H]x[H,G·H]) timed alone with torch.mm and numpy.matmul at the
     same thread count (numpy only when threadpoolctl can hold it to that count, or the
     count is all cores), the faster of the two per shape, summed. Each recurrent GEMM is a
     separate library call, as a naive implementation would make it, so a runtime that keeps
     packed weights across steps can beat this "limit" (more than 100% of it). F's limit
     is 3x the forward's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    "A": dict(cell="lstm", layers=1, bi=False, I=256, H=256, B=32, T=100, train=False),
    "B": dict(cell="lstm", layers=2, bi=True, I=128, H=256, B=16, T=200, train=False),
    "C": dict(cell="gru", layers=1, bi=False, I=512, H=512, B=64, T=50, train=False),
    "D": dict(cell="rnn", layers=1, bi=False, I=128, H=128, B=1, T=1000, train=False),
    "E": dict(cell="lstm", layers=1, bi=False, I=1024, H=1024, B=64, T=20, train=False),
    "F": dict(cell="lstm", layers=1, bi=False, I=256, H=256, B=32, T=100, train=True),
}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def flops(c):
    d = 2 if c["bi"] else 1
    total, width = 0.0, c["I"]
    for _ in range(c["layers"]):
        total += d * 2.0 * c["T"] * c["B"] * GATES[c["cell"]] * c["H"] * (width + c["H"])
        width = c["H"] * d
    return 3 * total if c["train"] else total


# ---------------------------------------------------------------- weights and models
def seqcell_new(exe, name, c, path):
    spec = f"{c['cell']}:{c['H']}" + (":bi" if c["bi"] else "")
    cmd = [exe, "new", "--input-size", str(c["I"]), "--seed", "7", "-o", path]
    for _ in range(c["layers"]):
        cmd += ["--layer", spec]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def read_weights(path, c):
    """weights[layer][direction] = dict(weight_ih=..., ...) as float32 arrays."""
    out = []
    with h5py.File(path, "r") as f:
        for k in range(c["layers"]):
            dirs = []
            for d in (["forward", "backward"] if c["bi"] else ["forward"]):
                g = f[f"model/layers/{k:02d}/{d}"]
                dirs.append({n: np.asarray(g[n], dtype=np.float32) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            out.append(dirs)
    return out


def torch_model(torch, c, w):
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[c["cell"]]
    kw = dict(nonlinearity="tanh") if c["cell"] == "rnn" else {}
    m = cls(c["I"], c["H"], num_layers=c["layers"], bidirectional=c["bi"], **kw)
    with torch.no_grad():
        for k, dirs in enumerate(w):
            for d, p in enumerate(dirs):
                sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
                for n, v in p.items():
                    getattr(m, n + sfx).copy_(torch.from_numpy(v))
    return m


def reorder(x, c):
    """PyTorch gate blocks → ONNX gate blocks along axis 0."""
    H = c["H"]
    if c["cell"] == "lstm":   # i,f,g,o → i,o,f,c
        order = [0, 3, 1, 2]
    elif c["cell"] == "gru":  # r,z,n → z,r,h
        order = [1, 0, 2]
    else:
        return x
    return np.concatenate([x[i * H:(i + 1) * H] for i in order], axis=0)


def onnx_model(c, w):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[c["cell"]]
    D = 2 if c["bi"] else 1
    nodes, inits = [], []
    x = "X"
    for k, dirs in enumerate(w):
        W = np.stack([reorder(p["weight_ih"], c) for p in dirs])
        R = np.stack([reorder(p["weight_hh"], c) for p in dirs])
        Bv = np.stack([np.concatenate([reorder(p["bias_ih"], c), reorder(p["bias_hh"], c)]) for p in dirs])
        for n, v in ((f"W{k}", W), (f"R{k}", R), (f"B{k}", Bv)):
            inits.append(numpy_helper.from_array(v.astype(np.float32), n))
        attrs = dict(hidden_size=c["H"], direction="bidirectional" if c["bi"] else "forward")
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        if op == "RNN":
            attrs["activations"] = ["Tanh"] * D
        y = f"Y{k}"
        nodes.append(helper.make_node(op, [x, f"W{k}", f"R{k}", f"B{k}"], [y], **attrs))
        # Y is [T, D, B, H] → [T, B, D·H]
        nodes.append(helper.make_node("Transpose", [y], [f"Yt{k}"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, D * c["H"]], dtype=np.int64), f"shape{k}"))
        x = f"Yr{k}" if k + 1 < len(w) else "Y"
        nodes.append(helper.make_node("Reshape", [f"Yt{k}", f"shape{k}"], [x]))
    graph = helper.make_graph(
        nodes, "seqcell_compare",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [c["T"], c["B"], c["I"]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [c["T"], c["B"], D * c["H"]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_session(ort, blob, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- timing helpers
class SeqCellServer:
    def __init__(self, exe, threads):
        self.p = subprocess.Popen([exe, "bench", "--serve", "--threads", str(threads)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        r = json.loads(self.p.stdout.readline())
        if not r.get("ok"):
            raise RuntimeError(f"seqcell bench --serve: {line}: {r.get('error')}")
        return r

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        self.p.wait(timeout=30)


def time_calls(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def gemm_limit(torch, c, threads, reps):
    """Seconds for the model's GEMMs alone: per layer and direction one [T·B, I]x[I, G·H]
    and T of [B, H]x[H, G·H]; the faster of torch.mm and numpy per shape."""
    G = GATES[c["cell"]] * c["H"]
    shapes = []  # (m, k, n, count)
    width = c["I"]
    D = 2 if c["bi"] else 1
    for _ in range(c["layers"]):
        shapes += [(c["T"] * c["B"], width, G, D), (c["B"], c["H"], G, D * c["T"])]
        width = c["H"] * D
    total = 0.0
    for m, k, n, count in shapes:
        best = float("inf")
        a = np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(k, n).astype(np.float32)
        out = np.empty((m, n), np.float32)
        ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.empty(m, n)
        inner = max(1, min(count, 2000))
        fns = [lambda: torch.mm(ta, tb, out=to)]
        if numpy_threads_ok(threads):
            fns.append(lambda: np.matmul(a, b, out=out))
        for fn in fns:
            for _ in range(3):
                fn()
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                samples.append((time.perf_counter() - t0) / inner)
            best = min(best, statistics.median(samples))
        total += best * count
    return 3 * total if c["train"] else total


_np_limiter = None


def numpy_threads_ok(threads):
    """numpy's BLAS uses every core unless threadpoolctl limits it: use numpy for the limit
    only when it runs at `threads` threads."""
    global _np_limiter
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return threads >= (os.cpu_count() or 1)
    if _np_limiter is not None:
        _np_limiter.restore_original_limits()
    _np_limiter = threadpool_limits(limits=threads, user_api="blas")
    return True


def peak_gflops(torch, n=2048, reps=5):
    a, b, o = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)
    torch.mm(a, b, out=o)
    ts = time_calls(lambda: torch.mm(a, b, out=o), reps)
    return 2 * n ** 3 / min(ts) / 1e9


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build", "release", "seqcell"))
    ap.add_argument("--threads", type=int, nargs="*", default=[2, 1])
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per configuration")
    ap.add_argument("--block", type=float, default=0.25, help="seconds of calls per runtime per round (at least 1 call)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    work = tempfile.mkdtemp(prefix="seqcell-compare-")
    rng = np.random.default_rng(3)
    prepared = {}
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}; work dir {work}")
    # The instruction set SeqCell's kernels run at (SEQCELL_ISA caps it) and the CPU's features.
    listing = subprocess.run([args.seqcell, "plugins"], check=True, capture_output=True, text=True).stdout
    print("SeqCell " + next((l.split("cells' ", 1)[-1] for l in listing.splitlines() if "kernels:" in l), "kernels: unknown"))
    for name in args.configs:
        c = CONFIGS[name]
        ckpt = os.path.join(work, f"{name}.h5")
        seqcell_new(args.seqcell, name, c, ckpt)
        w = read_weights(ckpt, c)
        x = rng.uniform(-1, 1, size=(c["T"], c["B"], c["I"])).astype(np.float32)
        np.save(os.path.join(work, f"{name}_x.npy"), x)
        y_path = os.path.join(work, f"{name}_y.h5")
        subprocess.run([args.seqcell, "run", ckpt, "-i", os.path.join(work, f"{name}_x.npy"), "--time-major", "-o", y_path],
                       check=True, stdout=subprocess.DEVNULL)
        with h5py.File(y_path, "r") as f:
            y_sc = np.asarray(f["output"])
        tm = torch_model(torch, c, w)
        with torch.inference_mode():
            y_pt = tm(torch.from_numpy(x))[0].numpy()
        blob = onnx_model(c, w)
        y_ox = ort_session(ort, blob, 1).run(None, {"X": x})[0]
        d_pt, d_ox = float(np.abs(y_sc - y_pt).max()), float(np.abs(y_sc - y_ox).max())
        ok = d_pt <= 1e-4 and d_ox <= 1e-4
        print(f"{name}: outputs agree: max|seqcell-torch| {d_pt:.2e}, max|seqcell-ort| {d_ox:.2e} {'OK' if ok else 'MISMATCH'}")
        if not ok:
            sys.exit(f"{name}: outputs disagree")
        prepared[name] = dict(c=c, ckpt=ckpt, x=x, torch=tm, onnx=blob)

    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        server = SeqCellServer(args.seqcell, threads)
        peak = peak_gflops(torch)
        print(f"\n== {threads} thread(s); sgemm 2048³ (torch.mm): {peak:.0f} GFLOP/s")
        for name in args.configs:
            p = prepared[name]
            c = p["c"]
            server.ask(f"load {name} {p['ckpt']}")
            xt = torch.from_numpy(p["x"])
            runners = {}
            runners["seqcell"] = lambda n: server.ask(f"run {name} {n}")["times"]
            if c["train"]:
                tm = torch_model(torch, c, read_weights(p["ckpt"], c))
                tm.train()
                opt = torch.optim.SGD(tm.parameters(), lr=0.01)
                target = torch.from_numpy(rng.uniform(-0.5, 0.5, size=(c["T"], c["B"], c["H"])).astype(np.float32))

                def train_step():
                    opt.zero_grad(set_to_none=True)
                    out, _ = tm(xt)
                    loss = torch.nn.functional.mse_loss(out, target)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
                    opt.step()

                runners["torch"] = lambda n: time_calls(train_step, n)
            else:
                tm = p["torch"]

                def torch_fwd():
                    with torch.inference_mode():
                        tm(xt)

                sess = ort_session(ort, p["onnx"], threads)
                feed = {"X": p["x"]}
                runners["torch"] = lambda n: time_calls(torch_fwd, n)
                runners["onnxruntime"] = lambda n: time_calls(lambda: sess.run(None, feed), n)
            # warm up, then pick calls per block from the warm-up time
            per = {}
            for k, run in runners.items():
                run(2)
                per[k] = max(1, int(args.block / max(min(run(2)), 1e-6)))
            times = {k: [] for k in runners}
            order = list(runners)
            for r in range(args.rounds):
                for k in order[r % len(order):] + order[:r % len(order)]:
                    time.sleep(0.15)
                    times[k] += run_block(runners[k], per[k])
            limit = gemm_limit(torch, c, threads, reps=5)
            med = {k: statistics.median(v) for k, v in times.items()}
            spread = {k: (min(v), max(v)) for k, v in times.items()}
            peers = [k for k in med if k != "seqcell"]
            best_peer = min(peers, key=lambda k: med[k])
            row = dict(config=name, threads=threads, flops=flops(c), limit=limit, median=med, spread=spread,
                       calls={k: len(v) for k, v in times.items()}, best_peer=best_peer,
                       ratio=med[best_peer] / med["seqcell"])
            results.append(row)
            print_row(row)
        server.close()
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def run_block(run, n):
    return run(n)


def print_row(r):
    parts = [f"{k} {v * 1e3:.3f} ms" for k, v in r["median"].items()]
    print(f"  {r['config']}: " + ", ".join(parts) + f"; limit {r['limit'] * 1e3:.3f} ms; "
          f"seqcell vs {r['best_peer']}: {r['ratio']:.2f}x")


def print_table(results):
    print()
    print("| cfg | thr | SeqCell ms | PyTorch ms | ORT ms | SeqCell vs faster peer | sgemm limit ms | "
          "SeqCell % of limit | best peer % of limit | SeqCell GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median"]

        def ms(k):
            return f"{m[k] * 1e3:.2f}" if k in m else "—"

        peer = m[r["best_peer"]]
        print(f"| {r['config']} | {r['threads']} | {ms('seqcell')} | {ms('torch')} | {ms('onnxruntime')} | "
              f"{r['ratio']:.2f}× ({'faster' if r['ratio'] >= 1 else 'slower'} than {r['best_peer']}) | "
              f"{r['limit'] * 1e3:.2f} | {100 * r['limit'] / m['seqcell']:.0f}% | {100 * r['limit'] / peer:.0f}% | "
              f"{r['flops'] / m['seqcell'] / 1e9:.1f} |")


if __name__ == "__main__":
    main()
