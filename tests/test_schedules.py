"""Learning-rate schedules: Python values vs torch.optim.lr_scheduler, graph vs Python."""
from __future__ import annotations

import math

import numpy as np
import pytest

from backends import numpy as npb
from compiler.core.ir import Graph
from compiler.training.schedules import SCHEDULES, make_schedule

torch = pytest.importorskip("torch")

N = 50
BASE = 0.1


def torch_lrs(make_sched, n=N, base=BASE):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def ours(sched, n=N, base=BASE):
    return np.array([sched.value(t, base) for t in range(n)])


L = torch.optim.lr_scheduler

CASES = [
    ("constant", {}, lambda o: L.LambdaLR(o, lambda t: 1.0)),
    ("step", {"every": 7, "gamma": 0.5}, lambda o: L.StepLR(o, step_size=7, gamma=0.5)),
    ("step", {"every": 10}, lambda o: L.StepLR(o, step_size=10, gamma=0.1)),
    ("exponential", {"gamma": 0.93}, lambda o: L.ExponentialLR(o, gamma=0.93)),
    ("cosine", {}, lambda o: L.CosineAnnealingLR(o, T_max=N)),
    ("cosine", {"total": 30, "min_lr": 0.01}, lambda o: L.CosineAnnealingLR(o, T_max=30, eta_min=0.01)),
    ("warmup", {"steps": 10},
     lambda o: L.LinearLR(o, start_factor=1 / 10, end_factor=1.0, total_iters=9)),
    ("inverse_time", {"decay": 0.3}, lambda o: L.LambdaLR(o, lambda t: 1 / (1 + 0.3 * t))),
    ("linear", {"total": 40, "end": 0.02},
     lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.02 / BASE, total_iters=40)),
]


@pytest.mark.parametrize("name,kw,mk", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_values_match_torch(name, kw, mk):
    s = make_schedule(name, kw, total_steps=N)
    n = 30 if name == "cosine" and kw.get("total") == 30 else N  # torch's cosine is periodic past T_max
    np.testing.assert_allclose(ours(s, n), torch_lrs(mk, n), rtol=1e-10, atol=1e-12)


def test_cosine_warmup_value():
    s = make_schedule("cosine", {"warmup": 5, "min_lr": 0.001}, total_steps=25)
    v = ours(s, 40)
    np.testing.assert_allclose(v[:5], BASE * np.arange(1, 6) / 5)
    s2 = np.arange(0, 20)
    np.testing.assert_allclose(v[5:25], 0.001 + (BASE - 0.001) * (1 + np.cos(np.pi * s2 / 20)) / 2)
    np.testing.assert_allclose(v[25:], 0.001)  # clamped past total


GRAPH_CASES = [(n, kw) for n, kw, _ in CASES] + [
    ("cosine", {"warmup": 5, "min_lr": 0.001, "total": 25}),
    ("linear", {}),
    ("warmup_cosine", {}),
]


@pytest.mark.parametrize("name,kw", GRAPH_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(GRAPH_CASES)])
def test_graph_equals_value(name, kw):
    s = make_schedule(name, kw, total_steps=N)
    g = Graph("sched")
    step = g.add("input", (), {"name": "step", "dtype": "f32", "shape": ()})
    base = g.add("input", (), {"name": "base_lr", "dtype": "f32", "shape": ()})
    lr = s.build(g, step, base)
    prog = npb.lower(g, {"lr": lr}, dtype="f64")
    for t in range(N + 10):
        got = float(prog({"step": np.float64(t), "base_lr": np.float64(BASE)})["lr"])
        assert math.isclose(got, s.value(t, BASE), rel_tol=1e-12, abs_tol=1e-15), (t, got)


def test_errors():
    with pytest.raises(ValueError, match="did you mean `cosine`"):
        make_schedule("cosin", {}, total_steps=10)
    with pytest.raises(ValueError, match="no option `gama`.*did you mean `gamma`"):
        make_schedule("step", {"every": 3, "gama": 0.5}, total_steps=10)
    with pytest.raises(ValueError, match="needs option `every`"):
        make_schedule("step", {}, total_steps=10)
    with pytest.raises(ValueError, match="needs `total`"):
        make_schedule("cosine", {}, total_steps=None)
    with pytest.raises(ValueError, match="must be a number"):
        make_schedule("exponential", {"gamma": "x"}, total_steps=None)
    with pytest.raises(ValueError, match="must exceed `warmup`"):
        make_schedule("cosine", {"warmup": 10}, total_steps=10)
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine", "warmup_cosine",
                              "warmup", "inverse_time", "linear"}
    s = make_schedule("warmup_cosine", {}, total_steps=100)
    assert s.hyper["warmup"] == 5 and s.value(0, 1.0) == 0.2 and s.value(4, 1.0) == 1.0
