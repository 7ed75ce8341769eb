"""The ONNX peepholes (backends/onnx/peephole.py): a 2-D matmul plus a bias broadcast
over rows lowers to one ONNX ``Gemm``, operand transposes fold into transA/transB; an
Add read only by a LayerNormalization is a ``Sum`` (onnxruntime keeps it unfused).

Expected node counts are written from the specs' structure (three Dense layers are
three Gemms), and every rewritten model is checked against the NumPy backend and
against the same graph lowered without the rewrite (``peephole=False``), in float64
so that the only difference allowed is summation order (1e-12 relative: products of
<= 256 terms of size ~1, a few hundred ulps of 2.2e-16 at most).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import backends.onnx as bo
from compiler import api
from compiler.core.ir import Graph
from compiler.transform.passes import optimize

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-12, atol=1e-12)


def ops(model) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def run(model, feeds):
    return bo.Program(model, threads=1)(feeds)


def src(g, kind, name, shape, dtype="f32"):
    return g.add(kind, (), {"name": name, "dtype": dtype, "shape": tuple(shape)})


def both(g, res, feeds, **kw):
    """(fused model, unfused model, fused outputs), both checked and in agreement."""
    fused = bo.lower(g, res, "f64", **kw)
    plain = bo.lower(g, res, "f64", peephole=False, **kw)
    for m in (fused, plain):
        bo.check(m)
    a, b = run(fused, feeds), run(plain, feeds)
    for k in res:
        np.testing.assert_allclose(a[k], b[k], **TOL, err_msg=k)
    ref = bo.reference(fused, feeds)  # onnx's own evaluator reads the Gemm the same way
    for k in res:
        np.testing.assert_allclose(ref[k], a[k], **TOL, err_msg=f"reference {k}")
    return fused, plain, a


def test_mlp_inference_is_three_gemms_and_agrees_with_numpy():
    m = api.load(ROOT / "specs" / "mlp.dl")
    params = m.init_params(0)
    og, res = optimize(m.graph, {"probs": m.graph.outputs["probs"]})
    x = np.random.default_rng(0).normal(size=(7, 64))
    fused, plain, out = both(og, res, {"x": x}, params_as="initializers", param_values=params)
    # Dense(hidden, relu) |> Dense(hidden, relu) |> Dense(classes), then softmax
    assert ops(fused) == Counter({"Gemm": 3, "Relu": 2, "Softmax": 1})
    assert ops(plain) == Counter({"MatMul": 3, "Add": 3, "Relu": 2, "Softmax": 1})
    assert len(fused.graph.node) < len(plain.graph.node)
    # no value_info is left for the vanished MatMul products
    made = {o for n in fused.graph.node for o in n.output}
    assert {v.name for v in fused.graph.value_info} <= made
    want = m.run({"x": x}, params, backend="numpy", dtype="f64", outputs=["probs"])["probs"]
    np.testing.assert_allclose(out["probs"], want, **TOL)


def test_train_gradients_fold_the_transposes():
    m = api.load(ROOT / "specs" / "mlp.dl", hparams={"hidden": 16})
    g, res = m.gradient_results("ce")
    og, ores = optimize(g, res)
    params = m.init_params(0)
    rng = np.random.default_rng(1)
    data = {"x": rng.normal(size=(9, 64)), "y": rng.integers(0, 10, 9)}
    feeds = {**data, **params}
    fused, plain, out = both(og, ores, feeds)
    # dX = dY Wᵀ and dW = Xᵀ dY: Transpose -> MatMul pairs become Gemm(transB)/(transA)
    trans = Counter(next((a.name for a in n.attribute if a.name.startswith("trans")), "C")
                    for n in fused.graph.node if n.op_type == "Gemm")
    assert trans["transA"] == 3 and trans["transB"] == 2, trans
    assert ops(plain)["Transpose"] > 0 and ops(fused)["Transpose"] == 0
    assert ops(fused)["MatMul"] == 0
    want = m.gradients("ce", data, params, backend="numpy", dtype="f64")
    for k, v in want.items():
        key = k if k in out else f"grad:{k}"
        np.testing.assert_allclose(out[key], v, rtol=1e-10, atol=1e-12, err_msg=k)


def _affine(bias_shape, *, x_shape=("B", 3), extra=None):
    g = Graph()
    x = src(g, "input", "x", x_shape)
    w = src(g, "param", "W", (3, 4))
    b = src(g, "input", "b", bias_shape)
    g.dim_sources["B"] = (x, 0)
    h = g.op("matmul", x, w)
    res = {"y": g.op("add", h, b)}
    if extra:
        res.update(extra(g, h))
    return g, res


@pytest.mark.parametrize("bias", [(4,), (1, 4), ("B", 1), ("B", 4), ()])
def test_every_bias_that_broadcasts_over_the_product_is_gemms_c(bias):
    g, res = _affine(bias)
    rng = np.random.default_rng(2)
    n = 5
    shape = tuple(n if d == "B" else d for d in bias)
    feeds = {"x": rng.normal(size=(n, 3)), "W": rng.normal(size=(3, 4)),
             "b": rng.normal(size=shape)}
    fused, _, out = both(g, res, feeds)
    assert ops(fused) == Counter({"Gemm": 1})
    np.testing.assert_allclose(out["y"], feeds["x"] @ feeds["W"] + feeds["b"], **TOL)


def test_a_product_read_twice_keeps_its_add():
    # h feeds the bias Add and a second output: the Add cannot absorb it
    g, res = _affine((4,), extra=lambda g, h: {"z": g.op("mul", h, h)})
    rng = np.random.default_rng(3)
    feeds = {"x": rng.normal(size=(5, 3)), "W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    fused, _, out = both(g, res, feeds)
    assert ops(fused)["Gemm"] == 0 and ops(fused)["MatMul"] == 1 and ops(fused)["Add"] == 1
    h = feeds["x"] @ feeds["W"]
    np.testing.assert_allclose(out["z"], h * h, **TOL)


def test_a_product_that_is_a_result_is_not_fused():
    g, res = _affine((4,), extra=lambda g, h: {"h": h})
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(5, 3)), "W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    fused, _, out = both(g, res, feeds)
    assert ops(fused)["Gemm"] == 0
    np.testing.assert_allclose(out["h"], feeds["x"] @ feeds["W"], **TOL)


def test_batched_matmul_stays_matmul():
    # Gemm is 2-D only: x [B, T, 3] @ W [3, 4] + b keeps MatMul + Add
    g, res = _affine((4,), x_shape=("B", 2, 3))
    rng = np.random.default_rng(5)
    feeds = {"x": rng.normal(size=(5, 2, 3)), "W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    fused, _, out = both(g, res, feeds)
    assert ops(fused)["Gemm"] == 0 and ops(fused)["MatMul"] == 1
    np.testing.assert_allclose(out["y"], feeds["x"] @ feeds["W"] + feeds["b"], **TOL)


def test_a_transposed_weight_shared_with_another_reader_stays():
    # Wᵀ is both Gemm's operand (folded: transB) and a result: its Transpose stays
    g = Graph()
    x = src(g, "input", "x", ("B", 4))
    w = src(g, "param", "W", (3, 4))
    g.dim_sources["B"] = (x, 0)
    wt = g.op("transpose", w)
    res = {"y": g.op("matmul", x, wt), "wt": wt}
    rng = np.random.default_rng(6)
    feeds = {"x": rng.normal(size=(5, 4)), "W": rng.normal(size=(3, 4))}
    fused, _, out = both(g, res, feeds)
    gemm = [n for n in fused.graph.node if n.op_type == "Gemm"]
    assert len(gemm) == 1 and list(gemm[0].input) == ["x", "W"]
    assert [(a.name, a.i) for a in gemm[0].attribute] == [("transB", 1)]
    assert ops(fused)["Transpose"] == 1
    np.testing.assert_allclose(out["y"], feeds["x"] @ feeds["W"].T, **TOL)


def test_a_scan_body_gets_gemms_too():
    # h' = tanh(h U + x_t W): inside the Loop body the first product takes the second
    # as its C (the Add of two products), and the numbers are the recurrence's
    body = Graph("cell")
    h = src(body, "input", "h", ("B", 4))
    xt = src(body, "input", "x_t", ("B", 3))
    u = src(body, "input", "U", (4, 4))
    w = src(body, "input", "W", (3, 4))
    h2 = body.op("tanh", body.op("add", body.op("matmul", h, u), body.op("matmul", xt, w)))
    body.meta["results"] = [h2]
    g = Graph()
    x = src(g, "input", "x", ("T", "B", 3))
    h0 = src(g, "input", "h0", ("B", 4))
    U, W = src(g, "param", "U", (4, 4)), src(g, "param", "W", (3, 4))
    g.dim_sources.update(T=(x, 0), B=(x, 1))
    s = g.add("scan", (h0, x, U, W), dict(body=body, n_carry=1, n_x=0 + 1, n_const=2, axis=0,
                                          reverse=False, length="T"))
    res = {"h": g.op("tuple_get", s, index=0)}
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(size=(6, 2, 3)), "h0": rng.normal(size=(2, 4)),
             "U": rng.normal(size=(4, 4)) * 0.5, "W": rng.normal(size=(3, 4))}
    fused, _, out = both(g, res, feeds)
    loop = next(n for n in fused.graph.node if n.op_type == "Loop")
    inner = Counter(n.op_type for n in onnx.helper.get_attribute_value(loop.attribute[0]).node)
    assert inner["Gemm"] == 1 and inner["Add"] == 0, inner
    hh = feeds["h0"]
    for t in range(6):
        hh = np.tanh(hh @ feeds["U"] + feeds["x"][t] @ feeds["W"])
    np.testing.assert_allclose(out["h"], hh, **TOL)


# ---- Add -> LayerNormalization as Sum (onnxruntime's slow SkipLayerNormalization) ------

def test_residuals_into_layer_norm_are_sums_and_ort_keeps_layer_norm(tmp_path):
    import onnxruntime as ort
    m = api.load(ROOT / "specs" / "transformer.dl")
    params = m.init_params(0)
    og, res = optimize(m.graph, {"probs": m.graph.outputs["probs"]})
    x = np.random.default_rng(8).integers(0, 10, (3, 12))
    x[2] = 0  # an all-blank sequence: every key masked, the where's -1e9 branch
    fused, plain, out = both(og, res, {"x": x}, params_as="initializers", param_values=params)
    # post-norm blocks, 2 layers: LN(x + SA(x)) and LN(x + FF(x)) each: 4 residual sums
    assert ops(fused)["Sum"] == 4 and ops(fused)["LayerNormalization"] == 4
    assert ops(plain)["Sum"] == 0
    made = {o: n for n in fused.graph.node for o in n.output}
    for n in fused.graph.node:
        if n.op_type == "LayerNormalization":
            assert made[n.input[0]].op_type == "Sum"
    # what onnxruntime makes of each with its default (all) optimisations
    def optimized(model, name):
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / name)
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return ops(onnx.load(tmp_path / name))
    # (float32: SkipLayerNormalization has no double kernel, so f64 models never fuse)
    kw = dict(params_as="initializers", param_values=params)
    got = optimized(bo.lower(og, res, "f32", **kw), "fused.onnx")
    was = optimized(bo.lower(og, res, "f32", peephole=False, **kw), "plain.onnx")
    assert got["SkipLayerNormalization"] == 0 and got["LayerNormalization"] == 4, got
    assert was["SkipLayerNormalization"] == 4, was  # the fusion the Sum avoids (can fail
    # when onnxruntime stops fusing: then the rewrite is no longer needed)
    want = m.run({"x": x}, params, backend="numpy", dtype="f64", outputs=["probs"])["probs"]
    np.testing.assert_allclose(out["probs"], want, rtol=1e-10, atol=1e-12)


# ---- identity Reshape / Cast dropped --------------------------------------------------

def test_mlp_losses_lose_the_identity_reshape_and_cast():
    # cross_entropy flattens logits [B, 10] to [-1, 10] and labels to [-1], and casts
    # the i64 labels to i64: all identities here, dropped; ce and acc as NumPy has them
    m = api.load(ROOT / "specs" / "mlp.dl")
    params = m.init_params(0)
    og, res = optimize(m.graph, m.inference_results(None, with_losses=True))
    rng = np.random.default_rng(9)
    feeds = {"x": rng.normal(size=(7, 64)), "y": rng.integers(0, 10, 7)}
    fused, plain, out = both(og, res, feeds, params_as="initializers", param_values=params)
    made = {o: n for n in fused.graph.node for o in n.output}
    sce = next(n for n in fused.graph.node if n.op_type == "SoftmaxCrossEntropyLoss")
    assert made[sce.input[0]].op_type == "Gemm"  # the logits themselves, no Reshape
    assert not any(n.op_type == "Cast" and n.input[0] == "y" for n in fused.graph.node)
    assert any(n.op_type == "Cast" and n.input[0] == "y" for n in plain.graph.node)
    assert ops(fused)["Reshape"] < ops(plain)["Reshape"]
    # and their target shapes are gone with them (no initializer nothing reads)
    read = {x for n in fused.graph.node for x in n.input}
    assert all(t.name in read for t in fused.graph.initializer)
    want = m.run(feeds, params, backend="numpy", dtype="f64", outputs=list(res))
    for k in res:
        np.testing.assert_allclose(out[k], want[k], **TOL, err_msg=k)


@pytest.mark.parametrize("shape,dropped", [(("B", 6), True), ((2, "B", 3), False)])
def test_a_reshape_is_dropped_only_when_it_is_the_identity(shape, dropped):
    g = Graph()
    x = src(g, "input", "x", ("B", 6))
    g.dim_sources["B"] = (x, 0)
    y = g.op("reshape", g.op("tanh", x), shape=shape)
    res = {"y": g.op("exp", y)}
    x_ = np.random.default_rng(10).normal(size=(4, 6))
    fused, plain, out = both(g, res, {"x": x_})
    assert ops(plain)["Reshape"] == 1
    assert ops(fused)["Reshape"] == (0 if dropped else 1)
    np.testing.assert_allclose(out["y"], np.exp(np.tanh(x_)).reshape(
        tuple(4 if d == "B" else d for d in shape)), **TOL)
