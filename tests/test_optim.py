"""Optimizers compiled into train-step graphs vs torch.optim and NumPy references.

One train-step graph per configuration: params, slots, step and lr in; the loss
gradient by `compiler.autodiff.grad`; new params and slots out. Lowered once with the
NumPy backend in float64 and iterated.
"""
from __future__ import annotations

import numpy as np
import pytest

from backends import numpy as npb
from compiler.transform.autodiff import grad as ad_grad
from compiler.core.ir import Graph
from compiler.training.optim import (OPTIMIZERS, apply_l1, clip_by_global_norm, decays, make_optimizer, newton_schulz5, polyak_update, snapshot_gradients)
from compiler.training.schedules import make_schedule
from compiler.core.types import TensorType

torch = pytest.importorskip("torch")

STEPS = 100
SHAPES = {"W1": (3, 5), "b1": (5,), "W2": (5, 2), "b2": (2,)}


def _data():
    r = np.random.default_rng(0)
    X = r.normal(size=(16, 3))
    Y = r.normal(size=(16, 2))
    init = {k: r.normal(size=s) * 0.5 for k, s in SHAPES.items()}
    return X, Y, init


def _inp(g, name, shape):
    return g.add("input", (), {"name": name, "dtype": "f32", "shape": tuple(shape)})


def mlp_loss(g, p, X, Y):
    h = g.op("tanh", g.op("add", g.op("matmul", X, p["W1"]), p["b1"]))
    out = g.op("add", g.op("matmul", h, p["W2"]), p["b2"])
    d = g.op("sub", out, Y)
    return g.op("mean", g.op("mul", d, d), axis=None, keepdims=False)


def torch_loss(p, X, Y):
    h = torch.tanh(X @ p["W1"] + p["b1"])
    return ((h @ p["W2"] + p["b2"] - Y) ** 2).mean()


def build_step(opt, *, schedule=None, base_lr=None, clip=None):
    """The train-step graph of the tiny MLP: feeds p:*, s:*:*, step, lr (or base_lr)."""
    g = Graph("train_step")
    X, Y = _inp(g, "X", (16, 3)), _inp(g, "Y", (16, 2))
    step = _inp(g, "step", ())
    lr_in = _inp(g, "lr", ())
    lr = schedule.build(g, step, lr_in) if schedule else lr_in
    p = {k: g.add("param", (), {"name": k, "dtype": "f32", "shape": s}) for k, s in SHAPES.items()}
    loss = mlp_loss(g, p, X, Y)
    grads = ad_grad(g, loss, list(p.values()))
    if clip is not None:
        grads = clip_by_global_norm(g, grads, clip)
    results = {"loss": loss}
    for (k, s), gr in zip(SHAPES.items(), grads):
        t = TensorType("f32", s)
        slots = {n: _inp(g, f"s:{k}:{n}", s) for n, _ in opt.slots(k, t)}
        new_p, new_s = opt.update(g, p[k], gr, slots, step, lr, decay_mask=decays(k, t))
        assert set(new_s) == set(slots)
        results[f"p:{k}"] = new_p
        results.update({f"s:{k}:{n}": v for n, v in new_s.items()})
    return g, results


def run_ours(opt, n=STEPS, *, lr=None, schedule=None, clip=None):
    X, Y, init = _data()
    g, res = build_step(opt, schedule=schedule, clip=clip)
    prog = npb.lower(g, res, dtype="f64")
    params = dict(init)
    slots = {f"s:{k}:{n}": np.full(s, v) for k, s in SHAPES.items()
             for n, v in opt.slots(k, TensorType("f32", s))}
    traj = []
    for t in range(n):
        out = prog({"X": X, "Y": Y, "step": np.float64(t), "lr": np.float64(lr or opt.hyper["lr"]),
                    **params, **slots})
        params = {k: out[f"p:{k}"] for k in SHAPES}
        slots = {k: out[k] for k in slots}
        traj.append(np.concatenate([v.ravel() for v in params.values()]))
    return np.array(traj)


def run_torch(make_opt, n=STEPS, *, wd=0.0, sched=None, clip=None):
    X, Y, init = _data()
    X, Y = torch.tensor(X), torch.tensor(Y)
    p = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    groups = [{"params": [p["W1"], p["W2"]], "weight_decay": wd},
              {"params": [p["b1"], p["b2"]], "weight_decay": 0.0}]
    o = make_opt(groups)
    s = sched(o) if sched else None
    traj = []
    for _ in range(n):
        o.zero_grad()
        torch_loss(p, X, Y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(p.values()), clip)
        o.step()
        if s:
            s.step()
        traj.append(np.concatenate([v.detach().numpy().ravel() for v in p.values()]))
    return np.array(traj)


O = torch.optim
TORCH_CASES = [
    ("sgd", {"lr": 0.1}, 0.0, lambda gr: O.SGD(gr, lr=0.1)),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, 0.0, lambda gr: O.SGD(gr, lr=0.05, momentum=0.9)),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}, 0.0,
     lambda gr: O.SGD(gr, lr=0.05, momentum=0.8, dampening=0.3)),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, 0.0,
     lambda gr: O.SGD(gr, lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}, 0.05, lambda gr: O.SGD(gr, lr=0.1)),
    ("nesterov", {"lr": 0.05, "momentum": 0.8}, 0.0,
     lambda gr: O.SGD(gr, lr=0.05, momentum=0.8, nesterov=True)),
    ("momentum", {"lr": 0.05, "beta": 0.9}, 0.0, lambda gr: O.SGD(gr, lr=0.05, momentum=0.9)),
    ("adagrad", {"lr": 0.1}, 0.0, lambda gr: O.Adagrad(gr, lr=0.1)),
    ("adagrad", {"lr": 0.1, "initial_accumulator": 0.2, "eps": 1e-6, "weight_decay": 0.01}, 0.01,
     lambda gr: O.Adagrad(gr, lr=0.1, initial_accumulator_value=0.2, eps=1e-6)),
    ("rmsprop", {"lr": 0.01}, 0.0, lambda gr: O.RMSprop(gr, lr=0.01)),
    ("rmsprop", {"lr": 0.005, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.02},
     0.02, lambda gr: O.RMSprop(gr, lr=0.005, alpha=0.9, momentum=0.5, centered=True)),
    ("adam", {"lr": 0.01}, 0.0, lambda gr: O.Adam(gr, lr=0.01)),
    ("adam", {"lr": 0.01, "amsgrad": True, "beta2": 0.99}, 0.0,
     lambda gr: O.Adam(gr, lr=0.01, amsgrad=True, betas=(0.9, 0.99))),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}, 0.1, lambda gr: O.Adam(gr, lr=0.01)),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}, 0.1, lambda gr: O.AdamW(gr, lr=0.01)),
    ("adamw", {"lr": 0.01, "beta1": 0.8, "eps": 1e-6, "amsgrad": True}, 0.01,
     lambda gr: O.AdamW(gr, lr=0.01, betas=(0.8, 0.999), eps=1e-6, amsgrad=True)),
]


@pytest.mark.parametrize("name,kw,wd,mk", TORCH_CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(TORCH_CASES)])
def test_matches_torch(name, kw, wd, mk):
    ours = run_ours(make_optimizer(name, kw))
    ref = run_torch(mk, wd=wd)
    assert np.abs(ours[-1] - ours[0]).max() > 1e-3  # it moved
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_schedule_and_clipping_match_torch():
    sched = make_schedule("cosine", {"total": 60}, total_steps=None)
    ours = run_ours(make_optimizer("adam", {"lr": 0.02}), 60, schedule=sched, clip=0.3)
    ref = run_torch(lambda gr: O.Adam(gr, lr=0.02), 60, clip=0.3,
                    sched=lambda o: O.lr_scheduler.CosineAnnealingLR(o, T_max=60))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


# ---- single-tensor updates vs NumPy equations -------------------------------------------------

def one_param_program(opt, shape, *, decay_mask=True, name="w"):
    g = Graph("upd")
    t = TensorType("f32", shape)
    p, gr = _inp(g, "p", shape), _inp(g, "g", shape)
    step, lr = _inp(g, "step", ()), _inp(g, "lr", ())
    slots = {n: _inp(g, f"s:{n}", shape) for n, _ in opt.slots(name, t)}
    slots.update({n: _inp(g, f"x:{n}", shape) for n in opt.inputs(name, t)})
    new_p, new_s = opt.update(g, p, gr, slots, step, lr, decay_mask=decay_mask)
    res = {"p": new_p, **{f"s:{n}": v for n, v in new_s.items()}}
    return npb.lower(g, res, dtype="f64"), g, res


def iterate(opt, shape, grads, lrs, p0, *, extra=None, decay_mask=True):
    prog, _, _ = one_param_program(opt, shape, decay_mask=decay_mask)
    t = TensorType("f32", shape)
    slots = {f"s:{n}": np.full(shape, v) for n, v in opt.slots("w", t)}
    p, traj = p0, []
    for i, (gr, lr) in enumerate(zip(grads, lrs)):
        feeds = {"p": p, "g": gr, "step": np.float64(i), "lr": np.float64(lr), **slots}
        if extra:
            feeds.update(extra(i))
        out = prog(feeds)
        p = out["p"]
        slots = {k: out[k] for k in slots}
        traj.append(p)
    return np.array(traj)


def _grads(shape, n=STEPS, seed=1):
    r = np.random.default_rng(seed)
    return r.normal(size=(n,) + shape)


def test_heavy_ball_closed_recurrence_under_schedule():
    shape = (4, 3)
    grads = _grads(shape)
    lrs = 0.1 / (1 + 0.05 * np.arange(STEPS))
    p0 = np.random.default_rng(2).normal(size=shape)
    beta = 0.85
    ours = iterate(make_optimizer("momentum", {"lr": 0.1, "beta": beta}), shape, grads, lrs, p0)
    prev, cur, ref = p0, p0, []
    for gr, lr in zip(grads, lrs):  # θ_{t+1} = θ_t − η_t ∇_t + β(θ_t − θ_{t−1}), θ_{-1} = θ_0
        prev, cur = cur, cur - lr * gr + beta * (cur - prev)
        ref.append(cur)
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mom", [0.0, 0.9])
def test_signsgd(mom):
    shape = (6,)
    grads, p0, lr = _grads(shape), np.zeros(shape), 0.01
    ours = iterate(make_optimizer("signsgd", {"lr": lr, "momentum": mom}), shape, grads,
                   [lr] * STEPS, p0)
    p, m, ref = p0, np.zeros(shape), []
    for gr in grads:
        m = mom * m + (1 - mom) * gr
        p = p - lr * np.sign(m)
        ref.append(p)
    np.testing.assert_allclose(ours, np.array(ref), atol=1e-12)


def ns5_ref(G, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / (np.linalg.norm(X) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if G.shape[0] > G.shape[1] else X


@pytest.mark.parametrize("shape", [(12, 7), (5, 9)])
def test_newton_schulz_orthogonalizes(shape):
    g = Graph("ns")
    x = _inp(g, "x", shape)
    prog = npb.lower(g, {"y": newton_schulz5(g, x)}, dtype="f64")
    G = np.random.default_rng(3).normal(size=shape)
    y = prog({"x": G})["y"]
    np.testing.assert_allclose(y, ns5_ref(G), rtol=1e-10, atol=1e-12)
    sv = np.linalg.svd(y, compute_uv=False)
    assert sv.min() >= 0.6 and sv.max() <= 1.2, sv
    # the same singular vectors as G: y ≈ U f(S) V^T
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    np.testing.assert_allclose(U.T @ y @ Vt.T, np.diag(np.diag(U.T @ y @ Vt.T)), atol=1e-8)


@pytest.mark.parametrize("shape,nesterov", [((8, 4), True), ((3, 6), False), ((5,), True),
                                            ((4, 2, 3, 3), True)])
def test_muon_trajectory(shape, nesterov):
    grads = _grads(shape, 30)
    p0 = np.random.default_rng(4).normal(size=shape)
    mu, lr = 0.95, 0.02
    ours = iterate(make_optimizer("muon", {"lr": lr, "nesterov": nesterov}), shape, grads,
                   [lr] * 30, p0)
    p, b, ref = p0, np.zeros(shape), []
    for gr in grads:
        b = mu * b + gr
        u = gr + mu * b if nesterov else b
        if len(shape) >= 2:
            rows, cols = shape[0], int(np.prod(shape[1:]))
            u = (ns5_ref(u.reshape(rows, cols)) * max(1, rows / cols) ** 0.5).reshape(shape)
        p = p - lr * u
        ref.append(p)
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-10, atol=1e-10)


def test_svrg_direction():
    shape = (3, 2)
    grads = _grads(shape, 20)
    snaps, mus = _grads(shape, 20, seed=5), _grads(shape, 20, seed=6)
    p0, lr = np.ones(shape), 0.05
    ours = iterate(make_optimizer("svrg", {"lr": lr}), shape, grads, [lr] * 20, p0,
                   extra=lambda i: {"x:g_snap": snaps[i], "x:mu": mus[i]})
    ref = p0 - lr * np.cumsum(grads - snaps + mus, axis=0)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_snapshot_gradients():
    X, Y, init = _data()
    g = Graph("svrg")
    Xn, Yn = _inp(g, "X", (16, 3)), _inp(g, "Y", (16, 2))
    p = {k: g.add("param", (), {"name": k, "dtype": "f32", "shape": s}) for k, s in SHAPES.items()}
    loss = mlp_loss(g, p, Xn, Yn)
    gs = ad_grad(g, loss, list(p.values()))
    snaps, gsnap = snapshot_gradients(g, loss, list(p.values()))
    assert [g.node(s).attrs["name"] for s in snaps] == [f"snapshot:{k}" for k in SHAPES]
    prog = npb.lower(g, {**{f"g:{k}": v for k, v in zip(SHAPES, gs)},
                         **{f"s:{k}": v for k, v in zip(SHAPES, gsnap)}}, dtype="f64")
    other = {k: v + 0.3 for k, v in init.items()}
    out = prog({"X": X, "Y": Y, **init, **{f"snapshot:{k}": v for k, v in other.items()}})
    at_other = prog({"X": X, "Y": Y, **other, **{f"snapshot:{k}": v for k, v in other.items()}})
    for k in SHAPES:
        np.testing.assert_allclose(out[f"s:{k}"], at_other[f"g:{k}"], rtol=1e-12)
        assert not np.allclose(out[f"s:{k}"], out[f"g:{k}"])


@pytest.mark.parametrize("decay", [None, 0.9])
def test_polyak_average(decay):
    g = Graph("polyak")
    avg, new_p, step = _inp(g, "avg", (4,)), _inp(g, "p", (4,)), _inp(g, "step", ())
    prog = npb.lower(g, {"avg": polyak_update(g, avg, new_p, decay, step=step)}, dtype="f64")
    ps = _grads((4,), 30)
    a = np.full(4, 7.0) if decay is None else ps[0]
    ema = ps[0]
    for t, p in enumerate(ps):
        a = prog({"avg": a, "p": p, "step": np.float64(t)})["avg"]
        if decay is None:
            np.testing.assert_allclose(a, ps[:t + 1].mean(axis=0), rtol=1e-12)
        else:
            ema = decay * ema + (1 - decay) * p
            np.testing.assert_allclose(a, ema, rtol=1e-12)


@pytest.mark.parametrize("name,kw", [("sgd", {"lr": 0.1, "weight_decay": 0.5}),
                                     ("adamw", {"lr": 0.1, "weight_decay": 0.5}),
                                     ("sgd", {"lr": 0.1, "l1": 0.5})])
def test_decay_spares_rank1(name, kw):
    assert decays("b", TensorType("f32", (5,))) is False
    assert decays("W", TensorType("f32", (5, 2))) is True
    opt = make_optimizer(name, kw)
    for shape in [(5,), (5, 2)]:
        mask = decays("x", TensorType("f32", shape))
        p0 = np.full(shape, 2.0)
        traj = iterate(opt, shape, np.zeros((3,) + shape), [0.1] * 3, p0, decay_mask=mask)
        if mask:
            assert (traj[-1] < p0).all()
        else:
            np.testing.assert_array_equal(traj[-1], p0)


def test_l1():
    shape = (3, 3)
    grads = _grads(shape, 20)
    p0, lr, l1 = np.random.default_rng(7).normal(size=shape), 0.05, 0.2
    ours = iterate(make_optimizer("sgd", {"lr": lr, "l1": l1}), shape, grads, [lr] * 20, p0)
    p, ref = p0, []
    for gr in grads:
        p = p - lr * (gr + l1 * np.sign(p))
        ref.append(p)
    np.testing.assert_allclose(ours, np.array(ref), atol=1e-12)
    g = Graph("l1")
    pn, gn = _inp(g, "p", (2,)), _inp(g, "g", (2,))
    out = npb.lower(g, {"y": apply_l1(g, pn, gn, 0.5)}, dtype="f64")(
        {"p": np.array([-1.0, 2.0]), "g": np.zeros(2)})["y"]
    np.testing.assert_allclose(out, [-0.5, 0.5])


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_by_global_norm(max_norm):
    shapes = [(3, 4), (4,), (2, 2, 2)]
    r = np.random.default_rng(8)
    vals = [r.normal(size=s) for s in shapes]
    g = Graph("clip")
    ins = [_inp(g, f"g{i}", s) for i, s in enumerate(shapes)]
    outs = clip_by_global_norm(g, ins, max_norm)
    got = npb.lower(g, {f"c{i}": o for i, o in enumerate(outs)}, dtype="f64")(
        {f"g{i}": v for i, v in enumerate(vals)})
    ts = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    for t, v in zip(ts, vals):
        t.grad = torch.tensor(v)
    torch.nn.utils.clip_grad_norm_(ts, max_norm)
    for i, t in enumerate(ts):
        np.testing.assert_allclose(got[f"c{i}"], t.grad.numpy(), rtol=1e-12)


def test_adam_step_lowers_to_onnx():
    onnx_backend = pytest.importorskip("backends.onnx")
    pytest.importorskip("onnxruntime")
    opt = make_optimizer("adamw", {"lr": 0.01, "amsgrad": True})
    sched = make_schedule("cosine", {"warmup": 3}, total_steps=20)
    g, res = build_step(opt, schedule=sched, clip=1.0)
    res = {f"new:{k}": v for k, v in res.items()}  # ONNX: result names differ from source names
    X, Y, init = _data()
    r = np.random.default_rng(9)
    slots = {f"s:{k}:{n}": np.abs(r.normal(size=s)) * 0.1 for k, s in SHAPES.items()
             for n, _ in opt.slots(k, TensorType("f32", s))}
    feeds = {"X": X, "Y": Y, "step": np.float64(4), "lr": np.float64(0.01), **init, **slots}
    ref = npb.lower(g, res, dtype="f64")(feeds)
    got = onnx_backend.lower_program(g, res, dtype="f32")(feeds)
    for k in res:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_make_optimizer_errors():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                               "adamw", "signsgd", "muon", "svrg"}
    with pytest.raises(ValueError, match="did you mean `adam`"):
        make_optimizer("adma", {})
    with pytest.raises(ValueError, match="no option `beta`.*did you mean `beta[12]`.*valid options"):
        make_optimizer("adam", {"beta": 0.9})
    with pytest.raises(ValueError, match="`lr` must be positive"):
        make_optimizer("sgd", {"lr": 0})
    with pytest.raises(ValueError, match="`beta2` must be in"):
        make_optimizer("adam", {"beta2": 1.0})
    with pytest.raises(ValueError, match="true or false"):
        make_optimizer("adam", {"amsgrad": "yes"})
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        make_optimizer("sgd", {"nesterov": True})
    o = make_optimizer("adamw", {"lr": 3})
    assert o.hyper["lr"] == 3.0 and o.hyper["weight_decay"] == 0.01
    assert make_optimizer("adam", {}).slots("w", TensorType("f32", (2,))) == [("m", 0.0), ("v", 0.0)]


ALL_CONFIGS = [("sgd", {"momentum": 0.9, "dampening": 0.2, "l1": 0.01, "weight_decay": 0.01}),
               ("momentum", {}), ("nesterov", {}), ("adagrad", {}),
               ("rmsprop", {"centered": True, "momentum": 0.5}), ("adam", {"amsgrad": True}),
               ("adamw", {}), ("signsgd", {"momentum": 0.9}), ("muon", {}), ("svrg", {})]


@pytest.mark.parametrize("name,kw", ALL_CONFIGS, ids=[c[0] for c in ALL_CONFIGS])
def test_every_optimizer_lowers_to_onnx_and_torch(name, kw):
    onnx_backend = pytest.importorskip("backends.onnx")
    torch_backend = pytest.importorskip("backends.torch")
    opt = make_optimizer(name, kw)
    shape = (6, 4)
    _, g, res = one_param_program(opt, shape)
    t = TensorType("f32", shape)
    r = np.random.default_rng(10)
    feeds = {"p": r.normal(size=shape), "g": r.normal(size=shape), "step": np.float64(0),
             "lr": np.float64(0.01)}
    feeds.update({f"s:{n}": np.abs(r.normal(size=shape)) + 0.5 for n, _ in opt.slots("w", t)})
    if "s:g_avg" in feeds:  # centered RMSprop: keep sq - g_avg^2 positive
        feeds["s:g_avg"] = 0.1 * r.normal(size=shape)
    feeds.update({f"x:{n}": r.normal(size=shape) for n in opt.inputs("w", t)})
    res = {f"new:{k}": v for k, v in res.items()}
    ref = npb.lower(g, res, dtype="f64")(feeds)
    got = onnx_backend.lower_program(g, res, dtype="f32")(feeds)
    tprog = torch_backend.lower(g, res, dtype="f64")
    tout = tprog({k: torch.tensor(v) for k, v in feeds.items()})
    for k in res:
        assert np.isfinite(ref[k]).all(), k
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(np.asarray(tout[k].cpu() if hasattr(tout[k], "cpu") else tout[k]),
                                   ref[k], rtol=1e-12, atol=1e-12, err_msg=k)
