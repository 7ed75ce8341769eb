"""The backward scan's shape: residuals read, weight gradients hoisted, no per-step pad.

Values are checked elsewhere (tests/test_spec_gradcheck.py, the backend agreement
tests); these check the structure the speed depends on, and the values of the new
rewrite (a sum of zero-padded pieces becomes a concat) on its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import backends.numpy as bnp
from compiler import api
from compiler.core.ir import Graph
from compiler.primitives import get_primitive
from compiler.transform.decompose import expand
from compiler.transform.passes import optimize

ROOT = Path(__file__).resolve().parent.parent


def _scan_bodies(g, roots):
    for n in g.topo_order(list(roots)):
        node = g.node(n)
        if node.op == "scan":
            body = node.attrs["body"]
            yield node, body
            yield from _scan_bodies(body, body.meta["results"])
        elif get_primitive(node.op).decomposition is not None:
            # a composite (the std LSTM is `lstm`, its VJP `lstm_grad`): the scans of the
            # decomposition NumPy and ONNX run (torch has fused kernels)
            sub, _, out = expand(get_primitive(node.op), [g.type(a) for a in node.args], node.attrs)
            yield from _scan_bodies(sub, [out])


def _ops(body):
    return [body.node(n).op for n in body.topo_order(list(body.meta["results"]))]


def test_lstm_backward_scan_has_no_weight_gradient_matmul_nor_pad():
    m = api.load(str(ROOT / "specs" / "lstm.dl"))
    g, res = m.gradient_results("mse")
    g, res = optimize(g, res)
    bodies = list(_scan_bodies(g, res.values()))
    back = [b for node, b in bodies if node.attrs.get("reverse")]
    fwd = [b for node, b in bodies if not node.attrs.get("reverse")]
    assert back and fwd
    ops = _ops(back[0])
    # only the carry's cotangent c Uᵀ: no recomputed forward (x W, h U: the step's
    # gates are read as residuals) and no weight-gradient products hᵀ c, xᵀ c
    assert _ops(fwd[0]).count("matmul") == 2 and ops.count("matmul") == 1
    assert not {"sigmoid", "tanh"} & set(ops)
    assert "pad" not in ops and "concat" in ops
    # the weight gradients are one product each after the loop, over the stacked steps
    (back_node,) = [n for n in g.topo_order(list(res.values())) if g.node(n).op == "lstm_grad"]
    prim = get_primitive("lstm_grad")
    sub, _, out = expand(prim, [g.type(a) for a in g.node(back_node).args], g.node(back_node).attrs)
    outer = [sub.node(n).op for n in sub.topo_order([out])]
    assert outer.count("matmul") >= 2


def test_zero_pads_tiling_an_axis_become_a_concat():
    g = Graph("pads")
    x = g.add("input", (), {"name": "x", "dtype": "f64", "shape": (3, 6)})
    pieces = [g.op("slice", x, axis=1, start=s, stop=s + 2, step=1) for s in (0, 2, 4)]
    padded = [g.op("pad", p, pads=((0, 0), (s, 4 - s)), value=0.0)
              for p, s in zip(pieces, (0, 2, 4))]
    y = g.op("add", g.op("add", padded[2], padded[0]), padded[1])  # any order
    y = g.op("mul", y, y)
    g2, res = optimize(g, {"y": y})
    ops = [g2.node(n).op for n in g2.topo_order([res["y"]])]
    assert "pad" not in ops and "concat" in ops
    xv = np.arange(18.0).reshape(3, 6)
    np.testing.assert_array_equal(bnp.lower(g2, res, dtype="f64")({"x": xv})["y"], xv * xv)


def test_pads_with_a_gap_stay_pads():
    g = Graph("gap")
    x = g.add("input", (), {"name": "x", "dtype": "f64", "shape": (3, 2)})
    a = g.op("pad", x, pads=((0, 0), (0, 4)), value=0.0)
    b = g.op("pad", x, pads=((0, 0), (4, 0)), value=0.0)  # [4, 6): [2, 4) is left 0
    g2, res = optimize(g, {"y": g.op("add", a, b)})
    ops = [g2.node(n).op for n in g2.topo_order([res["y"]])]
    assert "concat" not in ops
    xv = np.ones((3, 2))
    want = np.concatenate([xv, np.zeros((3, 2)), xv], 1)
    np.testing.assert_array_equal(bnp.lower(g2, res, dtype="f64")({"x": xv})["y"], want)
