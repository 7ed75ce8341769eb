"""Attention zoo, part 1: specs/causal_lm.dl, specs/vit.dl, specs/linear_attention.dl.

* causal_lm: the decoder-only LM equals torch (Embedding, TransformerEncoderLayer
  (norm_first=True) under torch's causal mask, LayerNorm, Linear) with copied weights,
  values and every gradient; its output at t does not depend on the tokens after t;
  `categorical` at temperature tau draws from softmax(logits / tau); `dlc train`
  reaches the Markov chain's entropy rate.
* vit: patches, patch embedding, class token and a pre-norm encoder equal torch
  (x.unfold patches, Linear, TransformerEncoderLayer(norm_first=True, gelu)); the
  spec's train block (`dlc train`) reaches >= 95% test accuracy on the digits.
* linear_attention: the causal `scan` and the non-causal phi(Q)(phi(K)^T V) equal
  their quadratic forms (phi(Q) phi(K)^T masked, normalised, times V), values and
  gradients (torch autograd of the quadratic form).

Comparisons run dlc's NumPy backend in float64 against torch in float64: the
tolerance TOL = 1e-8 (from test_family_sequence) leaves ~6 orders of magnitude of
room over the measured ~1e-14 round-off while any formula difference is O(0.1).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.commands import cli
from compiler.training import datasets
from tests.test_family_sequence import (_check, _copy, _copy_encoder_layer, _dlc,
                                        _encoder_layer_grad_errors, _maxerr, _params, _pe, _t)

torch = pytest.importorskip("torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"
CAUSAL_LM, VIT, LINEAR = SPECS / "causal_lm.dl", SPECS / "vit.dl", SPECS / "linear_attention.dl"


def _train(path, tmp_path, capsys, *extra):
    capsys.readouterr()
    code = cli.main(["train", str(path), "--json", "--quiet", "--out", str(tmp_path / "run"), *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def _linear(p, name):
    lin = torch.nn.Linear(*p[name + ".W"].shape).double()
    _copy(lin.weight, p[name + ".W"].T)
    _copy(lin.bias, p[name + ".b"])
    return lin


def _norm(p, name):
    ln = torch.nn.LayerNorm(p[name + ".gamma"].shape[0]).double()
    _copy(ln.weight, p[name + ".gamma"])
    _copy(ln.bias, p[name + ".beta"])
    return ln


def _encoder_layers(p, prefixes, d, heads, ff, **kw):
    layers = []
    for pre in prefixes:
        blk = torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, **kw).double()
        _copy_encoder_layer(blk, p, pre)
        layers.append(blk)
    return layers


def _module_grad_errors(mod, g, name):
    """Linear / LayerNorm grads against dlc's [in, out] W, b / gamma, beta."""
    if isinstance(mod, torch.nn.Linear):
        return {f"d{name}.W": _maxerr(mod.weight.grad.T, g[name + ".W"]),
                f"d{name}.b": _maxerr(mod.bias.grad, g[name + ".b"])}
    return {f"d{name}.gamma": _maxerr(mod.weight.grad, g[name + ".gamma"]),
            f"d{name}.beta": _maxerr(mod.bias.grad, g[name + ".beta"])}


def _onnx_ok(m, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(m.export_onnx(tmp_path / f"{m.name}.onnx"), full_check=True)


# ---- causal_lm -----------------------------------------------------------------------------------

LM_H = {"d_model": 8, "heads": 2, "d_ff": 16, "layers": 2, "vocab": 8}


def _lm_case(B=3, T=6, seed=0):
    m = api.load(CAUSAL_LM, hparams=LM_H, dims={"T": T})
    ds = datasets.load("markov", n=B, length=T, vocab=8, seed=seed)
    return m, {"x": ds.fields["x"], "y": ds.fields["y"]}


def test_causal_lm_matches_torch():
    m, feeds = _lm_case()
    p = _params(m)
    out, g = _dlc(m, feeds, p, loss="ce")
    B, T = feeds["x"].shape
    embed = torch.nn.Embedding(8, 8).double()
    _copy(embed.weight, p["embed.E"])
    blocks = _encoder_layers(p, [f"blocks.{i}.block." for i in range(2)], 8, 2, 16, norm_first=True)
    norm, head = _norm(p, "norm"), _linear(p, "head")
    drop = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)   # torch: true = not attended
    h = embed(torch.tensor(feeds["x"])) + _t(_pe(T, 8))
    for blk in blocks:
        h = blk(h, src_mask=drop)
    logits = head(norm(h))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 8), torch.tensor(feeds["y"]).reshape(-1))
    loss.backward()
    errs = {"probs": _maxerr(torch.softmax(logits, -1), out["probs"]), "ce": abs(loss.item() - out["ce"]),
            "dembed.E": _maxerr(embed.weight.grad, g["embed.E"])}
    errs.update(_module_grad_errors(norm, g, "norm"))
    errs.update(_module_grad_errors(head, g, "head"))
    for i, blk in enumerate(blocks):
        errs.update({f"{i}.{k}": v for k, v in _encoder_layer_grad_errors(blk, g, f"blocks.{i}.block.").items()})
    _check(errs)


def test_causal_lm_output_at_t_ignores_later_tokens():
    m, feeds = _lm_case(B=4, T=8, seed=2)
    p = _params(m)
    base = m.run(feeds, p, dtype="f64")["probs"]
    rng = np.random.default_rng(0)
    for t in range(8):
        x = feeds["x"].copy()
        x[:, t + 1:] = rng.integers(0, 8, x[:, t + 1:].shape)      # change the future
        probs = m.run({**feeds, "x": x}, p, dtype="f64")["probs"]
        assert np.max(np.abs(probs[:, :t + 1] - base[:, :t + 1])) < 1e-12, t
        x[:, t] = (x[:, t] + 1) % 8                                # change the present
        probs = m.run({**feeds, "x": x}, p, dtype="f64")["probs"]
        # the perturbation is seen where it may be: position t itself changes
        assert np.max(np.abs(probs[:, t] - base[:, t])) > 1e-4, t


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_causal_lm_samples_by_temperature(tau):
    N = 4000
    m = api.load(CAUSAL_LM, hparams={**LM_H, "temperature": tau, "draws": N}, dims={"T": 5})
    ds = datasets.load("markov", n=2, length=5, vocab=8, seed=3)
    p = _params(m)
    p["head.W"] = 3 * p["head.W"]      # larger logits, so that the temperature matters
    out = m.run({"x": ds.fields["x"], "y": ds.fields["y"]}, p, dtype="f64", seed=5)
    logits = np.log(out["probs"][:, -1])                       # logits up to a constant
    for b in range(2):
        want = np.exp(logits[b] / tau - np.max(logits[b] / tau))
        want /= want.sum()
        other = np.exp(logits[b] / (2.5 - tau))                # the other temperature's law
        other /= other.sum()
        freq = np.bincount(out["next_token"][:, b], minlength=8) / N
        # 5 binomial standard deviations (sqrt(p(1-p)/N) <= 0.0079) per class
        tol = 5 * np.sqrt(want * (1 - want) / N) + 1e-3
        assert np.all(np.abs(freq - want) <= tol), (freq, want)
        assert np.max(np.abs(want - other)) > 0.1   # the check could tell the two apart


def test_causal_lm_reaches_the_entropy_rate(tmp_path, capsys):
    """The full train block (measured: test ce 0.715 vs entropy rate 0.678, unigram
    entropy 1.98): within 0.1 nat of the best possible, far below context-free."""
    r = _train(CAUSAL_LM, tmp_path, capsys)
    ds = datasets.load("markov", n=512, length=16, vocab=8, branch=2)
    pi = ds.meta["stationary"]
    assert r["test"]["ce"] < ds.meta["entropy_rate"] + 0.1, r["test"]
    assert r["test"]["ce"] < -np.sum(pi * np.log(pi)) - 0.5


# ---- vit ---------------------------------------------------------------------------------------

VIT_H = {"d_model": 8, "heads": 2, "d_ff": 16, "layers": 1}


def test_vit_matches_torch():
    m = api.load(VIT, hparams=VIT_H)
    p = _params(m)
    x = datasets.load("digits", image=True).fields["x"][:4].astype(np.float64)
    y = np.array([0, 3, 7, 9])
    out, g = _dlc(m, {"x": x, "y": y}, p, loss="ce")
    xt = _t(x).requires_grad_()
    # patches by torch's unfold: [B, 1, 2, 2, 4, 4] -> [B, 4 patches, 16 pixels], row-major
    patches = xt.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(4, 4, 16)
    embed, norm, head = _linear(p, "embed"), _norm(p, "norm"), _linear(p, "head")
    cls, pos = _t(p["cls"]).requires_grad_(), _t(p["pos"]).requires_grad_()
    (enc,) = _encoder_layers(p, ["encoder.0."], 8, 2, 16, norm_first=True, activation="gelu")
    h = torch.cat([cls.expand(4, 1, 8), embed(patches)], dim=1) + pos
    logits = head(norm(enc(h))[:, 0])
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    loss.backward()
    errs = {"probs": _maxerr(torch.softmax(logits, -1), out["probs"]), "ce": abs(loss.item() - out["ce"]),
            "dx": _maxerr(xt.grad, g["x"]), "dcls": _maxerr(cls.grad, g["cls"]),
            "dpos": _maxerr(pos.grad, g["pos"])}
    for mod, name in ((embed, "embed"), (norm, "norm"), (head, "head")):
        errs.update(_module_grad_errors(mod, g, name))
    errs.update(_encoder_layer_grad_errors(enc, g, "encoder.0."))
    _check(errs)


def test_vit_train_block_reaches_95_percent(tmp_path, capsys):
    """`dlc train specs/vit.dl` as its train block says (patch 4, d 32, 2 blocks, 30
    epochs). Measured: 97.2% test accuracy (seeds 1, 2: 97.2, 98.3%; with 1 block
    seed 0 gave only 94.4%)."""
    r = _train(VIT, tmp_path, capsys)
    assert r["test"]["acc"] >= 0.95, r["test"]


# ---- linear_attention --------------------------------------------------------------------------

LIN_PROBE = """
import "linear_attention.dl" as la

model Probe() {
  input q: f32[B, T, 4]
  input k: f32[B, T, 4]
  input v: f32[B, T, 3]
  input w: f32[B, T, 3]
  output causal = la.causal_linear_attention(q, k, v)
  output full = la.linear_attention(q, k, v)
  loss Lc = sum(causal * w)
  loss Lf = sum(full * w)
}
"""


def _quadratic(q, k, v, causal):
    """The quadratic form: A = phi(Q) phi(K)^T (masked), rows normalised, times V."""
    phi = lambda a: torch.nn.functional.elu(a) + 1
    A = phi(q) @ phi(k).transpose(1, 2)                        # [B, T, T]
    if causal:
        A = A * torch.tril(torch.ones(A.shape[-2:], dtype=A.dtype))
    return (A / A.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_linear_attention_equals_its_quadratic_form(causal):
    B, T = 2, 7
    m = api.load(text=LIN_PROBE, dims={"T": T})     # imports the bundled specs/linear_attention.dl
    rng = np.random.default_rng(4)
    feeds = {n: rng.standard_normal((B, T, d)) for n, d in (("q", 4), ("k", 4), ("v", 3), ("w", 3))}
    loss, name = ("Lc", "causal") if causal else ("Lf", "full")
    out = m.run(feeds, {}, dtype="f64")
    g = m.gradients(loss, feeds, {}, wrt=["q", "k", "v"], dtype="f64")
    q, k, v = (_t(feeds[n]).requires_grad_() for n in "qkv")
    y = _quadratic(q, k, v, causal)
    (y * _t(feeds["w"])).sum().backward()
    errs = {name: _maxerr(y, out[name]), "dq": _maxerr(q.grad, g["q"]),
            "dk": _maxerr(k.grad, g["k"]), "dv": _maxerr(v.grad, g["v"])}
    _check(errs)
    if causal:   # the causal form really is causal: it differs from the full one
        assert _maxerr(_quadratic(q, k, v, False), out["causal"]) > 1e-2


def test_linear_attention_lm_is_causal_and_learns(tmp_path, capsys):
    m = api.load(LINEAR, dims={"T": 8})
    ds = datasets.load("markov", n=3, length=8, vocab=8, seed=1)
    feeds = {"x": ds.fields["x"], "y": ds.fields["y"]}
    p = _params(m)
    base = m.run(feeds, p, dtype="f64")["probs"]
    x = feeds["x"].copy()
    x[:, 5:] = (x[:, 5:] + 3) % 8
    probs = m.run({**feeds, "x": x}, p, dtype="f64")["probs"]
    assert np.max(np.abs(probs[:, :5] - base[:, :5])) < 1e-12
    assert np.max(np.abs(probs[:, 5:] - base[:, 5:])) > 1e-4
    # the train block: measured test ce 0.719 (entropy rate 0.678, unigram entropy 1.98)
    r = _train(LINEAR, tmp_path, capsys)
    rate = datasets.load("markov", n=512, length=16, vocab=8, branch=2).meta["entropy_rate"]
    assert r["test"]["ce"] < rate + 0.15, r["test"]


def test_linear_attention_scan_graph_does_not_grow_with_length():
    """The causal form is a scan, not an unrolled loop: T = 8 and T = 64 build graphs
    of the same size, forward and with gradients (its gradient is a reverse scan).
    (The graphs as built: after passes, constant folding of the [T, d] positional
    table depends on T, a difference of 2 nodes that has nothing to do with the scan.)"""
    from compiler.commands.summary import graph_sizes
    small, large = (graph_sizes(api.load(LINEAR, dims={"T": T})) for T in (8, 64))
    for key in ("forward", "with_gradients"):
        assert small[key] == large[key], (key, small, large)


@pytest.mark.parametrize("spec", [CAUSAL_LM, VIT, LINEAR], ids=lambda s: s.stem)
def test_onnx_export_passes_full_check(spec, tmp_path):
    _onnx_ok(api.load(spec), tmp_path)
