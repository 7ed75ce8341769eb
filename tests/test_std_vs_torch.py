"""The standard library's pieces against PyTorch (issue 14): batch norm with its running
statistics, dropout, every activation of `specs/std/activations.dl`, `hinge` and `nll`,
and SVRG's full gradient and its speed on least squares.

References are torch modules / torch.nn.functional (or a closed form where torch has no
such function); nothing is compared with numbers written down here."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compiler import api
from compiler.commands.train import run_training
from compiler.training import checkpoint, datasets

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parents[1]


def _train_step_prog(m):
    """The training-mode forward with the state updates as `new:<name>` results."""
    tr = m.train_graph
    res = {k: tr.outputs[k] for k in tr.outputs}
    res.update({"new:" + tr.node(n).attrs["name"]: v for n, v in tr.updates.items()})
    return m.lower(res, tr, dtype="f64")


# --------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("kind,shape", [("BatchNorm", (5, 3)), ("BatchNorm2d", (4, 3, 5, 2))])
def test_batch_norm_matches_torch_with_running_statistics(kind, shape):
    dims = "B, 3" if len(shape) == 2 else "B, 3, H, W"
    m = api.load(text=f"model M() {{\n  input x: f32[{dims}]\n  output y = {kind}(momentum = 0.2)(x)\n}}\n")
    prefix = kind.lower() + "0."
    ref = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(3, momentum=0.2).double()
    rng = np.random.default_rng(0)
    values = m.init_params(0)
    # non-trivial affine parameters, copied into torch
    values[prefix + "gamma"] = rng.uniform(0.5, 1.5, 3)
    values[prefix + "beta"] = rng.normal(size=3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(values[prefix + "gamma"]))
        ref.bias.copy_(torch.tensor(values[prefix + "beta"]))
    prog = _train_step_prog(m)
    ref.train()
    for step in range(4):  # several steps: the running averages compound
        x = rng.normal(2.0, 3.0, shape)  # mean/var far from the initial 0/1
        out = prog({**values, "x": x})
        want = ref(torch.tensor(x)).detach().numpy()
        # float64 on both sides: only round-off separates them
        np.testing.assert_allclose(out["y"], want, rtol=1e-10, atol=1e-10)
        for s in ("running_mean", "running_var"):
            values[prefix + s] = np.asarray(out["new:" + prefix + s])
            np.testing.assert_allclose(values[prefix + s], getattr(ref, s).numpy(), rtol=1e-10, atol=1e-12)
    # evaluation uses the running statistics (the unbiased variance, as torch)
    ref.eval()
    x = rng.normal(size=shape)
    got = m.run({"x": x}, values, dtype="f64")["y"]
    np.testing.assert_allclose(got, ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_rate_scaling_and_eval_identity(p):
    m = api.load(text=f"model M() {{\n  input x: f32[B, D]\n  output y = x |> Dropout({p})\n}}\n")
    x = np.ones((200, 250), np.float32)
    y = m.run({"x": x}, {}, training=True, seed=3, step=0)["y"]
    zeros = float(np.mean(y == 0))
    # 50 000 Bernoulli(p) draws: the standard error is sqrt(p(1-p)/N) <= 0.0023; allow 5 of them
    assert abs(zeros - p) < 5 * np.sqrt(p * (1 - p) / x.size), zeros
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)  # inverted dropout, float32
    # fresh noise each step, same noise for the same (seed, step)
    assert not np.array_equal(y, m.run({"x": x}, {}, training=True, seed=3, step=1)["y"])
    np.testing.assert_array_equal(y, m.run({"x": x}, {}, training=True, seed=3, step=0)["y"])
    xe = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(m.run({"x": xe}, {})["y"], xe)  # identity in evaluation


# --------------------------------------------------------------------------- activations

ACTIVATIONS = {
    "identity_act(x)": lambda t: t,
    "leaky_relu(x)": lambda t: F.leaky_relu(t, 0.01),
    "leaky_relu(x, 0.2)": lambda t: F.leaky_relu(t, 0.2),
    "elu(x)": F.elu,
    "elu(x, 0.7)": lambda t: F.elu(t, 0.7),
    "silu(x)": F.silu,
    "gelu(x)": F.gelu,
    "gelu_tanh(x)": lambda t: F.gelu(t, approximate="tanh"),
    "hard_tanh(x)": F.hardtanh,
    "softsign(x)": F.softsign,
    "log_sigmoid(x)": F.logsigmoid,
    "step(x)": lambda t: torch.where(t >= 0, 1.0, -1.0).double(),
}


def test_every_std_activation_is_listed():
    text = (ROOT / "specs" / "std" / "activations.dl").read_text()
    defined = {line.split()[1].split("(")[0] for line in text.splitlines() if line.startswith("fn ")}
    assert defined == {k.split("(")[0] for k in ACTIVATIONS}


@pytest.mark.parametrize("expr", list(ACTIVATIONS))
def test_activation_matches_torch(expr):
    m = api.load(text=f"model M() {{\n  input x: f32[N]\n  output y = {expr}\n  loss l = sum({expr} * x)\n}}\n")
    # away from the kinks (0, +-1) so the derivative is defined on both sides
    x = np.random.default_rng(1).uniform(-3, 3, 64)
    x = x[np.min(np.abs(x[:, None] - np.array([-1.0, 0.0, 1.0])), axis=1) > 1e-3]
    t = torch.tensor(x, requires_grad=True)
    want = ACTIVATIONS[expr](t)
    (want * t).sum().backward()
    got = m.run({"x": x}, {}, dtype="f64")["y"]
    # float64: round-off (gelu's erf and exp differ in the last bits between libraries)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = m.gradients("l", {"x": x}, {}, wrt=["x"], dtype="f64")["x"]
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- losses


def test_hinge_and_nll_match_torch():
    rng = np.random.default_rng(2)
    s, y = rng.normal(size=16), rng.choice([-1.0, 1.0], 16)
    m = api.load(text="model M() {\n  input s: f32[N]\n  input y: f32[N]\n  loss l = hinge(s, y)\n}\n")
    got = m.run({"s": s, "y": y}, {}, dtype="f64")["l"]
    # binary hinge as torch's multi-class margin loss on scores [-s/2, s/2]: each sample's
    # loss is max(0, 1 - y s) / 2 (the mean over C = 2 classes)
    scores = torch.tensor(np.stack([-s / 2, s / 2], 1))
    want = 2 * F.multi_margin_loss(scores, torch.tensor((y > 0).astype(np.int64)))
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)

    logits = rng.normal(size=(10, 4))
    labels = rng.integers(0, 4, 10)
    m = api.load(text="model M() {\n  input z: f32[N, 4]\n  input y: i64[N]\n  loss l = nll(log_softmax(z), y)\n}\n")
    got = m.run({"z": logits, "y": labels}, {}, dtype="f64")["l"]
    want = F.nll_loss(F.log_softmax(torch.tensor(logits), -1), torch.tensor(labels))
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


# --------------------------------------------------------------------------- SVRG

LSQ = (ROOT / "specs" / "linear_regression.dl").read_text()
LSQ = LSQ[:LSQ.index("train ")]


def _train(tmp_path, name, optimizer, epochs):
    spec = tmp_path / f"{name}.dl"
    spec.write_text(LSQ + f"train LinearRegression on linreg(n = 400, noise = 0.5) {{\n  batch 8\n"
                          f"  epochs {epochs}\n  optimizer {optimizer}\n}}\n")
    args = SimpleNamespace(seed=0, out=str(tmp_path / name), quiet=True, json=True, backend="numpy",
                           device="cpu", resume=False, epochs=None, steps=None)
    code, payload = run_training(api.load(spec), args)
    assert code == 0, payload
    tensors, _ = checkpoint.load(tmp_path / name / "checkpoint.safetensors")
    return checkpoint.namespace(tensors, checkpoint.TRAIN)


def _lsq(tmp_path):
    part = datasets.load("linreg", n=400, noise=0.5).split((0.8, 0.1, 0.1))[0]
    return part.x.astype(np.float64), part.y.astype(np.float64)


def test_svrg_full_gradient_is_the_full_batch_gradient_at_the_snapshot(tmp_path):
    t = _train(tmp_path, "svrg", "svrg(lr = 0.05)", 3)
    x, y = _lsq(tmp_path)
    w, b = t["snapshot:w"].astype(np.float64), t["snapshot:b"].astype(np.float64)
    r = x @ w + b - y
    # d/dw mean((x w + b - y)^2) over the whole train part, in closed form
    np.testing.assert_allclose(t["opt.w.mu"], 2 * x.T @ r / len(y), rtol=1e-4, atol=1e-5)  # float32 sums
    np.testing.assert_allclose(t["opt.b.mu"], 2 * r.mean(), rtol=1e-4, atol=1e-5)
    assert not np.array_equal(t["snapshot:w"], t["w"])  # a snapshot, not the current iterate


def test_svrg_converges_faster_than_sgd_on_least_squares(tmp_path):
    x, y = _lsq(tmp_path)
    xb = np.c_[x, np.ones(len(y))]
    opt = np.linalg.lstsq(xb, y, rcond=None)[0]

    def excess(t):  # distance of the final iterate to the least-squares solution
        return float(np.linalg.norm(np.r_[t["w"], t["b"]] - opt))

    sgd = excess(_train(tmp_path, "sgd", "sgd(lr = 0.05)", 8))
    svrg = excess(_train(tmp_path, "svrg", "svrg(lr = 0.05)", 8))
    # constant-step SGD stalls at a noise floor set by the minibatch gradient noise;
    # SVRG's variance-reduced steps converge linearly to the optimum
    assert svrg < 0.1 * sgd, (svrg, sgd)
