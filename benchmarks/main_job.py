#!/usr/bin/env python3
"""The main job against PyTorch (issue 12): the adding problem trained by each cell.

    /work/pyfw/bin/python benchmarks/main_job.py            # needs torch, numpy
    python3 benchmarks/main_job.py --cells lstm --steps 500 --threads 1

SeqCell side: one `seqcell demo --cells rnn,lstm,gru --hidden 64 --batch 64 --steps 2000`
(SEQCELL_THREADS = --threads); its table gives each cell's training time and test MSE.
PyTorch side: the same job written with torch.nn.RNN/LSTM/GRU + nn.Linear, in this script,
torch.set_num_threads(--threads): the adding problem (T = 50; each step a value in [0, 1)
and a marker, one marked step in each half, target the sum of the two marked values), a
linear head on the last step, MSE, Adam (lr 0.01), gradient clipping to global norm 1.0,
a fresh batch per step, the 1000-sample test set evaluated every 250 steps (as the demo
does, inside the timed loop). Both draw their data from their own generators, so test MSEs
agree in distribution, not digit for digit. Prints times, test MSEs and the ratio.
"""
import argparse, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def adding_batch(rng, T, B):
    import numpy as np
    x = np.zeros((T, B, 2), dtype=np.float32)
    x[:, :, 0] = rng.random((T, B), dtype=np.float32)
    half = max(T // 2, 1)
    first = rng.integers(0, half, B)
    second = half + rng.integers(0, T - half, B)
    idx = np.arange(B)
    x[first, idx, 1] = 1
    x[second, idx, 1] = 1
    y = x[first, idx, 0] + x[second, idx, 0]
    return x, y.reshape(B, 1)


def torch_job(cell, a):
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    test_rng = np.random.default_rng(a.seed ^ 0xDEADBEEF)
    tx, ty = (torch.from_numpy(v) for v in adding_batch(test_rng, a.seq_len, 1000))
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](2, a.hidden)
    head = torch.nn.Linear(a.hidden, 1)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=a.learning_rate)
    loss_fn = torch.nn.MSELoss()

    def evaluate():
        with torch.no_grad():
            out, _ = rnn(tx)
            return loss_fn(head(out[-1]), ty).item()

    start = time.perf_counter()
    for s in range(a.steps):
        x, y = (torch.from_numpy(v) for v in adding_batch(rng, a.seq_len, a.batch))
        out, _ = rnn(x)
        loss = loss_fn(head(out[-1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (s + 1) % 250 == 0 or s == a.steps - 1:
            evaluate()
    seconds = time.perf_counter() - start
    return seconds, evaluate()


def seqcell_job(cells, a):
    env = dict(os.environ, SEQCELL_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as out:
        cmd = [a.seqcell, "demo", "--cells", ",".join(cells), "--hidden", str(a.hidden), "--batch", str(a.batch),
               "--steps", str(a.steps), "--seq-len", str(a.seq_len), "--learning-rate", str(a.learning_rate),
               "--seed", str(a.seed), "--out-dir", out]
        print("$ SEQCELL_THREADS=%d %s" % (a.threads, " ".join(cmd[:-2])), flush=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("seqcell demo failed:\n" + r.stdout + r.stderr)
    results = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\w+)\s+([0-9.eE+-]+)\s+[0-9.]+%\s+(\d+)\s+([0-9.]+)\s+", line)
        if m and m.group(1) in cells:
            results[m.group(1)] = (float(m.group(4)), float(m.group(2)))
    missing = [c for c in cells if c not in results]
    if missing:
        sys.exit("could not read %s from the demo's table:\n%s" % (missing, r.stdout))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build", "release", "seqcell"))
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--learning-rate", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    cells = [c.strip() for c in a.cells.split(",") if c.strip()]
    if not os.path.exists(a.seqcell):
        sys.exit("%s not found: build it first (swift build -c release)" % a.seqcell)
    ours = seqcell_job(cells, a)
    for c in cells:
        print("SeqCell %s: %.1f s, test MSE %.4f" % (c, *ours[c]), flush=True)
    theirs = {}
    for c in cells:
        print("PyTorch %s ..." % c, end=" ", flush=True)
        theirs[c] = torch_job(c, a)
        print("%.1f s, test MSE %.4f" % theirs[c], flush=True)
    import torch
    print()
    print("adding problem T=%d, hidden %d, batch %d, %d steps, Adam lr %g, clip 1.0, %d threads; torch %s"
          % (a.seq_len, a.hidden, a.batch, a.steps, a.learning_rate, a.threads, torch.__version__))
    print()
    print("| cell | SeqCell s | PyTorch s | SeqCell time / PyTorch time | SeqCell test MSE | PyTorch test MSE |")
    print("|---|---|---|---|---|---|")
    for c in cells:
        (s, m), (ts, tm) = ours[c], theirs[c]
        print("| %s | %.1f | %.1f | %.2f× | %.4f | %.4f |" % (c, s, ts, s / ts, m, tm))


if __name__ == "__main__":
    main()
