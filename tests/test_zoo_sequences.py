"""Sequence zoo specs (notes 9, 9.2, 9.4): deep_rnn.dl, bidirectional.dl, gru_notes.dl,
seq2seq.dl and the std layers they use (`DeepRNN` in specs/std/deep_recurrent.dl,
`GRUNotes` in specs/std/recurrent_notes.dl), against independent references:
torch.nn.GRU / LSTM (num_layers = 2, bidirectional = True) and torch.nn.GRUCell with
copied weights, and the notes' GRU equations written out in NumPy.

Every comparison runs dlc's NumPy backend in float64 against float64 references;
outputs and gradients agree to rounding (the recursions are the same up to summation
order over <= 12 steps), hence TOL.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import api
from tests.helpers import copy_into as _copy, max_err as _err, perturbed_params as _params, t64 as _t

torch = pytest.importorskip("torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOL = 1e-9


def _check(errors, tol=TOL):
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, f"max abs errors above {tol:g}: {bad}"


def _layer_prefixes(root, layers, bidirectional):
    """dlc's names of layer ℓ's direction d (DeepRNN: bottom, above.bottom, ...) with
    torch's parameter suffixes."""
    out = []
    for ell in range(layers):
        base = root + "above." * ell + "bottom."
        dirs = [("fwd.", f"l{ell}"), ("bwd.", f"l{ell}_reverse")] if bidirectional else [("", f"l{ell}")]
        out += [(base + d + "cell.", sfx) for d, sfx in dirs]
    return out


def _copy_rnn(ref, p, prefixes, kind):
    for pre, sfx in prefixes:
        _copy(getattr(ref, "weight_ih_" + sfx), p[pre + "W"].T)
        _copy(getattr(ref, "weight_hh_" + sfx), p[pre + "U"].T)
        if kind == "GRU":
            _copy(getattr(ref, "bias_ih_" + sfx), p[pre + "bx"])
            _copy(getattr(ref, "bias_hh_" + sfx), p[pre + "bh"])
        else:   # one bias in dlc: torch's two only matter through their sum
            _copy(getattr(ref, "bias_ih_" + sfx), p[pre + "b"])
            _copy(getattr(ref, "bias_hh_" + sfx), np.zeros_like(p[pre + "b"]))


def _grad_errors(ref, g, prefixes, kind):
    errs = {}
    for pre, sfx in prefixes:
        errs["dW " + pre] = _err(getattr(ref, "weight_ih_" + sfx).grad.T, g[pre + "W"])
        errs["dU " + pre] = _err(getattr(ref, "weight_hh_" + sfx).grad.T, g[pre + "U"])
        b = "bx" if kind == "GRU" else "b"
        errs["db " + pre] = _err(getattr(ref, "bias_ih_" + sfx).grad, g[pre + b])
    return errs


DEEP_PROBE = """
model Probe(hidden = 4) {{
  input x: f32[B, T, 3]
  input w: f32[B, T, {width}]
  input wh: f32[B, hidden]
  ys, states = x |> DeepRNN({kind}, hidden, layers = 2, bidirectional = {bi})
  output y = ys
  {final}
  loss L = sum(ys * w) + sum({last} * wh)
}}
"""


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_deep_rnn_matches_torch_two_layers(kind, bidirectional):
    """DeepRNN(kind, 4, layers = 2, bidirectional) vs torch.nn.<kind>(num_layers = 2,
    bidirectional): every step's output, every layer's and direction's final state, and
    the gradients of every weight and of the input, through a loss that also reads the
    top layer's last backward (or forward) state."""
    B, T, F, H = 3, 9, 3, 4
    D = 2 if bidirectional else 1
    top = "states[1][1]" if bidirectional else "states[1]"
    last = top + "[0]" if kind == "LSTM" else top
    finals = []
    for ell in range(2):
        for d in range(D):
            s = f"states[{ell}]" + (f"[{d}]" if bidirectional else "")
            finals.append(f"output h{ell}{d} = {s}[0]" if kind == "LSTM" else f"output h{ell}{d} = {s}")
    m = api.load(text=DEEP_PROBE.format(kind=kind, bi=str(bidirectional).lower(), width=D * H,
                                        final="\n  ".join(finals), last=last),
                 hparams={"hidden": H}, dims={"T": T})
    rng = np.random.default_rng(7)
    p = _params(m)
    feeds = {"x": rng.standard_normal((B, T, F)), "w": rng.standard_normal((B, T, D * H)),
             "wh": rng.standard_normal((B, H))}
    out = m.run(feeds, p, dtype="f64")
    g = m.gradients("L", feeds, p, wrt=list(p) + ["x"], dtype="f64")

    cls = getattr(torch.nn, kind)
    ref = cls(F, H, num_layers=2, bidirectional=bidirectional, batch_first=True).double()
    _copy_rnn(ref, p, _layer_prefixes("deeprnn0.", 2, bidirectional), kind)
    x = _t(feeds["x"]).requires_grad_()
    y, hn = ref(x)
    hn = hn[0] if kind == "LSTM" else hn          # [layers * D, B, H], layer-major
    loss = (y * _t(feeds["w"])).sum() + (hn[-1] * _t(feeds["wh"])).sum()
    loss.backward()
    errs = {"y": _err(y, out["y"]), "loss": abs(loss.item() - float(g["L"])),
            "dx": _err(x.grad, g["x"])}
    for ell in range(2):
        for d in range(D):
            errs[f"h{ell}{d}"] = _err(hn[ell * D + d], out[f"h{ell}{d}"])
    errs.update(_grad_errors(ref, g, _layer_prefixes("deeprnn0.", 2, bidirectional), kind))
    _check(errs)


def test_deep_rnn_spec_matches_torch_gru():
    """specs/deep_rnn.dl's forward pass and loss gradients = torch.nn.GRU(num_layers = 2)
    + Linear, same weights, on a batch of its data set."""
    from compiler.training.datasets import load as load_dataset
    m = api.load(SPECS / "deep_rnn.dl")
    ds = load_dataset("parity", n=16, length=8, running=True)
    f = {"x": ds.fields["x"].astype(np.float64), "y": ds.fields["y"]}
    p = _params(m)
    out = m.run(f, p, dtype="f64")
    g = m.gradients("ce", f, p, wrt=list(p), dtype="f64")
    rnn = torch.nn.GRU(1, 16, num_layers=2, batch_first=True).double()
    _copy_rnn(rnn, p, _layer_prefixes("rnn.", 2, False), "GRU")
    lin = torch.nn.Linear(16, 2).double()
    _copy(lin.weight, p["readout.W"].T)
    _copy(lin.bias, p["readout.b"])
    logits = lin(rnn(_t(f["x"]))[0])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), torch.tensor(f["y"]).reshape(-1))
    ce.backward()
    errs = {"probs": _err(torch.softmax(logits, -1), out["probs"]),
            "ce": abs(ce.item() - float(out["ce"])),
            "dW readout": _err(lin.weight.grad.T, g["readout.W"])}
    errs.update(_grad_errors(rnn, g, _layer_prefixes("rnn.", 2, False), "GRU"))
    _check(errs)


def test_bidirectional_spec_matches_torch_lstm():
    """specs/bidirectional.dl = Embedding + torch.nn.LSTM(num_layers = 2, bidirectional =
    True) + Linear with copied weights: outputs and every gradient."""
    from compiler.training.datasets import load as load_dataset
    m = api.load(SPECS / "bidirectional.dl")
    ds = load_dataset("reverse", n=12, length=6, symbols=6)
    f = {"x": ds.fields["x"], "y": ds.fields["y"]}
    p = _params(m)
    g = m.gradients("ce", f, p, wrt=list(p), dtype="f64")
    out = m.run(f, p, dtype="f64")
    emb = torch.nn.Embedding(7, 16).double()
    _copy(emb.weight, p["embed.E"] if "embed.E" in p else p[[k for k in p if k.startswith("embed.")][0]])
    rnn = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True).double()
    _copy_rnn(rnn, p, _layer_prefixes("rnn.", 2, True), "LSTM")
    lin = torch.nn.Linear(64, 7).double()
    _copy(lin.weight, p["readout.W"].T)
    _copy(lin.bias, p["readout.b"])
    logits = lin(rnn(emb(torch.tensor(f["x"])))[0])
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), torch.tensor(f["y"]).reshape(-1))
    ce.backward()
    errs = {"ce": abs(ce.item() - float(out["ce"])),
            "pred": float(np.any(logits.argmax(-1).numpy() != out["pred"])),
            "d embed": _err(emb.weight.grad, g[[k for k in p if k.startswith("embed.")][0]])}
    errs.update(_grad_errors(rnn, g, _layer_prefixes("rnn.", 2, True), "LSTM"))
    _check(errs)


# ---- the notes' GRU (9.2) -------------------------------------------------------------------

def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _notes_gru(x, W, U, b, H):
    """Notes 9.2 literally: x̃ = [x_t, z_{t-1}], u = σ(U x̃), r = σ(R x̃),
    z_t = u ⊙ z_{t-1} + (1 - u) ⊙ tanh(W [r ⊙ z_{t-1}, x_t]); the notes' matrices are
    assembled from the layer's blocks (column vectors, so matrices act on the left)."""
    Wr, Wu, Wn = np.split(W, 3, axis=1)
    Ur, Uu, Un = np.split(U, 3, axis=1)
    br, bu, bn = np.split(b, 3)
    R_mat = np.concatenate([Wr, Ur], axis=0).T            # acts on [x, z]
    U_mat = np.concatenate([Wu, Uu], axis=0).T
    W_mat = np.concatenate([Un, Wn], axis=0).T            # acts on [r ⊙ z, x]
    B, T, _ = x.shape
    z = np.zeros((B, H))
    zs = []
    for t in range(T):
        xt = np.concatenate([x[:, t], z], axis=1)           # x̃_t
        u = _sig(xt @ U_mat.T + bu)
        r = _sig(xt @ R_mat.T + br)
        n = np.tanh(np.concatenate([r * z, x[:, t]], axis=1) @ W_mat.T + bn)
        z = u * z + (1 - u) * n
        zs.append(z)
    return np.stack(zs, axis=1), z


def test_gru_notes_matches_the_notes_equations_and_differs_from_torch():
    m = api.load(SPECS / "gru_notes.dl", dims={"T": 12})
    after = api.load(SPECS / "gru_notes.dl", hparams={"reset": "after"}, dims={"T": 12})
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 12, 2))
    y = rng.standard_normal((4, 1))
    p = _params(m, scale=0.5)
    H = 32
    q = {k.split(".")[-1]: v for k, v in p.items() if k.startswith("gru.")}
    _, zT = _notes_gru(x, q["W"], q["U"], q["b"], H)
    pred = zT @ p["readout.W"] + p["readout.b"]
    out = m.run({"x": x, "y": y}, p, dtype="f64")
    _check({"yhat": _err(pred, out["yhat"]), "mse": abs(np.mean((pred - y) ** 2) - out["mse"])})

    # torch's reset-after GRU with the same weights (b_hn = 0) is `reset = "after"`, and
    # a different function: r multiplies z U_n instead of z
    pa = {k: v for k, v in p.items() if not k.startswith("gru.")}
    pa.update({"gru.cell.W": q["W"], "gru.cell.U": q["U"], "gru.cell.bx": q["b"],
               "gru.cell.bh": np.zeros_like(q["b"])})
    ref = torch.nn.GRU(2, H, batch_first=True).double()
    _copy(ref.weight_ih_l0, q["W"].T)
    _copy(ref.weight_hh_l0, q["U"].T)
    _copy(ref.bias_ih_l0, q["b"])
    _copy(ref.bias_hh_l0, np.zeros(3 * H))
    _, hn = ref(_t(x))
    out_after = after.run({"x": x, "y": y}, pa, dtype="f64")
    torch_pred = hn[0].detach().numpy() @ p["readout.W"] + p["readout.b"]
    _check({"reset after vs torch": _err(torch_pred, out_after["yhat"])})
    assert _err(torch_pred, out["yhat"]) > 1e-3       # the two GRUs really differ


def test_gru_notes_gradients_match_torch_autograd_of_the_notes_equations():
    m = api.load(SPECS / "gru_notes.dl", hparams={"hidden": 5}, dims={"T": 7})
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((3, 7, 2)), rng.standard_normal((3, 1))
    p = _params(m, scale=0.5)
    g = m.gradients("mse", {"x": x, "y": y}, p, wrt=list(p) + ["x"], dtype="f64")
    tp = {k: _t(v).requires_grad_() for k, v in p.items()}
    xt = _t(x).requires_grad_()
    W, U, b = tp["gru.cell.W"], tp["gru.cell.U"], tp["gru.cell.b"]
    Wr, Wu, Wn = W.chunk(3, 1)
    Ur, Uu, Un = U.chunk(3, 1)
    br, bu, bn = b.chunk(3)
    z = torch.zeros(3, 5, dtype=torch.float64)
    for t in range(7):
        xtil = torch.cat([xt[:, t], z], 1)
        u = torch.sigmoid(xtil @ torch.cat([Wu, Uu], 0) + bu)
        r = torch.sigmoid(xtil @ torch.cat([Wr, Ur], 0) + br)
        n = torch.tanh(torch.cat([r * z, xt[:, t]], 1) @ torch.cat([Un, Wn], 0) + bn)
        z = u * z + (1 - u) * n
    loss = ((z @ tp["readout.W"] + tp["readout.b"] - _t(y)) ** 2).mean()
    loss.backward()
    errs = {k: _err(v.grad, g[k]) for k, v in tp.items()}
    errs["dx"] = _err(xt.grad, g["x"])
    _check(errs)


def test_gru_notes_bad_reset_is_a_located_error():
    from dsl.errors import DslError
    with pytest.raises(DslError) as e:
        api.load(SPECS / "gru_notes.dl", hparams={"reset": "middle"})
    assert "reset must be" in str(e.value) and "gru_notes.dl" in str(e.value)


# ---- seq2seq (9.4) --------------------------------------------------------------------------

ENCODER = [("encoder.cell.", "l0")]   # a plain GRU: dlc names, torch suffix


class _TorchReverser(torch.nn.Module):
    """specs/seq2seq.dl in torch.nn: Embedding + GRU (LSTM) encoder, GRUCell (LSTMCell)
    decoder started from the encoder's final state, Linear."""

    def __init__(self, p, kind, V=7, E=16, H=64):
        super().__init__()
        self.kind = kind
        self.src, self.tgt = torch.nn.Embedding(V, E).double(), torch.nn.Embedding(V, E).double()
        self.enc = getattr(torch.nn, kind)(E, H, batch_first=True).double()
        self.dec = getattr(torch.nn, kind + "Cell")(E, H).double()
        self.out = torch.nn.Linear(H, V).double()
        _copy(self.src.weight, _one(p, "src_embed."))
        _copy(self.tgt.weight, _one(p, "tgt_embed."))
        _copy_rnn(self.enc, p, ENCODER, kind)
        _copy(self.dec.weight_ih, p["decoder.W"].T)
        _copy(self.dec.weight_hh, p["decoder.U"].T)
        _copy(self.dec.bias_ih, p["decoder.bx" if kind == "GRU" else "decoder.b"])
        _copy(self.dec.bias_hh, p["decoder.bh"] if kind == "GRU" else np.zeros(4 * H))
        _copy(self.out.weight, p["readout.W"].T)
        _copy(self.out.bias, p["readout.b"])

    def _step(self, tok, state):
        state = self.dec(self.tgt(tok), state)
        return state, (state if self.kind == "GRU" else state[0])

    def forward(self, x, y):
        _, s = self.enc(self.src(x))
        s0 = s[0] if self.kind == "GRU" else (s[0][0], s[1][0])
        prev = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], 1)    # teacher forcing
        s, logits = s0, []
        for t in range(y.shape[1]):
            s, h = self._step(prev[:, t], s)
            logits.append(self.out(h))
        s, tok, greedy = s0, torch.zeros_like(y[:, 0]), []
        with torch.no_grad():
            for t in range(y.shape[1]):
                s, h = self._step(tok, s)
                tok = self.out(h).argmax(-1)
                greedy.append(tok)
        return torch.stack(logits, 1), torch.stack(greedy, 1)


def _one(p, prefix):
    (k,) = [k for k in p if k.startswith(prefix)]
    return p[k]


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_seq2seq_teacher_forcing_and_greedy_decoding_match_torch(kind):
    from compiler.training.datasets import load as load_dataset
    m = api.load(SPECS / "seq2seq.dl", hparams={"cell": kind.lower()})
    ds = load_dataset("reverse", n=16, length=6, symbols=6)
    f = {"x": ds.fields["x"], "y": ds.fields["y"]}
    p = _params(m, scale=0.3)
    out = m.run(f, p, dtype="f64")
    g = m.gradients("ce", f, p, wrt=list(p), dtype="f64")
    ref = _TorchReverser(p, kind)
    logits, greedy = ref(torch.tensor(f["x"]), torch.tensor(f["y"]))
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), torch.tensor(f["y"]).reshape(-1))
    ce.backward()
    seq_acc = (greedy.numpy() == f["y"]).all(axis=1).mean()
    errs = {"probs": _err(torch.softmax(logits, -1), out["probs"]),
            "ce": abs(ce.item() - float(out["ce"])),
            "seq_acc": abs(seq_acc - float(out["seq_acc"])),
            "greedy": float(np.any(greedy.numpy() != out["greedy"])),
            "d src": _err(ref.src.weight.grad, _one(g, "src_embed.")),
            "d tgt": _err(ref.tgt.weight.grad, _one(g, "tgt_embed.")),
            "dW dec": _err(ref.dec.weight_ih.grad.T, g["decoder.W"]),
            "dU dec": _err(ref.dec.weight_hh.grad.T, g["decoder.U"]),
            "db dec": _err(ref.dec.bias_ih.grad, g["decoder.bx" if kind == "GRU" else "decoder.b"]),
            "dW out": _err(ref.out.weight.grad.T, g["readout.W"])}
    errs.update(_grad_errors(ref.enc, g, ENCODER, kind))
    _check(errs)
    # greedy decoding feeds back its own tokens: it is not the teacher-forced argmax
    # once a step goes wrong, which untrained weights make likely
    assert np.any(out["greedy"] != np.argmax(out["probs"], -1))
