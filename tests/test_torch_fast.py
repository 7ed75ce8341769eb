"""The PyTorch step's speed mechanisms give the values of the plain lowering.

* multi-tensor optimizer updates (`backends/torch/foreach.py`): the same train step
  lowered with and without `_foreach_*` grouping, float64, stepped 3 times: every
  returned tensor is bit-identical (torch's foreach kernels apply the same per-tensor
  op, so nothing but the number of Python calls may change);
* `dlc train --compile` (`backends/torch/compiled.py`): a short run under
  torch.compile ends at the parameters of the same run without it;
* `--compile` with another backend is a usage error (exit 2);
* max pooling's gradient reads the forward's argmax indices (one pooling pass) and
  equals torch autograd's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends import torch as tb  # noqa: E402
from compiler import api, training  # noqa: E402
from compiler.training.loop import Trainer  # noqa: E402
from compiler.training.spec import model_for, parse_train  # noqa: E402
from compiler.training.step import _split  # noqa: E402
from compiler.transform.passes import optimize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
model Tiny(hidden = 8, classes = 10) {{
  input x: f32[B, 64]
  input y: i64[B]
  logits = x |> Dense(hidden, relu) |> Dense(hidden, relu) |> Dense(classes)
  loss ce = cross_entropy(logits, y)
  metric acc = accuracy(logits, y)
}}

train Tiny on digits {{
  split 0.8 0.1 0.1
  batch 32
  steps 4
  optimizer {opt}
  {extra}
}}
"""


def _model(tmp_path, opt, extra=""):
    path = tmp_path / "tiny.dl"
    path.write_text(SPEC.format(opt=opt, extra=extra))
    m = api.load(str(path))
    cfg = parse_train(m)
    return model_for(m, cfg), cfg


OPTIMIZERS = [
    ("adam(lr = 2e-3)", "schedule cosine\n  weight_decay 1e-4"),
    ("adamw(lr = 1e-3)", "clip_grad_norm 1.0"),
    ("sgd(lr = 0.1, momentum = 0.9)", "weight_decay 1e-3"),
    ("sgd(lr = 0.1, momentum = 0.9, nesterov = true)", ""),
    ("rmsprop(lr = 0.01)", ""),
]


@pytest.mark.parametrize("opt,extra", OPTIMIZERS, ids=[o.split("(")[0] + str(i)
                                                       for i, (o, _) in enumerate(OPTIMIZERS)])
def test_foreach_update_is_bit_identical(tmp_path, opt, extra):
    m2, cfg = _model(tmp_path, opt, extra)
    sg = training.build_step(m2, cfg, cfg.groups[0], 100)
    g, res = optimize(sg.graph, sg.results)
    values = training.initial_values(m2, [sg], 0)
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((32, 64)), "y": rng.integers(0, 10, 32)}
    fused = tb.lower(g, res, dtype="f64")
    plain = tb.lower(g, res, dtype="f64", foreach=False)
    # the mechanism is on (the test would pass vacuously otherwise) and only where asked
    assert "torch._foreach_" in fused.source
    assert "torch._foreach_" not in plain.source
    names = {g.node(n).attrs["name"] for n in g.inputs + g.params + g.states}
    runs = []
    for prog in (fused, plain):
        feeds = {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in values.items()
                 if k in names}
        feeds.update({k: torch.as_tensor(v) for k, v in batch.items()})
        outs = []
        with torch.no_grad():
            for t in range(3):
                feeds["step"] = torch.tensor(float(t), dtype=torch.float64)
                out = prog(feeds)
                feeds.update({k[4:]: v for k, v in out.items() if k.startswith("new:")})
                outs.append(out)
        runs.append(outs)
    for a, b in zip(*runs):
        assert a.keys() == b.keys()
        for k in a:
            # exact: the same kernels on the same operands, only fewer Python calls
            assert torch.equal(a[k], b[k]), k


def test_foreach_plan_leaves_dependent_nodes_unfused():
    """Two `mul`s of the update region where one reads the other cannot share a call
    (contracting them would close a cycle): the plan leaves them apart."""
    from backends.torch import foreach
    from compiler.core.ir import Graph
    g = Graph("chain")
    p = g.add("param", (), {"name": "p", "dtype": "f32", "shape": (3,)})
    q = g.add("param", (), {"name": "q", "dtype": "f32", "shape": (3,)})
    a = g.op("mul", p, p)
    b = g.op("mul", a, q)          # depends on a: same key as a, not independent
    c = g.op("mul", q, q)          # independent of a: may join it
    results = {"new:p": b, "new:q": c}
    order = g.topo_order(list(results.values()))
    sched, groups = foreach.plan(g, order, results)
    assert sorted(sched) == sorted(order)
    members = [ms for ms in groups.values()]
    assert all(not ({a, b} <= set(ms)) for ms in members)
    mod = tb.lower(g, results, dtype="f64")
    x, y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([0.5, -1.0, 2.0],
                                                                         dtype=torch.float64)
    out = mod({"p": x, "q": y})
    assert torch.equal(out["new:p"], x * x * y) and torch.equal(out["new:q"], y * y)


def _train(m2, cfg, tmp_path, name, compile):
    tr = Trainer(m2, cfg, _split(cfg, m2), backend="torch", out=tmp_path / name,
                 compile=compile)
    tr.run()
    return tr


@pytest.mark.slow  # inductor compiles the step: ~10 s idle, more under load
def test_compile_gives_the_same_run(tmp_path):
    m2, cfg = _model(tmp_path, "adam(lr = 2e-3)", "weight_decay 1e-4")
    plain = _train(m2, cfg, tmp_path, "plain", False)
    comp = _train(m2, cfg, tmp_path, "compiled", True)
    assert plain.compile_s is None
    assert comp.compile_s > 0
    assert comp.programs[0].compiles >= 1
    for k, v in plain.values.items():
        # f32: inductor fuses the elementwise chains and may reassociate a reduction,
        # so values may differ in the last bits; 4 Adam steps of lr 2e-3 move a weight
        # by ~1e-2, and 1e-5 relative (+1e-6 absolute) is ~100 f32 ulps of that
        np.testing.assert_allclose(np.asarray(comp.values[k]), np.asarray(v),
                                   rtol=1e-5, atol=1e-6, err_msg=k)
    assert comp.pos.history[-1]["train_ce"] == pytest.approx(
        plain.pos.history[-1]["train_ce"], rel=1e-5)


def test_compile_needs_the_torch_backend(tmp_path, capsys):
    from compiler.commands.cli import main
    path = tmp_path / "tiny.dl"
    path.write_text(SPEC.format(opt="adam(lr = 2e-3)", extra=""))
    code = main(["train", str(path), "--compile", "--out", str(tmp_path / "r"), "--json"])
    assert code == 2
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "UsageError" and "--backend torch" in err["message"]


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_gradient_reuses_the_forward_indices(kernel, stride, padding):
    """The forward pooling returns its argmax indices when the graph also routes a
    gradient through it (one pooling pass, as eager autograd saves them); the gradient
    is torch autograd's."""
    from compiler.core.ir import Graph
    from compiler.transform.autodiff import grad as ad_grad
    g = Graph("pool")
    x = g.add("input", (), {"name": "x", "dtype": "f32", "shape": (2, 3, 7, 7)})
    out_side = (7 + 2 * padding - kernel) // stride + 1
    w = g.add("input", (), {"name": "w", "dtype": "f32", "shape": (2, 3, out_side, out_side)})
    y = g.op("max_pool", x, kernel=(kernel, kernel), stride=(stride, stride),
             padding=(padding, padding))
    loss = g.op("sum", g.op("mul", y, w), axis=None, keepdims=False)
    (dx,) = ad_grad(g, loss, [x])
    mod = tb.lower(g, {"loss": loss, "dx": dx}, dtype="f64")
    body = mod.source.split("def forward", 1)[1]
    assert body.count("max_pool2d(") == 1 and "return_indices=True" in body
    rng = np.random.default_rng(1)
    xv = torch.as_tensor(rng.standard_normal((2, 3, 7, 7)))
    wv = torch.as_tensor(rng.standard_normal(tuple(g.type(w).shape)))
    out = mod({"x": xv, "w": wv})
    xr = xv.clone().requires_grad_(True)
    ref = (torch.nn.functional.max_pool2d(xr, kernel, stride, padding) * wv).sum()
    ref.backward()
    # overlapping windows add up to 4 routed values per entry: autograd may add them
    # in another order, a few f64 ulps of values of size ~1
    torch.testing.assert_close(out["dx"], xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["loss"], ref.detach(), rtol=0, atol=0)
