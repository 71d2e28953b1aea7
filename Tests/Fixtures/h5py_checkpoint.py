"""Writes a SeqCell checkpoint with h5py alone, following docs/FORMAT.md, and the output a
numpy implementation of the same model gives on a fixed input.

    python3 h5py_checkpoint.py CHECKPOINT.h5 EXPECTED.h5

CHECKPOINT.h5: a bidirectional GRU (input 3, hidden 4, concat; reset after the product, as
PyTorch) -> a forward LSTM (hidden 2) -> a linear head with one output.
EXPECTED.h5: datasets `input` [T, B, 3], `lengths` [B], and `output` [T, B, 1] from the
numpy forward pass below, written from the equations in docs/CELLS.md, independent of SeqCell.
"""
import sys

import h5py
import numpy as np

rng = np.random.default_rng(0)


def param(*shape):
    return rng.uniform(-0.5, 0.5, size=shape).astype("float32")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru(x, lengths, w_ih, w_hh, b_ih, b_hh, reverse):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    out = np.zeros((T, B, H))
    for b in range(B):
        h = np.zeros(H)
        n_steps = lengths[b]
        order = range(n_steps - 1, -1, -1) if reverse else range(n_steps)
        for t in order:
            gi = w_ih @ x[t, b] + b_ih
            gh = w_hh @ h + b_hh
            r = sigmoid(gi[:H] + gh[:H])
            z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
            n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
            h = (1 - z) * n + z * h
            out[t, b] = h
    return out


def lstm(x, lengths, w_ih, w_hh, b_ih, b_hh):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    out = np.zeros((T, B, H))
    for b in range(B):
        h = np.zeros(H)
        c = np.zeros(H)
        for t in range(lengths[b]):
            g = w_ih @ x[t, b] + b_ih + w_hh @ h + b_hh
            i, f, gg, o = sigmoid(g[:H]), sigmoid(g[H:2 * H]), np.tanh(g[2 * H:3 * H]), sigmoid(g[3 * H:])
            c = f * c + i * gg
            h = o * np.tanh(c)
            out[t, b] = h
    return out


def main(checkpoint, expected):
    params = {}
    with h5py.File(checkpoint, "w") as f:
        f.attrs["format"] = "seqcell-checkpoint"
        f.attrs["format_version"] = np.array([1, 0], dtype="int64")
        f.attrs["creator"] = "h5py by hand"

        m = f.create_group("model")
        m.attrs["input_size"] = 3
        m.attrs["num_layers"] = 2

        l0 = m.create_group("layers/00")
        l0.attrs["direction"] = "bidirectional"
        l0.attrs["merge_mode"] = "concat"
        for name in ("forward", "backward"):
            d = l0.create_group(name)
            d.attrs["cell"] = "gru"
            d.attrs["cell_version"] = "1.0.0"
            d.attrs["input_size"] = 3
            d.attrs["hidden_size"] = 4
            d.create_group("options").attrs["reset"] = "after"
            for pname, shape in (("weight_ih", (12, 3)), ("weight_hh", (12, 4)), ("bias_ih", (12,)), ("bias_hh", (12,))):
                d[pname] = params[f"0/{name}/{pname}"] = param(*shape)

        l1 = m.create_group("layers/01")
        l1.attrs["direction"] = "forward"
        d = l1.create_group("forward")
        d.attrs["cell"] = "lstm"
        d.attrs["cell_version"] = "1.0.0"
        d.attrs["input_size"] = 8
        d.attrs["hidden_size"] = 2
        for pname, shape in (("weight_ih", (8, 8)), ("weight_hh", (8, 2)), ("bias_ih", (8,)), ("bias_hh", (8,))):
            d[pname] = params[f"1/forward/{pname}"] = param(*shape)

        h = m.create_group("head")
        h.attrs["kind"] = "linear"
        h.attrs["activation"] = "linear"
        h["weight"] = params["head/weight"] = param(1, 2)
        h["bias"] = params["head/bias"] = param(1)

    T, B = 6, 3
    x = rng.uniform(-1, 1, size=(T, B, 3)).astype("float32")
    lengths = np.array([6, 4, 1], dtype="int32")
    p = {k: v.astype("float64") for k, v in params.items()}
    fwd = gru(x, lengths, p["0/forward/weight_ih"], p["0/forward/weight_hh"], p["0/forward/bias_ih"], p["0/forward/bias_hh"], False)
    bwd = gru(x, lengths, p["0/backward/weight_ih"], p["0/backward/weight_hh"], p["0/backward/bias_ih"], p["0/backward/bias_hh"], True)
    y0 = np.concatenate([fwd, bwd], axis=2)
    y1 = lstm(y0, lengths, p["1/forward/weight_ih"], p["1/forward/weight_hh"], p["1/forward/bias_ih"], p["1/forward/bias_hh"])
    out = y1 @ p["head/weight"].T + p["head/bias"]
    with h5py.File(expected, "w") as f:
        f["input"] = x
        f["lengths"] = lengths
        f["output"] = out.astype("float32")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
