#!/usr/bin/env python3
"""Builds the embedding interop fixtures: a PyTorch nn.Embedding + nn.LSTM + nn.Linear model
and Keras Sequential([Embedding, GRU, Dense]) models, with fixed seeds, and what the frameworks
compute on integer token ids.

    pip install torch safetensors keras h5py numpy
    KERAS_BACKEND=torch python3 Tests/Fixtures/interop/generate_embedding.py

CI never runs this script: the tests (EmbeddingInteropTests) read the committed files.

  torch_embedding_lstm.safetensors   state_dict: embed.weight (padding_idx=0), lstm.*, fc.*
  torch_embedding_lstm.io.h5         input int64 [T, B] (time-major), lengths, grad_output;
                                     expected/output: fc(pad_packed_sequence(lstm(pack(embed(x)))))
                                     (padded steps: fc of zeros = fc.bias), expected/h_n, c_n,
                                     expected/grad_params/embedding/weight from torch.autograd.grad
                                     of sum(output * grad_output)
  keras_embedding_gru.keras          Input(int32) -> Embedding(7, 3) -> GRU(4, seqs) -> Dense(2)
  keras_embedding_gru.legacy.h5      the same model, model.save("m.h5") (legacy HDF5 layout)
  keras_embedding_gru.io.h5          input int32 [T, B] (time-major, as seqcell run reads it),
                                     expected/output [T, B, 2]
  bad_embedding_mask_zero.keras      Embedding(mask_zero=True): refused with the reason
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
T, B, V, D, H = 5, 3, 7, 3, 4


def ids(seed):
    g = np.random.default_rng(seed)
    x = g.integers(1, V, size=(T, B))
    return x


def torch_fixture():
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D, padding_idx=0)
            self.lstm = nn.LSTM(D, H)
            self.fc = nn.Linear(H, 2)

        def forward(self, x, lengths):
            e = self.embed(x)
            packed = nn.utils.rnn.pack_padded_sequence(e, lengths, enforce_sorted=False)
            out, (h, c) = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
            return self.fc(out), h, c

    m = Model()
    g = np.random.default_rng(1)
    with torch.no_grad():  # biases away from zero, so that fc(0) = fc.bias is visible
        for name, p in m.named_parameters():
            if name != "embed.weight":
                p.copy_(torch.from_numpy(g.uniform(-0.6, 0.6, size=tuple(p.shape)).astype("float32")))
    x = ids(2)
    lengths = np.array([5, 3, 4])
    for b, n in enumerate(lengths):
        x[n:, b] = 0  # padding id
    x[1, 2] = 0  # a padding id inside a sequence: its row (zero) is looked up, gets no gradient
    xt = torch.from_numpy(x)
    out, h, c = m(xt, torch.from_numpy(lengths))
    go = torch.from_numpy(g.uniform(-1, 1, size=tuple(out.shape)).astype("float32"))
    params = dict(m.named_parameters())
    grads = torch.autograd.grad((out * go).sum(), [params["embed.weight"], params["lstm.weight_ih_l0"], params["fc.bias"]])
    save_file({k: v.detach().contiguous() for k, v in m.state_dict().items()},
              os.path.join(HERE, "torch_embedding_lstm.safetensors"))
    with h5py.File(os.path.join(HERE, "torch_embedding_lstm.io.h5"), "w") as f:
        f["input"] = x.astype("int64")
        f["lengths"] = lengths.astype("int64")
        f["grad_output"] = go.numpy()
        e = f.create_group("expected")
        e["output"] = out.detach().numpy()
        e["h_n"] = h.detach().numpy()
        e["c_n"] = c.detach().numpy()
        e["grad_params/embedding/weight"] = grads[0].numpy()
        e["grad_params/layers/00/forward/weight_ih"] = grads[1].numpy()
        e["grad_params/head/bias"] = grads[2].numpy()


def keras_fixtures():
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input(shape=(None,), dtype="int32"),
        keras.layers.Embedding(V, D),
        keras.layers.GRU(H, return_sequences=True),
        keras.layers.Dense(2),
    ])
    g = np.random.default_rng(4)
    model.set_weights([g.uniform(-0.6, 0.6, size=w.shape).astype("float32") for w in model.get_weights()])
    x = ids(5)  # [T, B]
    y = model.predict(x.T.astype("int32"), verbose=0)  # Keras is batch-first: [B, T, 2]
    model.save(os.path.join(HERE, "keras_embedding_gru.keras"))
    model.save(os.path.join(HERE, "keras_embedding_gru.legacy.h5"))  # legacy HDF5: model_weights/<layer>/
    with h5py.File(os.path.join(HERE, "keras_embedding_gru.io.h5"), "w") as f:
        f["input"] = x.astype("int32")
        f.create_group("expected")["output"] = np.transpose(y, (1, 0, 2)).astype("float32")

    masked = keras.Sequential([
        keras.Input(shape=(None,), dtype="int32"),
        keras.layers.Embedding(V, D, mask_zero=True),
        keras.layers.LSTM(H),
    ])
    masked.save(os.path.join(HERE, "bad_embedding_mask_zero.keras"))


if __name__ == "__main__":
    torch_fixture()
    keras_fixtures()
    print("wrote the embedding fixtures to", HERE)
