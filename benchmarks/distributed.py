#!/usr/bin/env python3
"""Data-parallel training speed: SeqCell under Open MPI vs PyTorch DistributedDataParallel.

    swift build -c release --product seqcell && swift build -c release   # seqcell + the plugins
    scripts/ensure-deps.sh --mpi                                          # Open MPI
    pip install torch h5py numpy                                          # PyTorch for the anchor
    python3 benchmarks/distributed.py [--steps 30] [--warmup 5] [--jobs A adding]

Two training jobs, both a full step (forward, loss, backward through time, gradient
all-reduce, Adam update) on one global batch:
  A       LSTM I=H=256, T=100, global batch 32, MSE on the last step's output [32, 256]
  adding  the main job: LSTM(2 -> 32) + linear head, T=50, global batch 32, MSE on the last step

Each is timed in three layouts on this machine:
  1 rank x 1 thread       one process, SEQCELL_THREADS=1 (torch.set_num_threads(1))
  2 ranks x 1 thread      mpirun -np 2 --bind-to none (SeqCell); DDP with the Gloo backend,
                          2 processes (unbound too: on a machine shared with other work a
                          rank pinned to a busy core cannot move)
  1 process x 2 threads   SEQCELL_THREADS=2 (torch.set_num_threads(2))
Steps per second come from the steps after the warm-up ones (the adding job runs 40 times
as many steps as A: its steps take about a millisecond). For 2 ranks: SeqCell's time in
collectives per step as rank 0 measured it in training (waiting for the slower rank
included), and for both SeqCell (MPI) and PyTorch (Gloo), one all-reduce of a buffer of the
model's gradient size timed alone after training (DDP does one per step when the gradients
fit one bucket). PyTorch's MPI backend is
timed too when the installed torch has it (PyPI's wheels do not).

The machine is shared: other builds may run at the same time, so figures are indicative;
the script prints the load average beside them.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOBS = {
    "A": dict(I=256, H=256, T=100, B=32, head=None, lr=1e-3, steps=1),
    "adding": dict(I=2, H=32, T=50, B=32, head=1, lr=1e-2, steps=40),
}

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}


def run(cmd, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, env=e, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def make_job(seqcell, name, cfg, folder):
    """A fresh model and a data file for `seqcell train` (adding uses the built-in task)."""
    model = os.path.join(folder, f"{name}.h5")
    layers = ["--layer", f"lstm:{cfg['H']}"] + (["--head", str(cfg["head"])] if cfg["head"] else [])
    run([seqcell, "new", "--input-size", str(cfg["I"]), *layers, "--seed", "1", "-o", model])
    if name == "adding":
        return model, ["--task", "adding", "--seq-len", str(cfg["T"])]
    import h5py
    import numpy as np
    rng = np.random.default_rng(0)
    n = cfg["B"] * 4
    data = os.path.join(folder, f"{name}-data.h5")
    with h5py.File(data, "w") as f:
        f["input"] = rng.standard_normal((cfg["T"], n, cfg["I"]), dtype=np.float32)
        f["targets"] = rng.standard_normal((n, cfg["H"]), dtype=np.float32)
    return model, ["--data", data]


def seqcell_steps_per_second(seqcell, model, data_args, cfg, ranks, threads, steps, warmup, folder):
    """Steps/s of the steps after the warm-up ones: the wall time of a run of warmup + steps
    steps minus that of a run of warmup steps (start-up, loading and warm-up cancel); and
    rank 0's all-reduce ms per step (ranks > 1), from the longer run's report."""
    env = {"SEQCELL_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), **MPI_ENV}

    def timed(n):
        args = ["train", model, *data_args, "--batch-size", str(cfg["B"]), "--optimizer", "adam", "--lr", str(cfg["lr"]),
                "--steps", str(n), "--log-every", str(n), "-o", os.path.join(folder, "out.h5")]
        cmd = [seqcell, *args] if ranks == 1 else ["mpirun", "-np", str(ranks), "--bind-to", "none", seqcell, *args]
        t = time.perf_counter()
        out = run(cmd, env=env)
        return time.perf_counter() - t, out

    short, _ = timed(warmup)
    full, out = timed(warmup + steps)
    m = re.search(r"([\d.]+) ms of it in collectives .* alone takes ([\d.]+) ms", out)
    return steps / max(full - short, 1e-9), ((float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0))


TORCH_WORKER = r'''
import os, sys, time, torch, torch.distributed as dist
I, H, T, B, head, lr, steps, warmup, threads, backend = sys.argv[1:11]
I, H, T, B, steps, warmup, threads = map(int, (I, H, T, B, steps, warmup, threads))
lr = float(lr); head = int(head) if head != "none" else None
torch.set_num_threads(threads)
world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group(backend, rank=rank, world_size=world)
torch.manual_seed(1)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H)
        self.head = torch.nn.Linear(H, head) if head else None
    def forward(self, x):
        y, _ = self.lstm(x)
        y = y[-1]
        return self.head(y) if self.head is not None else y
net = Net()
model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
opt = torch.optim.Adam(model.parameters(), lr=lr)
b = B // world
g = torch.Generator().manual_seed(rank)
x = torch.randn(T, b, I, generator=g)
y = torch.randn(b, head or H, generator=g)
def step():
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
for _ in range(warmup):
    step()
if world > 1:
    dist.barrier()
t0 = time.perf_counter()
for _ in range(steps):
    step()
if world > 1:
    dist.barrier()
elapsed = time.perf_counter() - t0
comm = 0.0
if world > 1:
    buf = torch.zeros(sum(p.numel() for p in net.parameters()))
    for _ in range(3):
        dist.all_reduce(buf)
    dist.barrier()
    t1 = time.perf_counter()
    for _ in range(steps):
        dist.all_reduce(buf)
    comm = (time.perf_counter() - t1) / steps * 1e3
if rank == 0:
    print(f"RESULT {steps / elapsed} {comm}", flush=True)
if world > 1:
    dist.barrier()
    dist.destroy_process_group()
'''


def torch_steps_per_second(python, cfg, procs, threads, steps, warmup, backend="gloo"):
    args = [str(cfg[k]) for k in ("I", "H", "T", "B")] + [str(cfg["head"] or "none"), str(cfg["lr"]),
                                                         str(steps), str(warmup), str(threads), backend]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(TORCH_WORKER)
        script = f.name
    try:
        import socket
        with socket.socket() as probe:  # a free port on loopback for this run's rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   WORLD_SIZE=str(procs))
        if backend == "mpi":
            env.update(MPI_ENV)
            cmd = ["mpirun", "-np", str(procs), python, script, *args]
            ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)]
        else:
            ps = [subprocess.Popen([python, script, *args], env=dict(env, RANK=str(r)), stdout=subprocess.PIPE, text=True)
                  for r in range(procs)]
        outs = [p.communicate()[0] for p in ps]
        m = re.search(r"RESULT ([\d.e+-]+) ([\d.e+-]+)", "".join(outs))
        if any(p.returncode for p in ps):
            # Rank 0 prints its figures before the process group is torn down: a failure after
            # that (seen with Gloo at exit) does not void them, but is reported.
            print(f"  (PyTorch {backend}, {procs} processes: exit status {[p.returncode for p in ps]}"
                  f"{'' if m else ', no result'})", flush=True)
        return (float(m.group(1)), float(m.group(2))) if m else None
    finally:
        os.unlink(script)


def scaling_model(seqcell, steps, warmup, folder):
    """Compute per step of job A on one rank (1 thread) at several per-rank batches, fitted
    t(b) = t0 + k b; then the ring all-reduce model for N ranks at 10 and 100 Gb/s."""
    cfg = dict(JOBS["A"])
    model, data_args = make_job(seqcell, "A", cfg, folder)
    points = []
    for b in (8, 32, 128):
        c = dict(cfg, B=b)
        sps, _ = seqcell_steps_per_second(seqcell, model, data_args, c, 1, 1, max(steps // (b // 8 or 1), 10), warmup, folder)
        points.append((b, 1.0 / sps))
        print(f"  A, one rank, 1 thread, batch {b:4d}: {1e3 / sps:8.1f} ms per step", flush=True)
    n = len(points)
    mb = sum(b for b, _ in points) / n
    mt = sum(t for _, t in points) / n
    k = sum((b - mb) * (t - mt) for b, t in points) / sum((b - mb) ** 2 for b, _ in points)
    t0 = mt - k * mb
    H, I = cfg["H"], cfg["I"]
    grad_bytes = 4 * (4 * H * (I + H) + 8 * H)
    print(f"  fit: t(b) = {t0 * 1e3:.2f} ms + {k * 1e3:.3f} ms x b; gradient {grad_bytes / 1e6:.2f} MB per step")
    print()
    print("| ranks N | link | latency a | all-reduce ms | efficiency at 32/rank | per-rank batch for 90% | global batch for 90% |")
    print("|---|---|---|---|---|---|---|")
    for N in (8, 64, 512):
        for gbps, alpha in ((10, 30e-6), (100, 5e-6)):
            t_ar = 2 * (N - 1) / N * grad_bytes / (gbps * 1e9 / 8) + 2 * (N - 1) * alpha
            tc = t0 + k * 32
            eff = tc / (tc + t_ar)
            b90 = max(1, int(-(-(9 * t_ar - t0) // k))) if k > 0 else 1
            print(f"| {N} | {gbps} Gb/s | {alpha * 1e6:.0f} us | {t_ar * 1e3:.2f} | {eff * 100:.0f} % | {b90} | {b90 * N} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqcell", default=os.path.join(ROOT, ".build/release/seqcell"))
    ap.add_argument("--python", default=sys.executable, help="a python with torch, for the DDP anchor")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--jobs", nargs="+", default=list(JOBS))
    ap.add_argument("--scaling", action="store_true", help="only the compute-per-step fit and the ring all-reduce model")
    a = ap.parse_args()
    if a.scaling:
        with tempfile.TemporaryDirectory() as folder:
            scaling_model(a.seqcell, a.steps, a.warmup, folder)
        return
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found: scripts/ensure-deps.sh --mpi")
    has_torch = subprocess.run([a.python, "-c", "import torch.distributed"], capture_output=True).returncode == 0
    has_torch_mpi = has_torch and subprocess.run(
        [a.python, "-c", "import sys, torch.distributed as d; sys.exit(0 if d.is_mpi_available() else 1)"],
        capture_output=True).returncode == 0
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores; other processes may share them)")
    print(f"torch: {'yes' if has_torch else 'not importable from ' + a.python}; "
          f"torch MPI backend: {'yes' if has_torch_mpi else 'no'}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in a.jobs:
            cfg = JOBS[name]
            steps, warmup = a.steps * cfg["steps"], a.warmup * cfg["steps"]
            model, data_args = make_job(a.seqcell, name, cfg, folder)
            for label, ranks, threads in (("1 rank x 1 thread", 1, 1), ("2 ranks x 1 thread", 2, 1),
                                          ("1 process x 2 threads", 1, 2)):
                s, ar = seqcell_steps_per_second(a.seqcell, model, data_args, cfg, ranks, threads, steps, warmup, folder)
                t = torch_steps_per_second(a.python, cfg, ranks, threads, steps, warmup) if has_torch else None
                tm = torch_steps_per_second(a.python, cfg, ranks, threads, steps, warmup, "mpi") \
                    if has_torch_mpi and ranks > 1 else None
                rows.append((name, label, s, ar, t, tm))
                print(f"  {name:7s} {label:22s} seqcell {s:7.2f} steps/s"
                      + (f" (collectives {ar[0]:.3f} ms/step, all-reduce alone {ar[1]:.3f} ms)" if ranks > 1 else "")
                      + (f"   DDP gloo {t[0]:7.2f} steps/s" if t else "") + (f" (all-reduce {t[1]:.3f} ms)" if t and ranks > 1 else "")
                      + (f"   DDP mpi {tm[0]:7.2f} steps/s" if tm else ""),
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("| job | layout | SeqCell steps/s | SeqCell in collectives, ms/step (waits included) | SeqCell all-reduce alone, ms "
          "| DDP (Gloo) steps/s | Gloo all-reduce alone, ms | SeqCell / DDP |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, s, ar, t, tm in rows:
        multi = label.startswith("2 ranks")
        print(f"| {name} | {label} | {s:.2f} | {f'{ar[0]:.3f}' if multi else '–'} | {f'{ar[1]:.3f}' if multi else '–'} | "
              f"{f'{t[0]:.2f}' if t else 'n/a'} | {f'{t[1]:.3f}' if t and multi else '–'} | {f'{s / t[0]:.2f}x' if t else 'n/a'} |")


if __name__ == "__main__":
    main()
