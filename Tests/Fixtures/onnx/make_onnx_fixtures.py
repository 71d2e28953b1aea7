"""Writes the ONNX import fixtures (run with a Python that has torch, onnx, onnxruntime, h5py):

    python make_onnx_fixtures.py            # in this folder

Each case is a folder CASE/ with
  model.onnx   the model SeqCell imports
  x.h5         seqcell run's input: input, optional lengths, h0, c0 (run's layouts)
  expected.h5  what onnxruntime (or the ONNX package's committed test outputs) gives, in
               seqcell run's datasets: output, h_n, c_n
and manifest.json lists every case with its flags (batch_first; needs: cell options the
case needs from the plugins, which the test checks are declared before comparing).

Three sources:
  torch_*  torch.onnx.export (TorchScript exporter) of nn.LSTM/GRU/RNN stacks with a Linear head
  node_*   single LSTM/GRU/RNN nodes built with onnx.helper, one per attribute combination
  backend_* the ONNX package's own operator test cases (onnx.backend.test.case.node: test_lstm_*,
            test_gru_*, test_rnn_*, test_simple_rnn_*), their model.onnx and test_data_set_0/*.pb
            copied as the package writes them; model.onnx here has the weight inputs (W, R, B, P)
            bound as initializers from input_*.pb, and expected.h5 holds the package's output_*.pb.
"""
import json, os, shutil, sys, warnings
import numpy as np
import h5py, onnx, onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)
manifest = []


def write_case(name, model, feeds, outputs, batch_first, needs=(), note=""):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    with h5py.File(os.path.join(d, "x.h5"), "w") as f:
        for k, v in feeds.items():
            f.create_dataset(k, data=v)
    with h5py.File(os.path.join(d, "expected.h5"), "w") as f:
        for k, v in outputs.items():
            f.create_dataset(k, data=v.astype(np.float32))
    manifest.append({"name": name, "batch_first": batch_first, "needs": list(needs), "note": note})


def y_to_output(y, layout):
    if layout == 0:  # [T, D, B, H] -> [T, B, D*H]
        T, D, B, H = y.shape
        return y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    B, T, D, H = y.shape  # [B, T, D, H] -> [B, T, D*H] (run --batch-first)
    return y.reshape(B, T, D * H)


def state_to_run(s, layout):
    return s if layout == 0 else s.transpose(1, 0, 2)


def ort_run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# ---------------------------------------------------------------- torch.onnx.export
def torch_cases():
    import torch
    torch.manual_seed(7)

    class Net(torch.nn.Module):
        def __init__(self, cell, inp, hid, layers, bi, bf, out, act, **kw):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(inp, hid, num_layers=layers, bidirectional=bi, batch_first=bf, **kw)
            self.fc = torch.nn.Linear(hid * (2 if bi else 1), out)
            self.act = act

        def forward(self, x):
            y, _ = self.rnn(x)
            y = self.fc(y)
            return {"linear": lambda t: t, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                    "softmax": lambda t: torch.softmax(t, -1)}[self.act](y)

    class Bare(torch.nn.Module):
        def __init__(self, cell, inp, hid, layers, bi, bf, **kw):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(inp, hid, num_layers=layers, bidirectional=bi, batch_first=bf, **kw)

        def forward(self, x):
            return self.rnn(x)

    specs = [
        ("torch_lstm_2layer_bidirectional_tanh_head", Net("LSTM", 3, 5, 2, True, False, 4, "tanh"), False),
        ("torch_gru_batch_first_softmax_head", Net("GRU", 3, 6, 1, False, True, 3, "softmax"), True),
        ("torch_rnn_relu_3layer_head", Net("RNN", 4, 5, 3, False, False, 2, "linear", nonlinearity="relu"), False),
        ("torch_gru_2layer_bidirectional_batch_first_sigmoid_head", Net("GRU", 2, 4, 2, True, True, 3, "sigmoid"), True),
        ("torch_lstm_2layer_states", Bare("LSTM", 3, 4, 2, False, False), False),
        ("torch_gru_bidirectional_states", Bare("GRU", 3, 4, 1, True, False), False),
    ]
    # Initial states as graph inputs, which the exporter slices per layer.
    class WithStates(torch.nn.Module):
        def __init__(self, cell, layers, bi):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(3, 4, num_layers=layers, bidirectional=bi)
            self.fc = torch.nn.Linear(8 if bi else 4, 2)

        def forward(self, x, *states):
            y, _ = self.rnn(x, states if len(states) > 1 else states[0])
            return self.fc(y)

    for name, cell, layers, bi in [("torch_lstm_2layer_bidirectional_h0_c0", "LSTM", 2, True), ("torch_gru_3layer_h0", "GRU", 3, False)]:
        m = WithStates(cell, layers, bi).eval()
        T, B, D = 6, 3, 2 if bi else 1
        x = torch.randn(T, B, 3)
        states = [torch.randn(layers * D, B, 4) for _ in range(2 if cell == "LSTM" else 1)]
        names = ["h0", "c0"][:len(states)]
        path = os.path.join(HERE, "_tmp.onnx")
        torch.onnx.export(m, (x, *states), path, dynamo=False, opset_version=14, input_names=["input", *names],
                          output_names=["output"], dynamic_axes={"input": {0: "T", 1: "B"}, **{n: {1: "B"} for n in names}})
        model = onnx.load(path)
        os.remove(path)
        feeds = {"input": x.numpy(), **{n: s.numpy() for n, s in zip(names, states)}}
        got = ort_run(model, feeds)
        with torch.no_grad():
            assert np.abs(got[0] - m(x, *states).numpy()).max() < 1e-5, name
        write_case(name, model, feeds, {"output": got[0]}, False)

    for name, m, bf in specs:
        m.eval()
        T, B = 6, 3
        inp = m.rnn.input_size
        x = torch.randn(B, T, inp) if bf else torch.randn(T, B, inp)
        path = os.path.join(HERE, "_tmp.onnx")
        bare = isinstance(m, Bare)
        outs = ["output", "h_n", "c_n"] if bare and isinstance(m.rnn, torch.nn.LSTM) else ["output", "h_n"] if bare else ["output"]
        torch.onnx.export(m, (x,), path, dynamo=False, opset_version=14, input_names=["input"], output_names=outs,
                          dynamic_axes={"input": {0: "d0", 1: "d1"}})
        model = onnx.load(path)
        os.remove(path)
        xn = x.numpy().astype(np.float32)
        got = ort_run(model, {"input": xn})
        with torch.no_grad():
            ref = m(x)
        ref = [ref[0], *ref[1]] if bare and isinstance(m.rnn, torch.nn.LSTM) else [ref[0], ref[1]] if bare else [ref]
        for a, b in zip(got, ref):  # onnxruntime agrees with PyTorch
            assert np.abs(a - b.numpy()).max() < 1e-5, name
        write_case(name, model, {"input": xn}, dict(zip(outs, got)), bf)


# ---------------------------------------------------------------- onnx.helper single nodes
def node_model(op, D, H, I, layout, with_b, with_lens, with_init, attrs, peep=False, opset=14):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    inits = [numpy_helper.from_array((rng.standard_normal((D, G * H, I)) * 0.5).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((D, G * H, H)) * 0.5).astype(np.float32), "R")]
    ins = ["X", "W", "R", "B" if with_b else "", "sequence_lens" if with_lens else ""]
    if with_b:
        inits.append(numpy_helper.from_array((rng.standard_normal((D, 2 * G * H)) * 0.3).astype(np.float32), "B"))
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    if with_lens:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, None))
    if with_init:
        ins.append("initial_h")
        graph_inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, None))
        if op == "LSTM":
            ins.append("initial_c")
            graph_inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, None))
    if peep:
        while len(ins) < 7:
            ins.append("")
        ins.append("P")
        inits.append(numpy_helper.from_array((rng.standard_normal((D, 3 * H)) * 0.5).astype(np.float32), "P"))
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, ins, outs, hidden_size=H, layout=layout, **attrs) if opset >= 14 else \
        helper.make_node(op, ins, outs, hidden_size=H, **attrs)
    g = helper.make_graph([node], op.lower(), graph_inputs,
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def node_case(name, op, direction="forward", layout=0, with_b=True, with_lens=False, with_init=False, attrs=None,
              peep=False, needs=(), opset=14):
    D = 2 if direction == "bidirectional" else 1
    H, I, T, B = 4, 3, 5, 3
    a = dict(attrs or {})
    a["direction"] = direction
    model = node_model(op, D, H, I, layout, with_b, with_lens, with_init, a, peep, opset)
    x = rng.standard_normal((T, B, I) if layout == 0 else (B, T, I)).astype(np.float32)
    feeds = {"X": x}
    run_feeds = {"input": x}
    if with_lens:
        lens = np.array([T, 2, 4][:B], dtype=np.int32)
        feeds["sequence_lens"] = lens
        run_feeds["lengths"] = lens
    if with_init:
        shape = (D, B, H) if layout == 0 else (B, D, H)
        feeds["initial_h"] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        run_feeds["h0"] = state_to_run(feeds["initial_h"], layout)
        if op == "LSTM":
            feeds["initial_c"] = (rng.standard_normal(shape) * 0.5).astype(np.float32)
            run_feeds["c0"] = state_to_run(feeds["initial_c"], layout)
    if layout == 0:
        got = ort_run(model, feeds)
    else:
        # onnxruntime runs layout 0 only: run the same node with layout 0 on the transposed
        # input (layout 1 is that transposition, by the operator's definition) and check the
        # result against the ONNX package's reference implementation of layout 1.
        twin = onnx.ModelProto()
        twin.CopyFrom(model)
        for a in twin.graph.node[0].attribute:
            if a.name == "layout":
                a.i = 0
        f0 = {k: (v.transpose(1, 0, 2) if k in ("X", "initial_h", "initial_c") else v) for k, v in feeds.items()}
        g0 = ort_run(twin, f0)
        got = [g0[0].transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in g0[1:]]
        from onnx.reference import ReferenceEvaluator
        try:
            ref = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:  # the reference lacks this combination
            ref = None
            print("reference evaluator:", name, type(e).__name__)
        if ref is not None:
            for a, b in zip(got, ref):
                assert np.abs(a - b).max() < 1e-5, name
    outs = {"output": y_to_output(got[0], layout), "h_n": state_to_run(got[1], layout)}
    if op == "LSTM":
        outs["c_n"] = state_to_run(got[2], layout)
    write_case(name, model, run_feeds, outs, layout == 1, needs)


def node_cases():
    for op in ["LSTM", "GRU", "RNN"]:
        o = op.lower()
        for direction in ["forward", "reverse", "bidirectional"]:
            node_case(f"node_{o}_{direction}", op, direction)
            node_case(f"node_{o}_{direction}_lens_init", op, direction, with_lens=True, with_init=True)
            node_case(f"node_{o}_{direction}_layout1_init", op, direction, layout=1, with_init=True)
        node_case(f"node_{o}_no_bias", op, "bidirectional", with_b=False)
        node_case(f"node_{o}_opset7", op, "forward", with_lens=True, opset=7)
        node_case(f"node_{o}_clip", op, "bidirectional", attrs={"clip": 0.7}, needs=["clip"])
    node_case("node_gru_linear_before_reset0", "GRU", "bidirectional", attrs={"linear_before_reset": 0}, with_lens=True, with_init=True)
    node_case("node_gru_linear_before_reset1", "GRU", "bidirectional", attrs={"linear_before_reset": 1}, with_lens=True, with_init=True)
    node_case("node_rnn_relu", "RNN", "bidirectional", attrs={"activations": ["Relu", "Relu"]}, with_lens=True)
    node_case("node_rnn_tanh_explicit", "RNN", "forward", attrs={"activations": ["Tanh"]})
    node_case("node_lstm_peepholes", "LSTM", "bidirectional", peep=True, with_lens=True, with_init=True, needs=["peepholes"])
    node_case("node_lstm_input_forget", "LSTM", "forward", attrs={"input_forget": 1}, needs=["input_forget"])
    acts = [("Sigmoid", None, None), ("Tanh", None, None), ("Relu", None, None), ("Affine", 0.7, 0.2), ("LeakyRelu", 0.05, None),
            ("ThresholdedRelu", 0.3, None), ("ScaledTanh", 1.2, 0.8), ("HardSigmoid", 0.3, 0.4), ("Elu", 0.9, None),
            ("Softsign", None, None), ("Softplus", None, None)]
    for act, al, be in acts:
        lo = act.lower()
        # One list entry per activation: onnxruntime reads alpha/beta positionally.
        for op, slots, opt in [("RNN", 1, "activation"), ("GRU", 2, "gate_activation"), ("LSTM", 3, "gate_activation")]:
            names = [act] + {"RNN": [], "GRU": ["Tanh"], "LSTM": ["Tanh", "Tanh"]}[op]
            attrs = {"activations": names}
            if al is not None:
                attrs["activation_alpha"] = [al] + [0.0] * (len(names) - 1)
            if be is not None:
                attrs["activation_beta"] = [be] + [0.0] * (len(names) - 1)
            default = {"RNN": "tanh", "GRU": "sigmoid", "LSTM": "sigmoid"}[op]
            # rnn's `activation` exists (tanh, relu); the other names come with activation_alpha.
            needs = [] if lo == default or (op == "RNN" and lo == "relu") else [opt if op != "RNN" else "activation_alpha"]
            node_case(f"node_{op.lower()}_act_{lo}", op, "forward", attrs=attrs, with_lens=True, needs=needs)
    # The second (g) and third (h) LSTM activations and GRU's candidate activation.
    node_case("node_lstm_acts_g_h", "LSTM", "bidirectional",
              attrs={"activations": ["Sigmoid", "Softsign", "Elu", "HardSigmoid", "Tanh", "Affine"],
                     "activation_alpha": [0.0, 0.0, 0.8, 0.25, 0.0, 0.5], "activation_beta": [0.0, 0.0, 0.0, 0.45, 0.0, 0.1]},
              needs=["cell_activation", "output_activation"])
    node_case("node_gru_candidate_act", "GRU", "forward", attrs={"activations": ["Sigmoid", "Relu"]}, needs=["candidate_activation"])
    # alpha/beta go to the activations that use them, in order: LeakyRelu takes the first alpha.
    node_case("node_gru_alpha_order", "GRU", "forward", attrs={"activations": ["Sigmoid", "LeakyRelu"], "activation_alpha": [0.3]},
              needs=["candidate_activation"])
    # Defaults when alpha/beta are absent (as onnxruntime applies them; ThresholdedRelu's is 0 there).
    node_case("node_gru_default_alphas", "GRU", "bidirectional",
              attrs={"activations": ["HardSigmoid", "LeakyRelu", "Sigmoid", "Elu"]}, needs=["gate_activation", "candidate_activation"])
    node_case("node_gru_thresholded_default", "GRU", "forward", attrs={"activations": ["Sigmoid", "ThresholdedRelu"]},
              needs=["candidate_activation"])


# ---------------------------------------------------------------- the ONNX package's operator tests
def backend_cases():
    from onnx.backend.test.case import node as bnode
    cases = [c for c in bnode.collect_testcases(None)
             if any(c.name.startswith(p) for p in ("test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_"))]
    for c in cases:
        model = c.model
        inputs, outputs = c.data_sets[0]
        d = os.path.join(HERE, "backend", c.name)
        os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        for i, a in enumerate(inputs):
            t = numpy_helper.from_array(a, model.graph.input[i].name)
            open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb").write(t.SerializeToString())
        for i, a in enumerate(outputs):
            t = numpy_helper.from_array(a, model.graph.output[i].name)
            open(os.path.join(d, "test_data_set_0", f"output_{i}.pb"), "wb").write(t.SerializeToString())
        # The same model with its weights bound (SeqCell imports weights from initializers).
        node = model.graph.node[0]
        op = node.op_type
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        roles = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
        bound = onnx.ModelProto()
        bound.CopyFrom(model)
        by_name = {model.graph.input[i].name: inputs[i] for i in range(len(inputs))}
        keep, run_feeds = [], {}
        for slot, nm in enumerate(node.input):
            if not nm:
                continue
            role = roles[slot]
            if role in ("W", "R", "B", "P"):
                bound.graph.initializer.append(numpy_helper.from_array(by_name[nm].astype(np.float32), nm))
            else:
                keep.append(nm)
                v = by_name[nm]
                run_feeds[{"X": "input", "sequence_lens": "lengths", "initial_h": "h0", "initial_c": "c0"}[role]] = \
                    state_to_run(v, layout) if role.startswith("initial") else v
        del bound.graph.input[:]
        bound.graph.input.extend([i for i in model.graph.input if i.name in keep])
        outs = {}
        by_output = {model.graph.output[i].name: outputs[i] for i in range(len(outputs))}
        for i, o in enumerate(node.output):
            if o not in by_output:
                continue
            v = by_output[o]
            outs[["output", "h_n", "c_n"][i]] = y_to_output(v, layout) if i == 0 else state_to_run(v, layout)
        # onnxruntime agrees with the package's expected outputs (it runs layout 0 only).
        if layout == 0:
          got = ort_run(model, {model.graph.input[i].name: inputs[i] for i in range(len(inputs))})
          for a, b in zip(got, outputs):
            assert np.abs(a - b).max() < 1e-5, c.name
        attrs = {a.name for a in node.attribute}
        needs = (["peepholes"] if "P" in [roles[i] for i, n in enumerate(node.input) if n] and op == "LSTM" else [])
        needs += ["clip"] if "clip" in attrs else []
        needs += ["input_forget"] if "input_forget" in attrs else []
        name = "backend_" + c.name[len("test_"):]
        write_case(name, bound, run_feeds, outs, layout == 1, needs, note=f"backend/{c.name}")


# ---------------------------------------------------------------- last-step heads (Keras return_sequences=False as tf2onnx writes it)
def last_step_case(name, op, direction, gemm, act, with_lens):
    D = 2 if direction == "bidirectional" else 1
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    H, I, T, B, O = 4, 3, 5, 3, 2
    inits = [numpy_helper.from_array((rng.standard_normal((D, G * H, I)) * 0.5).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((D, G * H, H)) * 0.5).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((D, 2 * G * H)) * 0.3).astype(np.float32), "B")]
    ins = ["X", "W", "R", "B"] + (["sequence_lens"] if with_lens else [])
    gi = [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)]
    if with_lens:
        gi.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, None))
    nodes = [helper.make_node(op, ins, ["", "Y_h"], hidden_size=H, direction=direction, name="rnn")]
    if D == 1:
        inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"))
        nodes.append(helper.make_node("Squeeze", ["Y_h", "axes0"], ["last"], name="squeeze"))
    else:
        nodes.append(helper.make_node("Transpose", ["Y_h"], ["yt"], perm=[1, 0, 2], name="transpose"))
        inits.append(numpy_helper.from_array(np.array([-1, D * H], dtype=np.int64), "shape2"))
        nodes.append(helper.make_node("Reshape", ["yt", "shape2"], ["last"], name="reshape"))
    F = D * H
    wd = (rng.standard_normal((F, O)) * 0.5).astype(np.float32)
    bd = (rng.standard_normal(O) * 0.3).astype(np.float32)
    if gemm:
        inits += [numpy_helper.from_array(np.ascontiguousarray(wd.T), "dense_w"), numpy_helper.from_array(bd, "dense_b")]
        nodes.append(helper.make_node("Gemm", ["last", "dense_w", "dense_b"], ["pre"], transB=1, name="dense"))
    else:
        inits += [numpy_helper.from_array(wd, "dense_w"), numpy_helper.from_array(bd, "dense_b")]
        nodes.append(helper.make_node("MatMul", ["last", "dense_w"], ["mm"], name="dense_matmul"))
        nodes.append(helper.make_node("Add", ["mm", "dense_b"], ["pre"], name="dense_add"))
    nodes.append(helper.make_node(act, ["pre"], ["probs"], name="act"))
    g = helper.make_graph(nodes, name, gi, [helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    feeds, run_feeds = {"X": x}, {"input": x}
    if with_lens:
        feeds["sequence_lens"] = run_feeds["lengths"] = np.array([T, 2, 4], dtype=np.int32)
    got = ort_run(model, feeds)
    write_case(name, model, run_feeds, {"output": got[0]}, False)


def last_step_cases():
    last_step_case("last_lstm_gemm_sigmoid", "LSTM", "forward", True, "Sigmoid", True)
    last_step_case("last_gru_bidirectional_matmul_softmax", "GRU", "bidirectional", False, "Softmax", True)
    last_step_case("last_rnn_reverse_gemm_tanh", "RNN", "reverse", True, "Tanh", True)


if __name__ == "__main__":
    for n in os.listdir(HERE):
        p = os.path.join(HERE, n)
        if os.path.isdir(p):
            shutil.rmtree(p)
    torch_cases()
    node_cases()
    backend_cases()
    last_step_cases()
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump({"cases": manifest}, f, indent=1)
    print(len(manifest), "cases")
