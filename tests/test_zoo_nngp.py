"""specs/nngp.dl: the NNGP kernel of a deep ReLU net (arc-cosine recursion, notes 6.3)
against the Monte-Carlo kernel of wide random networks, and the GP marginal
likelihood that trains σ_w, σ_b and the noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import api

SPEC = Path(__file__).resolve().parent.parent / "specs" / "nngp.dl"
BACKENDS = ("numpy", "torch", "onnx")
PARAMS = {"log_sw": np.array(0.3), "log_sb": np.array(-1.0), "log_sn": np.array(-0.5)}


def _data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, np.sin(x @ np.array([1.0, -0.5, 0.3])) + 0.1 * rng.standard_normal(n)


def _mc_kernel(x, sw, sb, depth, width, samples, rng):
    """Empirical output covariance of `samples` random ReLU nets of `width` units a
    layer (weights N(0, σ_w²/fan_in), biases N(0, σ_b²)), averaged over the width of
    the last pre-activation too: E[f(x) f(x')] over width · samples draws."""
    acc = np.zeros((len(x), len(x)))
    for _ in range(samples):
        h = x
        for layer in range(depth + 1):
            fan = h.shape[1]
            z = h @ rng.standard_normal((fan, width)) * sw / np.sqrt(fan) + sb * rng.standard_normal(width)
            h = np.maximum(z, 0)
        acc += z @ z.T / width
    return acc / samples


def test_kernel_matches_wide_random_relu_networks():
    x, y = _data()
    depth = 3
    m = api.load(SPEC, hparams={"depth": depth})
    outs = {be: m.run({"x": x, "y": y}, PARAMS, backend=be, dtype="f64") for be in BACKENDS}
    k = outs["numpy"]["kernel"]
    for be, o in outs.items():   # float64 round-off of the same recursion
        np.testing.assert_allclose(o["kernel"], k, rtol=1e-10, err_msg=be)
    sw, sb = np.exp(0.3), np.exp(-1.0)
    width, samples = 1024, 160
    mc = _mc_kernel(x, sw, sb, depth, width, samples, np.random.default_rng(1))
    # Monte-Carlo error ~ 1/√(width · samples) = 1/√(1.6e5) = 0.25% times the spread of
    # one product (a few times the kernel, and every layer of one net shares its draws),
    # plus an O(1/width) finite-width bias. Measured over seeds: max error over the
    # 78 entries 0.6-1.6% of the largest entry (2-3.5% with 40 nets: it shrinks as
    # 1/√samples), so 4% is a loose bound that a wrong recursion still fails.
    err = np.abs(mc - k).max() / np.abs(k).max()
    assert err < 0.04, err
    # ... and it is not trivially close: a depth-2 or depth-4 kernel differs by more
    for other in (2, 4):
        k2 = api.load(SPEC, hparams={"depth": other}).run({"x": x, "y": y}, PARAMS, dtype="f64")["kernel"]
        assert np.abs(mc - k2).max() / np.abs(k).max() > 2 * err, other
    # a ReLU-net kernel is positive semi-definite
    assert np.linalg.eigvalsh(k).min() > -1e-10


def test_marginal_likelihood_matches_numpy_and_training_fits_the_hyperparameters():
    x, y = _data(n=20, seed=2)
    m = api.load(SPEC)
    o = m.run({"x": x, "y": y}, PARAMS, dtype="f64")
    k = o["kernel"]
    c = k + np.exp(-1.0) * np.eye(20)
    nll = 0.5 * y @ np.linalg.solve(c, y) + 0.5 * np.linalg.slogdet(c)[1] + 10 * np.log(2 * np.pi)
    np.testing.assert_allclose(o["nll"], nll, rtol=1e-10)
    np.testing.assert_allclose(o["smoothed"], k @ np.linalg.solve(c, y), atol=1e-9)
    # gradient descent on log σ_w, log σ_b, log σ_n (step 0.01: 0.02 already oscillates)
    # lowers the negative log marginal likelihood (18.9 -> about 12 nats) and moves the
    # noise from e^-0.5 = 0.61 toward the true 0.1
    p = {k_: v.copy() for k_, v in PARAMS.items()}
    for _ in range(40):
        g = m.gradients("nll", {"x": x, "y": y}, p, dtype="f64")
        p = {k_: v - 0.01 * g[k_] for k_, v in p.items()}
    end = float(m.run({"x": x, "y": y}, p, dtype="f64")["nll"])
    assert end < float(o["nll"]) - 3.0, (float(o["nll"]), end)
    assert 0.05 < np.exp(p["log_sn"]) < 0.4, np.exp(p["log_sn"])
