"""The example specs against the same models written by hand in plain PyTorch.

Weights are copied from dlc's initialisation into float64 torch modules; dlc's
outputs and its *symbolic* gradients (NumPy backend, float64) must equal torch's
forward and autograd to 1e-10 (both are exact float64 computations of the same
sums; the slack covers summation order only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compiler import api

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOL = 1e-10


def _data(rng, n=6, d=64, classes=10):
    return {"x": rng.standard_normal((n, d)), "y": rng.integers(0, classes, n)}


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def _check(m, loss_name, data, params, torch_loss, torch_params):
    out = m.run(data, params, dtype="f64")
    grads = m.gradients(loss_name, data, params, dtype="f64")
    ref = torch_loss()
    ref.backward()
    assert abs(out[loss_name] - ref.item()) <= TOL * max(1.0, abs(ref.item()))
    for name, p in torch_params.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=TOL, err_msg=name)


def _params(m, seed=0):
    rng = np.random.default_rng(seed + 1)
    return {k: v.astype(np.float64) + 0.05 * rng.standard_normal(v.shape)
            for k, v in m.init_params(seed).items()}


def test_mlp_matches_plain_pytorch():
    m = api.load(SPECS / "mlp.dl", hparams={"hidden": 16})
    params = _params(m)
    data = _data(np.random.default_rng(0))
    tp = {k: _t(v) for k, v in params.items()}
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])

    def loss():
        h = F.relu(x @ tp["dense0.W"] + tp["dense0.b"])
        h = F.relu(h @ tp["dense1.W"] + tp["dense1.b"])
        logits = h @ tp["dense2.W"] + tp["dense2.b"]
        return F.cross_entropy(logits, y)
    _check(m, "ce", data, params, loss, tp)


def test_residual_mlp_matches_plain_pytorch():
    m = api.load(SPECS / "residual_mlp.dl", hparams={"width": 8, "blocks": 2})
    params = _params(m)
    data = _data(np.random.default_rng(1))
    tp = {k: _t(v) for k, v in params.items()}
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])

    def loss():
        h = F.relu(x @ tp["dense0.W"] + tp["dense0.b"])
        for i in range(2):  # the notes' F(x) = x + (relu(Wx + b) - relu(0))
            h = h + (F.relu(h @ tp[f"residual{i}.W"] + tp[f"residual{i}.b"]) - F.relu(torch.zeros(())))
        logits = h @ tp["dense1.W"] + tp["dense1.b"]
        return F.cross_entropy(logits, y)
    _check(m, "ce", data, params, loss, tp)


def test_linear_regression_matches_plain_pytorch():
    m = api.load(SPECS / "linear_regression.dl")
    params = _params(m)
    rng = np.random.default_rng(2)
    data = {"x": rng.standard_normal((7, 4)), "y": rng.standard_normal(7)}
    tp = {k: _t(v) for k, v in params.items()}
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])
    _check(m, "mse", data, params, lambda: F.mse_loss(x @ tp["w"] + tp["b"], y), tp)


def test_logistic_regression_matches_plain_pytorch():
    m = api.load(SPECS / "logistic_regression.dl")
    params = _params(m)
    rng = np.random.default_rng(3)
    data = {"x": rng.standard_normal((9, 30)), "y": rng.integers(0, 2, 9)}
    tp = {k: _t(v) for k, v in params.items()}
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"], dtype=torch.float64)
    _check(m, "bce", data, params,
           lambda: F.binary_cross_entropy_with_logits(x @ tp["w"] + tp["b"], y), tp)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_mlp_gradients_agree_across_backends(backend):
    m = api.load(SPECS / "mlp.dl", hparams={"hidden": 16})
    params = _params(m)
    data = _data(np.random.default_rng(4))
    ref = m.gradients("ce", data, params, dtype="f64")
    got = m.gradients("ce", data, params, backend=backend, dtype="f32")
    for k in ref:  # float32 run vs float64 reference: a few float32 ulps of the values
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
