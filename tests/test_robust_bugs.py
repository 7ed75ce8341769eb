"""The seven compiler bugs the differential tester and the bad-input fuzzer found
(issue 18), each pinned by its minimal reproducer, on every backend. References are
plain NumPy / torch autograd computed here, never dlc's lowering."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compiler import api
from compiler.core.types import dim_div

BACKENDS = ["numpy", "torch", "onnx"]


def load(text, **kw):
    return api.load(text=text, **kw)


# ---- 1. dim division that cancels every symbol -----------------------------------------

def test_dim_div_cancelling_symbols_is_the_coefficient():
    assert dim_div("3*B", "B") == 3
    assert dim_div("6*B*T", "2*B*T") == 3
    assert dim_div("B*T", "B") == "T"


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_minus_one_with_cancelling_dims(backend):
    m = load("model M() {\n  input x: f32[B, 3]\n  output y = reshape(x, [B, -1])\n}\n")
    assert m.outputs["y"][1].shape == ("B", 3)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(m.run({"x": x}, {}, backend=backend)["y"], x)


# ---- 2. a nondiff op behind stop_gradient needs no VJP ---------------------------------

@pytest.mark.parametrize("op", ["floor", "ceil", "round", "sign"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nondiff_behind_stop_gradient(op, backend):
    m = load(f"model M() {{\n  param p: [3] ~ normal(1.0)\n"
             f"  loss L = mean({op}(stop_gradient(p)) + p * p)\n}}\n")
    p = np.array([0.3, -1.7, 2.2], np.float32)
    g = m.gradients("L", {}, {"p": p}, backend=backend)["p"]
    np.testing.assert_allclose(g, 2 * p / 3, rtol=1e-6)


def test_nondiff_behind_stop_gradient_inside_grad():
    m = load("model M() {\n  input x: f32[3]\n"
             "  g = grad(sum(floor(stop_gradient(x)) * x + x * x), x)\n  output y = g\n}\n")
    x = np.array([0.5, 1.5, -2.5], np.float32)
    np.testing.assert_allclose(m.run({"x": x}, {})["y"], np.floor(x) + 2 * x, rtol=1e-6)


# ---- 3. onnxruntime's Transpose -> 1-D MatMul fusion -----------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_transpose_then_vector_matmul(backend):
    m = load("model M() {\n  input x: f32[4, 3]\n  param p: [4] ~ normal(1.0)\n"
             "  output y = x.T @ p\n  output z = p @ x\n}\n")
    rng = np.random.default_rng(0)
    x, p = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    out = m.run({"x": x}, {"p": p}, backend=backend)
    np.testing.assert_allclose(out["y"], x.T @ p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["z"], p @ x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_ys_on_axis1_then_vector_matmul(backend):
    m = load("model M() {\n  input x: f32[2, 5]\n  input v: f32[5]\n"
             "  _, ys = scan(fn(h, t) -> (h + t, h * t), x, init = zeros([2]), axis = 1)\n"
             "  output y = ys @ v\n}\n")
    rng = np.random.default_rng(1)
    x, v = rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    h, ys = np.zeros(2, np.float32), []
    for t in range(5):
        ys.append(h * x[:, t])
        h = h + x[:, t]
    ref = np.stack(ys, axis=1).astype(np.float64) @ v.astype(np.float64)
    np.testing.assert_allclose(m.run({"x": x, "v": v}, {}, backend=backend)["y"], ref,
                               rtol=1e-5, atol=1e-6)


# ---- 4. second order through scan --------------------------------------------------------

SCAN2 = """model M() {
  input x: f32[3]
  param w: [3] ~ normal(1.0)
  _, ys = scan(fn(h, x) -> (h * x, h * x), x * w, init = ones([1]))
  g = grad(sum(ys), x)
  loss L = sum(g * g)
}
"""


def _scan2_torch(x, w):
    def f(x):
        h, total = torch.ones(1, dtype=torch.float64), 0
        for t in range(3):
            h = h * (x * w)[t]
            total = total + h.sum()
        return total
    g, = torch.autograd.grad(f(x), x, create_graph=True)
    return (g * g).sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_order_through_scan(backend):
    m = load(SCAN2)
    x, w = np.array([0.5, -1.2, 0.9]), np.array([1.1, 0.7, -0.8])
    got = m.gradients("L", {"x": x}, {"w": w}, backend=backend, dtype="f64")
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    L = _scan2_torch(xt, wt)
    ref, = torch.autograd.grad(L, wt)
    np.testing.assert_allclose(got["L"], L.item(), rtol=1e-10)
    np.testing.assert_allclose(got["w"], ref.numpy(), rtol=1e-8, atol=1e-10)
    # and a central difference of the loss itself (f64: h = 1e-6, error ~1e-9)
    fd = np.zeros(3)
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1e-6
        lp = _scan2_torch(torch.tensor(x, requires_grad=True), torch.tensor(w + e)).item()
        lm = _scan2_torch(torch.tensor(x, requires_grad=True), torch.tensor(w - e)).item()
        fd[i] = (lp - lm) / 2e-6
    np.testing.assert_allclose(got["w"], fd, rtol=1e-5, atol=1e-7)


# ---- 5. ONNX ReduceSum axis for mean(p * x) with p: [1, 1] ------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_of_broadcast_param_gradient(backend):
    m = load("model M() {\n  input x: f32[B]\n  param p: [1, 1] ~ normal(1.0)\n"
             "  loss L = mean(p * x)\n}\n")
    x = np.array([1.0, 2.0, 4.0, -1.0], np.float32)
    g = m.gradients("L", {"x": x}, {"p": np.full((1, 1), 0.5, np.float32)}, backend=backend)
    assert g["p"].shape == (1, 1)
    np.testing.assert_allclose(g["p"], [[x.mean()]], rtol=1e-6)


# ---- 6. empty tensors ----------------------------------------------------------------------

EMPTY = """model M() {
  input x: f32[B, T]
  output m = mean(x)
  output m0 = mean(x, axis = 0)
  output l = logsumexp(x, axis = 0)
  output s = softmax(x, axis = 0)
  output ls = log_softmax(x, axis = 0)
  output r = reshape(x, [B, -1])
  output r1 = reshape(x, [-1])
  output r2 = reshape(x, [T, B])
}
"""


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_empty_tensors(backend, shape):
    m = load(EMPTY)
    x = np.zeros(shape, np.float32)
    out = m.run({"x": x}, {}, backend=backend)
    t = torch.tensor(x)
    assert np.isnan(out["m"])
    np.testing.assert_array_equal(out["m0"], t.mean(0).numpy())  # NaN where the slice is empty
    np.testing.assert_array_equal(out["l"], torch.logsumexp(t, 0).numpy())
    assert out["s"].shape == shape and out["ls"].shape == shape
    assert out["r"].shape == shape and out["r1"].shape == (0,) and out["r2"].shape == shape[::-1]


# ---- 7. x[:, 1:] @ W with a shifted dim -----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_shifted_sequence_matmul(backend):
    m = load("model M() {\n  input x: f32[B, T, 3]\n  param W: [3, 2] ~ normal(1.0)\n"
             "  loss L = mean(x[:, 1:] @ W)\n}\n")
    rng = np.random.default_rng(2)
    x, W = rng.standard_normal((2, 4, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    got = m.gradients("L", {"x": x}, {"W": W}, backend=backend)
    xt, Wt = torch.tensor(x), torch.tensor(W, requires_grad=True)
    L = (xt[:, 1:] @ Wt).mean()
    L.backward()
    np.testing.assert_allclose(got["L"], L.item(), rtol=1e-5)
    np.testing.assert_allclose(got["W"], Wt.grad.numpy(), rtol=1e-5, atol=1e-6)
