#!/usr/bin/env python3
"""Builds the interop fixtures: small PyTorch and Keras recurrent models with fixed seeds,
saved in every format `seqcell import` reads, with the frameworks' own outputs.

    pip install torch safetensors keras h5py numpy
    KERAS_BACKEND=torch python3 Tests/Fixtures/interop/generate.py

The Keras 2 (tf-keras) fixture needs TensorFlow; see keras2_legacy() below. CI never runs
this script: the tests read the committed files (manifest.json lists them).

Each model gets:
  <name>.<ext>       the model file as the framework wrote it
  <name>.io.h5       the run input for `seqcell run -i` (input, optional lengths, h0, c0),
                     gradients for `seqcell run --grad-output` (grad_output, grad_h_n, grad_c_n),
                     and expected/... : what the framework computed (output, h_n, c_n and, for
                     PyTorch, grad_input, grad_h0, grad_c0 and grad_params/<checkpoint path>,
                     from torch.autograd.grad of  sum(output*grad_output) + sum(h_n*grad_h_n) + ...)
"""
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE
T, B, I = 5, 2, 3
manifest = []


def rng(seed):
    return np.random.default_rng(seed)


def write_io(name, inputs, expected, attrs=None):
    """inputs: datasets at the root; expected: datasets under expected/ (nested dicts for groups)."""
    with h5py.File(os.path.join(OUT, f"{name}.io.h5"), "w", libver="latest") as f:
        for k, v in inputs.items():
            f[k] = v
        e = f.create_group("expected")

        def put(g, d):
            for k, v in d.items():
                if isinstance(v, dict):
                    put(g.require_group(k), v)
                else:
                    g[k] = np.asarray(v, dtype="float32")

        put(e, expected)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


# ---------------------------------------------------------------- PyTorch

def torch_fixtures():
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    def seqcell_path(torch_name):
        # weight_hh_l1_reverse -> layers/01/backward/weight_hh
        rest = torch_name
        direction = "forward"
        if rest.endswith("_reverse"):
            rest, direction = rest[: -len("_reverse")], "backward"
        param, layer = rest.rsplit("_l", 1)
        return f"layers/{int(layer):02d}/{direction}/{param}"

    def run(name, module, *, files, flags=None, head=None, head_act=None, lengths=None, initial=True,
            batch_first=False, seed=0, prefix=""):
        g = rng(100 + seed)
        torch.manual_seed(seed)
        with torch.no_grad():  # weights away from the defaults, biases included
            for p in module.parameters():
                p.copy_(torch.from_numpy(g.uniform(-0.6, 0.6, size=tuple(p.shape)).astype("float32")))
            if head is not None:
                for p in head.parameters():
                    p.copy_(torch.from_numpy(g.uniform(-0.6, 0.6, size=tuple(p.shape)).astype("float32")))
        D = 2 if module.bidirectional else 1
        L = module.num_layers
        H = module.hidden_size
        P = getattr(module, "proj_size", 0) or H
        is_lstm = isinstance(module, nn.LSTM)
        x = torch.from_numpy(g.uniform(-1, 1, size=(T, B, I)).astype("float32")).requires_grad_()
        h0 = torch.from_numpy((g.uniform(-1, 1, size=(L * D, B, P)) if initial else np.zeros((L * D, B, P))).astype("float32")).requires_grad_()
        c0 = torch.from_numpy((g.uniform(-1, 1, size=(L * D, B, H)) if initial else np.zeros((L * D, B, H))).astype("float32")).requires_grad_()
        xin = x.transpose(0, 1) if batch_first else x
        state = (h0, c0) if is_lstm else h0
        if lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(xin, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
            out, st = module(packed, state)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        else:
            out, st = module(xin, state)
        if batch_first:
            out = out.transpose(0, 1)  # stored time-major below, then swapped for the file
        h_n, c_n = (st if is_lstm else (st, None))
        y = out
        if head is not None:
            y = head(out)
            if head_act == "tanh":
                y = torch.tanh(y)
        go = torch.from_numpy(g.uniform(-1, 1, size=tuple(y.shape)).astype("float32"))
        gh = torch.from_numpy(g.uniform(-1, 1, size=tuple(h_n.shape)).astype("float32"))
        loss = (y * go).sum() + (h_n * gh).sum()
        gc = None
        if c_n is not None:
            gc = torch.from_numpy(g.uniform(-1, 1, size=tuple(c_n.shape)).astype("float32"))
            loss = loss + (c_n * gc).sum()
        names = [n for n, _ in module.named_parameters()]
        params = [p for _, p in module.named_parameters()]
        hnames, hparams = [], []
        if head is not None:
            hnames = ["head/weight", "head/bias"]
            hparams = [head.weight, head.bias]
        wrt = [x, h0] + ([c0] if is_lstm else []) + params + hparams
        grads = torch.autograd.grad(loss, wrt)
        gx, gh0 = grads[0], grads[1]
        gc0 = grads[2] if is_lstm else None
        pgrads = grads[3 if is_lstm else 2:]
        grad_params = {}
        for n, gp in zip(names + hnames, pgrads):
            path = n if n.startswith("head/") else seqcell_path(n)
            node = grad_params
            parts = path.split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = gp.detach().numpy()

        def layout(a):  # time-major [T, B, F] -> file layout
            a = a.detach().numpy()
            return a.transpose(1, 0, 2).copy() if batch_first else a

        inputs = {"input": layout(x), "grad_output": layout(go), "grad_h_n": gh.numpy()}
        if lengths is not None:
            inputs["lengths"] = np.asarray(lengths, dtype="int64")
        if initial:
            inputs["h0"] = h0.detach().numpy()
            if is_lstm:
                inputs["c0"] = c0.detach().numpy()
        if gc is not None:
            inputs["grad_c_n"] = gc.numpy()
        expected = {"output": layout(y), "h_n": h_n.detach().numpy(), "grad_input": layout(gx),
                    "grad_h0": gh0.numpy(), "grad_params": grad_params}
        if is_lstm:
            expected["c_n"] = c_n.detach().numpy()
            expected["grad_c0"] = gc0.numpy()
        write_io(name, inputs, expected)

        sd = {prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()}
        if head is not None:
            sd.update({f"fc.{k}": v.detach().contiguous() for k, v in head.state_dict().items()})
        entries = []
        for kind, group in files:
            if kind == "safetensors":
                fn = f"{name}.safetensors"
                save_file(sd, os.path.join(OUT, fn))
                entries.append({"file": fn, "flags": []})
            else:
                fn = f"{name}.state_dict.h5"
                with h5py.File(os.path.join(OUT, fn), "w") as f:
                    g2 = f.require_group(group) if group else f
                    for k, v in sd.items():
                        g2[k] = v.numpy()
                entries.append({"file": fn, "flags": ["--group", group] if group else []})
        for e in entries:
            manifest.append({
                "name": name, "framework": "pytorch", "file": e["file"], "io": f"{name}.io.h5",
                "flags": (flags or []) + e["flags"],
                "batch_first": batch_first, "gradients": True,
                "source": repr(module) + (f" + {head!r}" if head is not None else ""),
            })

    torch.manual_seed(0)
    run("torch_rnn_tanh_2layer", nn.RNN(I, 4, num_layers=2), files=[("safetensors", None), ("h5", None)],
        initial=False, seed=1)
    run("torch_rnn_relu_bidir", nn.RNN(I, 4, nonlinearity="relu", bidirectional=True),
        files=[("safetensors", None)], flags=["--cell", "rnn", "--activation", "relu"], seed=2)
    run("torch_lstm_2layer_bidir_packed", nn.LSTM(I, 4, num_layers=2, bidirectional=True),
        files=[("safetensors", None)], lengths=[5, 3], seed=3)
    run("torch_lstm_proj", nn.LSTM(I, 5, num_layers=2, proj_size=2), files=[("h5", "model/encoder")], seed=4)
    run("torch_gru_nobias_batchfirst", nn.GRU(I, 4, num_layers=2, bias=False, batch_first=True),
        files=[("safetensors", None)], batch_first=True, seed=5)
    run("torch_lstm_with_head", nn.LSTM(I, 4), files=[("safetensors", None)], head=nn.Linear(4, 2), head_act="tanh",
        prefix="lstm.", flags=["--head", "fc", "--head-activation", "tanh"], seed=6)

    # Pickles, to be refused without being read: torch.save's zip and the legacy format.
    sd = nn.LSTM(I, 2).state_dict()
    torch.save(sd, os.path.join(OUT, "bad_torch_save.pt"))
    torch.save(sd, os.path.join(OUT, "bad_torch_save_legacy.pth"), _use_new_zipfile_serialization=False)


# ---------------------------------------------------------------- Keras 3

def randomize(model, seed):
    g = rng(200 + seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([g.uniform(-0.6, 0.6, size=w.shape).astype("float32") for w in ws])


def keras_fixtures():
    import keras
    from keras import layers as K

    def run(name, build, *, formats, seed, flags=None, note=""):
        keras.backend.clear_session()  # layer names restart: lstm, not lstm_7
        keras.utils.set_random_seed(seed)
        model = build()
        randomize(model, seed)
        g = rng(300 + seed)
        x = g.uniform(-1, 1, size=(B, T, I)).astype("float32")
        y = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
        write_io(name, {"input": x}, {"output": y})
        for fmt in formats:
            entry = {"name": name, "framework": "keras", "io": f"{name}.io.h5", "batch_first": True,
                     "gradients": False, "flags": list(flags or []), "source": f"keras {keras.__version__} {note}".strip()}
            if fmt == "keras":
                entry["file"] = f"{name}.keras"
                model.save(os.path.join(OUT, entry["file"]))
            elif fmt == "weights":
                entry["file"] = f"{name}.weights.h5"
                model.save_weights(os.path.join(OUT, entry["file"]))
                cfg = f"{name}.json"
                with open(os.path.join(OUT, cfg), "w") as f:
                    f.write(model.to_json())
                entry["flags"] += ["--keras-config", cfg]
            elif fmt == "weights-bare":
                entry["file"] = f"{name}.bare.weights.h5"
                model.save_weights(os.path.join(OUT, entry["file"]))
            elif fmt == "legacy":
                entry["file"] = f"{name}.legacy.h5"
                model.save(os.path.join(OUT, entry["file"]))
            manifest.append(entry)

    def seq(*ls):
        return lambda: keras.Sequential([keras.Input((T, I))] + list(ls))

    run("keras_simplernn_relu", seq(K.SimpleRNN(4, activation="relu", return_sequences=True)), formats=["keras"], seed=1)
    run("keras_lstm_dense_softmax", seq(K.LSTM(4, return_sequences=True), K.Dense(3, activation="softmax")),
        formats=["keras", "weights", "legacy"], seed=2)
    run("keras_gru_reset_after", seq(K.GRU(4, return_sequences=True)), formats=["weights-bare"], seed=3)
    run("keras_gru_reset_before", seq(K.GRU(4, reset_after=False, return_sequences=True)), formats=["legacy"], seed=4)
    run("keras_bidir_lstm_concat", seq(K.Bidirectional(K.LSTM(3, return_sequences=True), merge_mode="concat")),
        formats=["keras"], seed=5)
    run("keras_bidir_gru_sum", seq(K.Bidirectional(K.GRU(3, return_sequences=True), merge_mode="sum")), formats=["keras"], seed=6)
    run("keras_bidir_rnn_ave", seq(K.Bidirectional(K.SimpleRNN(3, return_sequences=True), merge_mode="ave")),
        formats=["keras"], seed=7)
    run("keras_bidir_backward_layer_mul",
        seq(K.Bidirectional(K.LSTM(3, return_sequences=True),
                            backward_layer=K.GRU(3, return_sequences=True, go_backwards=True), merge_mode="mul")),
        formats=["keras"], seed=8)
    run("keras_stack", seq(K.LSTM(4, return_sequences=True),
                           K.Bidirectional(K.GRU(3, return_sequences=True, reset_after=False)),
                           K.SimpleRNN(4, return_sequences=True), K.Dense(2, activation="tanh")),
        formats=["keras", "weights", "legacy"], seed=9)
    run("keras_lstm_last_step", seq(K.LSTM(4)), formats=["keras"], seed=10,
        note="return_sequences=False: Keras' output is SeqCell's last step")

    # Options and layers SeqCell refuses: each must fail with a message naming the layer.
    def bad(name, build):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = build()
        fn = f"bad_{name}.keras"
        model.save(os.path.join(OUT, fn))

    bad("hard_sigmoid", seq(K.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True)))
    bad("simplernn_sigmoid", seq(K.SimpleRNN(3, activation="sigmoid", return_sequences=True)))
    bad("conv1d", seq(K.Conv1D(3, 2), K.LSTM(3, return_sequences=True)))
    bad("go_backwards", seq(K.GRU(3, go_backwards=True, return_sequences=True)))
    bad("stateful", lambda: keras.Sequential([keras.Input((T, I), batch_size=B),
                                               K.LSTM(3, stateful=True, return_sequences=True)]))


# ---------------------------------------------------------------- Keras 2 (tf-keras)

KERAS2_SCRIPT = r'''
import os, sys, json
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras as keras
out, T, B, I = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
K = keras.layers
keras.utils.set_random_seed(11)
m = keras.Sequential([keras.Input((T, I)), K.LSTM(4, return_sequences=True),
                      K.Bidirectional(K.GRU(3, return_sequences=True), merge_mode="ave"),
                      K.SimpleRNN(3, activation="relu", return_sequences=True), K.Dense(2)])
g = np.random.default_rng(211)
for layer in m.layers:
    ws = layer.get_weights()
    if ws:
        layer.set_weights([g.uniform(-0.6, 0.6, size=w.shape).astype("float32") for w in ws])
x = np.random.default_rng(311).uniform(-1, 1, size=(B, T, I)).astype("float32")
y = m(x).numpy()
m.save(os.path.join(out, "keras2_stack.h5"), save_format="h5")
np.save(os.path.join(out, "keras2_stack.x.npy"), x)
np.save(os.path.join(out, "keras2_stack.y.npy"), y)
print(keras.__version__)
'''


def keras2_legacy():
    """Keras 2 `model.save("m.h5")`, written by tf-keras itself in a separate interpreter that
    has TensorFlow (set KERAS2_PYTHON, default /tmp/tfvenv/bin/python). Without one, no Keras 2
    fixture is written and the script says so: it is never faked."""
    python = os.environ.get("KERAS2_PYTHON", "/tmp/tfvenv/bin/python")
    if not os.path.exists(python):
        print(f"NOTE: no TensorFlow interpreter at {python}: Keras 2 fixture not regenerated", file=sys.stderr)
        return False
    r = subprocess.run([python, "-c", KERAS2_SCRIPT, OUT, str(T), str(B), str(I)], capture_output=True, text=True)
    if r.returncode != 0:
        print("NOTE: tf-keras failed; Keras 2 fixture not regenerated:\n" + r.stderr[-2000:], file=sys.stderr)
        return False
    version = r.stdout.strip().splitlines()[-1]
    x = np.load(os.path.join(OUT, "keras2_stack.x.npy"))
    y = np.load(os.path.join(OUT, "keras2_stack.y.npy"))
    os.remove(os.path.join(OUT, "keras2_stack.x.npy"))
    os.remove(os.path.join(OUT, "keras2_stack.y.npy"))
    write_io("keras2_stack", {"input": x}, {"output": y})
    manifest.append({"name": "keras2_stack", "framework": "keras", "file": "keras2_stack.h5", "io": "keras2_stack.io.h5",
                     "batch_first": True, "gradients": False, "flags": [], "source": f"tf-keras {version}"})
    return True


# ---------------------------------------------------------------- round trips (roundtrip.json)

def roundtrip_fixtures():
    """Fixtures of InteropRoundTripTests, listed in roundtrip.json (not manifest.json):

    rt_torch_net.safetensors   a user's module  Net(encoder=nn.LSTM(..., bias=False), fc=nn.Linear)
                               saved by torch; roundtrip.json records Net().state_dict()'s names,
                               shapes and dtypes, which `seqcell export` must reproduce.
    rt_torch_rnn_nobias        nn.RNN(relu, bidirectional, bias=False): outputs and gradients.
    rt_keras_nobias.keras      LSTM and GRU with use_bias=False.
    rt_keras_bidir_last*.keras Bidirectional(..., return_sequences=False) (+ Dense), every merge mode used.
    rt_keras_softmax_loss      LSTM + Dense(3, softmax) with Keras' own crossentropy values.
    rt_keras_functional_*      functional chains: Dropout and a last-step Bidirectional; return_state
                               outputs of an LSTM and of a Bidirectional LSTM (expected/output_K).
    bad_functional_branch      a functional graph that is not a chain (refused).
    keras2_*                   tf-keras: a functional chain with Bidirectional return_state outputs, and
                               a Sequential last-step Bidirectional, saved as .h5 (needs KERAS2_PYTHON).
    """
    import torch
    import torch.nn as nn
    import keras
    from keras import layers as K
    from safetensors.torch import save_file

    info = {"torch": {}, "keras": {}}

    # PyTorch: the user's own class, with the names SeqCell must give back.
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.LSTM(I, 4, num_layers=2, bias=False)
            self.fc = nn.Linear(4, 3)

        def forward(self, x, state=None):
            out, state = self.encoder(x, state)
            return torch.tanh(self.fc(out)), state

    torch.manual_seed(0)
    g = rng(500)
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(g.uniform(-0.6, 0.6, size=tuple(p.shape)).astype("float32")))
    x = torch.from_numpy(g.uniform(-1, 1, size=(T, B, I)).astype("float32")).requires_grad_()
    h0 = torch.from_numpy(g.uniform(-1, 1, size=(2, B, 4)).astype("float32")).requires_grad_()
    c0 = torch.from_numpy(g.uniform(-1, 1, size=(2, B, 4)).astype("float32")).requires_grad_()
    y, (h_n, c_n) = net(x, (h0, c0))
    go = torch.from_numpy(g.uniform(-1, 1, size=tuple(y.shape)).astype("float32"))
    loss = (y * go).sum()
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(loss, [x, h0, c0] + [p for _, p in net.named_parameters()])
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(sd, os.path.join(OUT, "rt_torch_net.safetensors"))
    gp = {}
    for n, gr in zip(names, grads[3:]):
        gp[n.replace(".", "/")] = gr.numpy()
    write_io("rt_torch_net", {"input": x.detach().numpy(), "h0": h0.detach().numpy(), "c0": c0.detach().numpy(),
                              "grad_output": go.numpy()},
             {"output": y.detach().numpy(), "h_n": h_n.detach().numpy(), "c_n": c_n.detach().numpy(),
              "grad_input": grads[0].numpy(), "grad_h0": grads[1].numpy(), "grad_c0": grads[2].numpy(),
              "grad_torch_params": gp})
    info["torch"]["rt_torch_net"] = {
        "file": "rt_torch_net.safetensors", "io": "rt_torch_net.io.h5",
        "flags": ["--head", "fc", "--head-activation", "tanh"],
        "source": repr(net),
        "state_dict": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                       for k, v in Net().state_dict().items()],
    }

    # PyTorch: bias-free RNN (relu, bidirectional), outputs and gradients.
    torch.manual_seed(1)
    g = rng(501)
    rnn = nn.RNN(I, 3, nonlinearity="relu", bidirectional=True, bias=False)
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.from_numpy(g.uniform(-0.6, 0.6, size=tuple(p.shape)).astype("float32")))
    x = torch.from_numpy(g.uniform(-1, 1, size=(T, B, I)).astype("float32")).requires_grad_()
    h0 = torch.from_numpy(g.uniform(-1, 1, size=(2, B, 3)).astype("float32")).requires_grad_()
    out, h_n = rnn(x, h0)
    go = torch.from_numpy(g.uniform(-1, 1, size=tuple(out.shape)).astype("float32"))
    grads = torch.autograd.grad((out * go).sum(), [x, h0] + list(rnn.parameters()))
    save_file({k: v.detach().contiguous() for k, v in rnn.state_dict().items()},
              os.path.join(OUT, "rt_torch_rnn_nobias.safetensors"))
    gp = {}
    for (n, _), gr in zip(rnn.named_parameters(), grads[2:]):
        gp[n] = gr.numpy()
    write_io("rt_torch_rnn_nobias", {"input": x.detach().numpy(), "h0": h0.detach().numpy(), "grad_output": go.numpy()},
             {"output": out.detach().numpy(), "h_n": h_n.detach().numpy(), "grad_input": grads[0].numpy(),
              "grad_h0": grads[1].numpy(), "grad_torch_params": gp})
    info["torch"]["rt_torch_rnn_nobias"] = {"file": "rt_torch_rnn_nobias.safetensors", "io": "rt_torch_rnn_nobias.io.h5",
                                           "flags": ["--activation", "relu"], "source": repr(rnn)}

    # Keras 3 models.
    def keras_model(name, build, seed, extra=None):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build()
        randomize(model, seed)
        xk = rng(600 + seed).uniform(-1, 1, size=(B, T, I)).astype("float32")
        yk = keras.ops.convert_to_numpy(model.predict(xk, verbose=0))
        model.save(os.path.join(OUT, f"{name}.keras"))
        entry = {"file": f"{name}.keras", "io": f"{name}.io.h5", "source": f"keras {keras.__version__}",
                 "output_shape": list(yk.shape)}
        inputs, expected = {"input": xk}, {"output": yk}
        if extra:
            extra(model, xk, yk, inputs, expected, entry)
        write_io(name, inputs, expected)
        info["keras"][name] = entry

    def seq(*ls):
        return lambda: keras.Sequential([keras.Input((T, I))] + list(ls))

    keras_model("rt_keras_nobias", seq(K.LSTM(4, use_bias=False, return_sequences=True),
                                       K.GRU(3, use_bias=False, return_sequences=True),
                                       K.SimpleRNN(2, use_bias=False, return_sequences=True)), 21)
    keras_model("rt_keras_bidir_last_gru_concat", seq(K.Bidirectional(K.GRU(3))), 22)
    def keras_gradients(model, xk, yk, inputs, expected, entry):
        """Keras' loss (sparse categorical crossentropy of the softmax output) and its gradients
        with respect to every trainable variable, by torch autograd through the Keras model."""
        t = np.array([1, 0])
        y = model(torch.from_numpy(xk), training=False)
        loss = keras.losses.SparseCategoricalCrossentropy()(torch.from_numpy(t), y)
        variables = model.trainable_variables
        grads = torch.autograd.grad(loss, [v.value for v in variables])
        inputs["targets"] = t.astype("float32")
        expected["sparse_categorical_crossentropy"] = np.float32(loss.detach().numpy())
        expected["keras_grads"] = {f"{k:02d}": g.detach().numpy() for k, g in enumerate(grads)}
        entry["keras_variables"] = [v.path for v in variables]

    keras_model("rt_keras_bidir_last_lstm_sum_dense",
                seq(K.LSTM(4, return_sequences=True), K.Bidirectional(K.LSTM(3), merge_mode="sum"),
                    K.Dense(2, activation="softmax")), 23, keras_gradients)
    keras_model("rt_keras_bidir_last_backward_layer_ave",
                seq(K.Bidirectional(K.SimpleRNN(3), backward_layer=K.GRU(3, go_backwards=True), merge_mode="ave")), 24)

    def crossentropy(model, xk, yk, inputs, expected, entry):
        t = rng(700).integers(0, 3, size=(B,))
        onehot = np.eye(3, dtype="float32")[t]
        sparse = keras.losses.SparseCategoricalCrossentropy()(t, yk)
        cat = keras.losses.CategoricalCrossentropy()(onehot, yk)
        inputs["targets"] = t.astype("float32")
        expected["sparse_categorical_crossentropy"] = np.float32(keras.ops.convert_to_numpy(sparse))
        expected["categorical_crossentropy"] = np.float32(keras.ops.convert_to_numpy(cat))

    keras_model("rt_keras_softmax_loss", seq(K.LSTM(4), K.Dense(3, activation="softmax")), 25, crossentropy)

    # Keras functional models: chains of supported layers, with return_state outputs.
    def functional(name, build, seed):
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build()
        randomize(model, seed)
        xk = rng(600 + seed).uniform(-1, 1, size=(B, T, I)).astype("float32")
        ys = model.predict(xk, verbose=0)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        model.save(os.path.join(OUT, f"{name}.keras"))
        if name == "rt_keras_functional_states":  # also as weights + JSON (a functional config for --keras-config)
            model.save_weights(os.path.join(OUT, f"{name}.weights.h5"))
            with open(os.path.join(OUT, f"{name}.json"), "w") as f:
                f.write(model.to_json())
        expected = {f"output_{k}": keras.ops.convert_to_numpy(y) for k, y in enumerate(ys)}
        write_io(name, {"input": xk}, expected)
        info["keras"][name] = {"file": f"{name}.keras", "io": f"{name}.io.h5", "source": f"keras {keras.__version__} functional",
                               "outputs": [list(np.shape(y)) for y in ys]}

    def chain():
        i = keras.Input((T, I))
        x = K.LSTM(4, return_sequences=True)(i)
        x = K.Dropout(0.2)(x)
        x = K.Bidirectional(K.GRU(3))(x)
        return keras.Model(i, K.Dense(2, activation="softmax")(x))

    def states():
        i = keras.Input((T, I))
        x = K.GRU(4, return_sequences=True)(i)
        sq, h, c = K.LSTM(3, return_sequences=True, return_state=True)(x)
        return keras.Model(i, [K.Dense(2)(sq), h, c])

    def bidir_states():
        i = keras.Input((T, I))
        out, fh, fc, bh, bc = K.Bidirectional(K.LSTM(3, return_state=True), merge_mode="sum")(i)
        return keras.Model(i, [out, fh, fc, bh, bc])

    functional("rt_keras_functional_chain", chain, 26)
    functional("rt_keras_functional_states", states, 27)
    functional("rt_keras_functional_bidir_states", bidir_states, 28)

    keras.backend.clear_session()
    i = keras.Input((T, I))
    branch = keras.Model(i, K.Concatenate()([K.LSTM(3, return_sequences=True)(i), K.GRU(3, return_sequences=True)(i)]))
    branch.save(os.path.join(OUT, "bad_functional_branch.keras"))

    keras2_roundtrip(info)

    with open(os.path.join(OUT, "roundtrip.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"roundtrip fixtures: {len(info['torch'])} PyTorch, {len(info['keras'])} Keras")


KERAS2_RT_SCRIPT = r'''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tf_keras as keras
out, T, B, I = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
K = keras.layers

def randomize(m, seed):
    g = np.random.default_rng(seed)
    for layer in m.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([g.uniform(-0.6, 0.6, size=w.shape).astype("float32") for w in ws])

def save(name, m, seed):
    randomize(m, 200 + seed)
    x = np.random.default_rng(300 + seed).uniform(-1, 1, size=(B, T, I)).astype("float32")
    ys = m(x)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    m.save(os.path.join(out, name + ".h5"), save_format="h5")
    np.save(os.path.join(out, name + ".x.npy"), x)
    for k, y in enumerate(ys):
        np.save(os.path.join(out, f"{name}.y{k}.npy"), y.numpy())
    print(name, len(ys))

keras.utils.set_random_seed(31)
i = keras.Input((T, I))
x = K.LSTM(4, return_sequences=True)(i)
x = K.Dropout(0.3)(x)
o, fh, bh = K.Bidirectional(K.GRU(3, return_state=True), merge_mode="concat")(x)
save("keras2_functional_bidir_states", keras.Model(i, [K.Dense(2)(o), fh, bh]), 31)
keras.utils.set_random_seed(32)
save("keras2_bidir_last", keras.Sequential([keras.Input((T, I)), K.Bidirectional(K.LSTM(3), merge_mode="ave"),
                                            K.Dense(2, activation="softmax")]), 32)
print("version", keras.__version__)
'''


def keras2_roundtrip(info):
    """tf-keras (Keras 2) functional and last-step Bidirectional models saved as .h5, written in
    the TensorFlow interpreter (KERAS2_PYTHON); without one they are left as they are."""
    python = os.environ.get("KERAS2_PYTHON", "/tmp/tfvenv/bin/python")
    old = os.path.join(OUT, "roundtrip.json")
    if not os.path.exists(python):
        print(f"NOTE: no TensorFlow interpreter at {python}: tf-keras round-trip fixtures not regenerated", file=sys.stderr)
        if os.path.exists(old):
            info["keras"].update({k: v for k, v in json.load(open(old))["keras"].items() if k.startswith("keras2_")})
        return
    r = subprocess.run([python, "-c", KERAS2_RT_SCRIPT, OUT, str(T), str(B), str(I)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("tf-keras failed:\n" + r.stderr[-3000:])
    lines = r.stdout.strip().splitlines()
    version = lines[-1].split()[-1]
    for line in lines[:-1]:
        name, count = line.split()
        x = np.load(os.path.join(OUT, f"{name}.x.npy"))
        ys = [np.load(os.path.join(OUT, f"{name}.y{k}.npy")) for k in range(int(count))]
        for fn in [f"{name}.x.npy"] + [f"{name}.y{k}.npy" for k in range(int(count))]:
            os.remove(os.path.join(OUT, fn))
        write_io(name, {"input": x}, {f"output_{k}": y for k, y in enumerate(ys)} | {"output": ys[0]})
        info["keras"][name] = {"file": f"{name}.h5", "io": f"{name}.io.h5", "source": f"tf-keras {version}",
                               "outputs": [list(y.shape) for y in ys], "output_shape": list(ys[0].shape)}


if __name__ == "__main__":
    if sys.argv[1:] == ["roundtrip"]:  # only the round-trip fixtures, leaving the others as they are
        roundtrip_fixtures()
        sys.exit(0)
    for fn in os.listdir(OUT):
        if fn.endswith((".h5", ".keras", ".safetensors", ".json", ".pt", ".pth")) and fn != "manifest.json":
            if not (fn.startswith("keras2_") and not os.path.exists(os.environ.get("KERAS2_PYTHON", "/tmp/tfvenv/bin/python"))):
                os.remove(os.path.join(OUT, fn))
    torch_fixtures()
    keras_fixtures()
    roundtrip_fixtures()
    if not keras2_legacy():
        old = os.path.join(OUT, "manifest.json")
        if os.path.exists(old):  # keep a previously generated Keras 2 entry
            manifest.extend(e for e in json.load(open(old)) if e["name"] == "keras2_stack")
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, fn)) for fn in os.listdir(OUT))
    print(f"{len(manifest)} fixtures, {total} bytes in {OUT}")
