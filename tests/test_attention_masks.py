"""Masks through the attention layers of specs/std/attention.dl: the documented
defaults compile, causal and arbitrary [Tq, Tk] masks reach every layer as call
inputs, and the encoder and decoder layers equal torch's (float64, copied weights).

Tolerance: 1e-8 max abs error in float64 (as the other torch references: the sums are
a few dozen terms, each well inside float64's 1e-16 relative rounding)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import api
from dsl.errors import DslError
from tests.test_family_sequence import (_check, _copy, _dlc, _maxerr, _padding, _params, _t,
                                        check_encoder_layer_against_torch)

torch = pytest.importorskip("torch")


def test_documented_default_masks_compile():
    """`MultiHeadAttention(d, h)(x, x, true)` and a layer called with no mask at all
    used to fail with "argument must be a tensor, found the boolean true"."""
    m = api.load(text="""
model M(d = 8, h = 2) {
  input x: f32[B, T, d]
  a = MultiHeadAttention(d, h)(x, x, true)
  b = MultiHeadAttention(d, h)(x, x)
  e = x |> TransformerEncoderLayer(d, h, 16)
  output y = a + b + e
}""")
    out = m.run({"x": np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)},
                m.init_params())
    assert out["y"].shape == (2, 4, 8) and np.isfinite(out["y"]).all()


def test_optional_inputs_by_name_and_errors():
    ok = api.load(text="""
model M(d = 8) {
  input x: f32[B, T, d]
  output y = TransformerEncoderLayer(d, 2, 16)(x, attn_mask = causal_mask(dim(x, 1)))
}""")
    assert "y" in ok.outputs
    with pytest.raises(DslError, match="has no input `mask_typo`"):
        api.load(text="""
model M(d = 8) {
  input x: f32[B, T, d]
  output y = TransformerEncoderLayer(d, 2, 16)(x, mask_typo = true)
}""")
    with pytest.raises(DslError, match="needs a default"):
        api.load(text="""
layer L() { (x = 1, y) -> x }
model M() { input x: f32[3]
  output y = L()(x, x) }""")
    with pytest.raises(DslError, match="cannot have a default here"):
        api.load(text="model M() { input x: f32[3]\n output y = (fn(a = 1) -> a)(x) }")


CAUSAL = """
model Probe(d = 8, heads = 2, ff = 16, norm_first = false) {
  input x: f32[B, T, d]
  input keep: bool[B, T]
  input w: f32[B, T, d]
  y = TransformerEncoderLayer(d, heads, ff, norm_first = norm_first)(x, keep, causal_mask(dim(x, 1)))
  output y = y
  loss L = sum(y * w)
}
"""


@pytest.mark.parametrize("norm_first", [False, True])
def test_causal_encoder_layer_matches_torch(norm_first):
    T = 6
    causal_drop = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # torch: true = drop
    check_encoder_layer_against_torch(CAUSAL, norm_first, seed=3, src_mask=causal_drop)


@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_causal_mask_makes_step_t_independent_of_later_inputs(backend):
    T = 5
    m = api.load(text="""
model M(d = 8) {
  input x: f32[B, T, d]
  output y = TransformerDecoderLayer(d, 2, 16)(x, x, causal_mask(dim(x, 1)), causal_mask(dim(x, 1)))
}""")
    p = m.init_params(1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, T, 8)).astype(np.float32)
    base = m.run({"x": x}, p, backend=backend)["y"]
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1:] += rng.standard_normal(x2[:, t + 1:].shape).astype(np.float32)
        y2 = m.run({"x": x2}, p, backend=backend)["y"]
        # steps up to t see nothing after t: equal to float32 rounding of the same sums
        np.testing.assert_allclose(y2[:, :t + 1], base[:, :t + 1], atol=1e-5, rtol=1e-5)
        assert np.abs(y2[:, t + 1:] - base[:, t + 1:]).max() > 1e-3  # later steps do change


DECODER = """
model Probe(d = 8, heads = 2, ff = 16, norm_first = false) {
  input x: f32[B, T, d]
  input mem: f32[B, S, d]
  input mem_keep: bool[B, S]
  input w: f32[B, T, d]
  y = TransformerDecoderLayer(d, heads, ff, norm_first = norm_first)(x, mem, causal_mask(dim(x, 1)), memory_keep = mem_keep)
  output y = y
  loss L = sum(y * w)
}
"""


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    B, T, S, D = 3, 5, 6, 8
    m = api.load(text=DECODER, hparams={"norm_first": norm_first}, dims={"T": T, "S": S})
    rng = np.random.default_rng(5)
    p = _params(m)
    mem_keep = _padding(B, S)
    feeds = {"x": rng.standard_normal((B, T, D)), "mem": rng.standard_normal((B, S, D)),
             "mem_keep": mem_keep, "w": rng.standard_normal((B, T, D))}
    out, g = _dlc(m, feeds, p)
    ref = torch.nn.TransformerDecoderLayer(D, 2, 16, dropout=0.0, batch_first=True,
                                           norm_first=norm_first).double()
    pre = "transformerdecoderlayer0."
    for attn, name in ((ref.self_attn, "self_attn"), (ref.multihead_attn, "cross_attn")):
        _copy(attn.in_proj_weight, np.concatenate([p[f"{pre}{name}.{n}_proj.W"].T for n in "qkv"]))
        _copy(attn.in_proj_bias, np.concatenate([p[f"{pre}{name}.{n}_proj.b"] for n in "qkv"]))
        _copy(attn.out_proj.weight, p[f"{pre}{name}.out_proj.W"].T)
        _copy(attn.out_proj.bias, p[f"{pre}{name}.out_proj.b"])
    for lin in ("linear1", "linear2"):
        _copy(getattr(ref, lin).weight, p[f"{pre}{lin}.W"].T)
        _copy(getattr(ref, lin).bias, p[f"{pre}{lin}.b"])
    for norm in ("norm1", "norm2", "norm3"):
        _copy(getattr(ref, norm).weight, p[f"{pre}{norm}.gamma"])
        _copy(getattr(ref, norm).bias, p[f"{pre}{norm}.beta"])
    x = _t(feeds["x"]).requires_grad_()
    mem = _t(feeds["mem"]).requires_grad_()
    causal_drop = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    y = ref(x, mem, tgt_mask=causal_drop, memory_key_padding_mask=torch.tensor(~mem_keep))
    (y * _t(feeds["w"])).sum().backward()
    grads = m.gradients("L", feeds, p, wrt=["mem"], dtype="f64")
    errs = {"y": _maxerr(y, out["y"]), "dx": _maxerr(x.grad, g["x"]),
            "dmem": _maxerr(mem.grad, grads["mem"]),
            "dcross_q.W": _maxerr(ref.multihead_attn.in_proj_weight.grad[:D].T,
                                  g[pre + "cross_attn.q_proj.W"]),
            "dnorm3.gamma": _maxerr(ref.norm3.weight.grad, g[pre + "norm3.gamma"])}
    _check(errs)
