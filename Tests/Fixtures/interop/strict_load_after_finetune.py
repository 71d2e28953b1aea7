#!/usr/bin/env python3
"""The PyTorch round trip of a user's own module, end to end (needs torch; CI never runs it):

  1. rt_torch_net.safetensors (Net: encoder = nn.LSTM(3, 4, num_layers=2, bias=False),
     fc = nn.Linear(4, 3), tanh after it; written by generate.py) is imported into SeqCell,
  2. fine-tuned there with `seqcell train` (data made here, seeded),
  3. exported with `seqcell export` (no flags: the module's own names come back),
  4. loaded into a fresh Net() with load_state_dict(strict=True), and Net's outputs compared
     with `seqcell run` on the same input (1e-5), and the fine-tuned weights checked to
     differ from the original ones (the fine-tune did something) while staying bias-free.

    python3 Tests/Fixtures/interop/strict_load_after_finetune.py [path/to/seqcell]
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../../.."))
SEQCELL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/debug/seqcell")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(3, 4, num_layers=2, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, state=None):
        out, state = self.encoder(x, state)
        return torch.tanh(self.fc(out)), state


def sh(*args):
    r = subprocess.run([SEQCELL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"seqcell {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def main():
    with tempfile.TemporaryDirectory() as d:
        p = lambda n: os.path.join(d, n)
        sh("import", os.path.join(HERE, "rt_torch_net.safetensors"), "-o", p("net.h5"), "--head", "fc", "--head-activation", "tanh")
        g = np.random.default_rng(7)
        with h5py.File(p("data.h5"), "w") as f:
            f["input"] = g.uniform(-1, 1, size=(6, 32, 3)).astype("float32")
            f["targets"] = g.uniform(-0.5, 0.5, size=(32, 3)).astype("float32")
        sh("train", p("net.h5"), "--data", p("data.h5"), "--steps", "20", "--batch-size", "8", "--lr", "0.05",
           "--loss", "mse", "--target", "last", "--log-every", "10", "-o", p("tuned.h5"))
        out = sh("export", p("tuned.h5"), "-o", p("tuned.safetensors"))
        sd = load_file(p("tuned.safetensors"))
        net = Net()
        net.load_state_dict(sd, strict=True)  # the point: the user's own class, strict
        before = load_file(os.path.join(HERE, "rt_torch_net.safetensors"))
        moved = max(float((sd[k] - before[k]).abs().max()) for k in before)
        assert moved > 1e-4, f"the fine-tune changed nothing (max change {moved})"
        assert not any("bias" in k and k.startswith("encoder.") for k in sd), "the encoder gained biases"
        x = np.random.default_rng(8).uniform(-1, 1, size=(5, 2, 3)).astype("float32")
        with h5py.File(p("x.h5"), "w") as f:
            f["input"] = x
        sh("run", p("tuned.h5"), "-i", p("x.h5"), "-o", p("y.h5"))
        with torch.no_grad():
            y, (h_n, c_n) = net(torch.from_numpy(x))
        with h5py.File(p("y.h5"), "r") as f:
            diffs = {k: float(np.abs(f[k][()] - v.numpy()).max()) for k, v in [("output", y), ("h_n", h_n), ("c_n", c_n)]}
        print(out.splitlines()[0])
        print(f"load_state_dict(strict=True) into Net: ok; weights moved by up to {moved:.3g} in the fine-tune")
        print("Net vs seqcell run after the fine-tune: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        assert all(v <= 1e-5 for v in diffs.values()), diffs
        print("OK")


if __name__ == "__main__":
    main()
