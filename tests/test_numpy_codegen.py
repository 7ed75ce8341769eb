"""The NumPy generator's savings keep every value: in-place writes only into dead
temporaries (backends/numpy/scope.py), inlined transposes, operators where dtypes
agree, the relu_grad bit mask, and the cross-entropy loss and VJP sharing one softmax.

References are plain NumPy on the same float64 inputs; the generated code runs the
same ufuncs on the same operands, so float64 agreement is to rounding (1e-12 relative
bounds only summation-order differences inside BLAS); a clobbered operand would be
off by O(1)."""
from __future__ import annotations

import numpy as np
import pytest

import backends.numpy as bnp
from compiler import api
from compiler.core.ir import Graph

RNG = np.random.default_rng(0)


def _inp(g, name, dtype, shape):
    return g.add("input", (), {"name": name, "dtype": dtype, "shape": tuple(shape)})


def _mats(g, *names, shape=(4, 5)):
    return [_inp(g, n, "f64", shape) for n in names]


def _feeds(*names, shape=(4, 5)):
    return {n: RNG.normal(size=shape) for n in names}


def test_value_read_twice_is_not_overwritten_before_its_last_reader():
    g = Graph("twice")
    a, b, c, d = _mats(g, "a", "b", "c", "d")
    w = _inp(g, "w", "f64", (5, 5))
    t = g.add("matmul", [a, w], {})                 # a fresh temporary read by two nodes
    u = g.add("add", [t, c], {})
    v = g.add("mul", [t, d], {})                    # t's last reader: may write into t
    s = g.add("add", [u, v], {})
    twice = g.add("mul", [s, s], {})                # one arg twice: not written in place
    f = dict(_feeds("a", "b", "c", "d"), w=RNG.normal(size=(5, 5)))
    prog = bnp.lower(g, {"u": u, "out": twice}, dtype="f64")
    got = prog(f)
    tt = f["a"] @ f["w"]
    uu = tt + f["c"]
    ss = uu + tt * f["d"]
    np.testing.assert_allclose(got["u"], uu, rtol=1e-12)
    np.testing.assert_allclose(got["out"], ss * ss, rtol=1e-12)
    src = _body(prog)
    assert f"out={_var(src, 'matmul')})" in src   # the mechanism ran (v writes into t) ...
    assert f"out={_var(src, 'mul')})" in src      # s into v's, never into u's: u is a result
    assert src.count("out=") == 2 and f"out={_var(src, 'add')})" not in src  # s read twice


def _body(prog) -> str:
    return prog.source.split("def run(feeds):")[1].split("\n\n\n")[0]


def _var(src: str, prefix: str) -> str:
    return next(line.split("=")[0].strip() for line in src.splitlines()
                if line.strip().startswith(prefix))


def test_result_and_feed_are_never_written_in_place():
    g = Graph("keep")
    a, c = _mats(g, "a", "c")
    t = g.add("exp", [a], {})        # a result, read by one node
    u = g.add("add", [t, c], {})     # c is a feed: never a target either
    f = _feeds("a", "c")
    prog = bnp.lower(g, {"t": t, "u": u}, dtype="f64")
    got = prog(f)
    assert "out=" not in _body(prog)
    np.testing.assert_allclose(got["t"], np.exp(f["a"]), rtol=1e-15)
    np.testing.assert_allclose(got["u"], np.exp(f["a"]) + f["c"], rtol=1e-15)


def test_a_chain_of_dead_temporaries_reuses_one_buffer():
    g = Graph("chain")
    a, c = _mats(g, "a", "c")
    t = g.add("exp", [a], {})
    t = g.add("mul", [t, c], {})
    t = g.add("neg", [t], {})
    t = g.add("relu", [t], {})
    prog = bnp.lower(g, {"y": t}, dtype="f64")
    f = _feeds("a", "c")
    np.testing.assert_allclose(prog(f)["y"], np.maximum(-(np.exp(f["a"]) * f["c"]), 0), rtol=1e-15)
    body = _body(prog)
    assert body.count("out=") == 3  # mul into exp's array, neg into mul's, relu into neg's
    assert all(f"out={_var(body, op)})" in body for op in ("exp", "mul", "neg"))


def test_transposed_operand_is_inlined_and_its_source_kept():
    g = Graph("tr")
    a = _inp(g, "a", "f64", (4, 5))
    e = g.add("exp", [a], {})                         # owned, read by the transpose and add
    et = g.add("transpose", [e], {"perm": (1, 0)})
    m = g.add("matmul", [et, a], {})                  # (5, 5)
    late = g.add("add", [e, a], {})                    # e read after the view was taken
    prog = bnp.lower(g, {"m": m, "late": late}, dtype="f64")
    f = _feeds("a")
    got = prog(f)
    np.testing.assert_allclose(got["m"], np.exp(f["a"]).T @ f["a"], rtol=1e-12)
    np.testing.assert_allclose(got["late"], np.exp(f["a"]) + f["a"], rtol=1e-15)
    assert ".T @" in _body(prog) and "transpose" not in _body(prog)
    assert "out=" not in _body(prog)  # e has a view reader: never overwritten


def test_mixed_dtype_add_keeps_the_run_dtype():
    """f32 + i64: NumPy would widen to float64; the ufunc keeps dtype= (no operator)."""
    g = Graph("mixed")
    x = _inp(g, "x", "f32", (3,))
    k = _inp(g, "k", "i64", (3,))
    s = g.add("add", [x, k], {})
    same = g.add("add", [s, x], {})
    prog = bnp.lower(g, {"s": s, "same": same}, dtype="f32")
    xs, ks = np.array([1.5, 2.5, 3.5], np.float32), np.array([1, 2, 3])
    got = prog({"x": xs, "k": ks})
    assert got["s"].dtype == np.float32 and got["same"].dtype == np.float32
    np.testing.assert_array_equal(got["same"], (xs + ks.astype(np.float32)) + xs)
    assert "dtype=np.float32" in prog.source and " + x" in prog.source


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_relu_grad_zeroes_nan_and_inf_at_inactive_units(dtype):
    g = Graph("rg")
    ct = _inp(g, "ct", "f32", (6,))
    x = _inp(g, "x", "f32", (6,))
    out = g.add("relu_grad", [ct, x], {})
    np_dt = {"f16": np.float16, "f32": np.float32, "f64": np.float64}[dtype]
    cts = np.array([np.nan, np.inf, -0.0, 2.0, np.nan, -3.0], np_dt)
    xs = np.array([-1.0, 0.0, -2.0, np.nan, 4.0, 5.0], np_dt)
    got = bnp.lower(g, {"y": out}, dtype=dtype)({"ct": cts, "x": xs})["y"]
    want = np.where(xs > 0, cts, 0).astype(np_dt)
    assert got.dtype == np_dt
    np.testing.assert_array_equal(got, want)   # NaN at the active unit 4 stays NaN
    assert not np.signbit(got[2])              # +0 at an inactive unit, as np.where gives


def test_relu_grad_of_scalars():
    g = Graph("rg0")
    ct = _inp(g, "ct", "f64", ())
    x = _inp(g, "x", "f64", ())
    out = g.add("relu_grad", [ct, x], {})
    prog = bnp.lower(g, {"y": out}, dtype="f64")
    assert float(prog({"ct": np.array(np.nan), "x": np.array(-1.0)})["y"]) == 0.0
    assert float(prog({"ct": np.array(2.5), "x": np.array(1.0)})["y"]) == 2.5


def test_cross_entropy_loss_and_gradient_share_one_softmax():
    m = api.load(text="model M() { input z: f32[B, 4]\n input y: i64[B]\n"
                      " loss L = cross_entropy(z, y) }")
    z = RNG.normal(size=(7, 4)) * 3
    y = np.array([0, 3, 1, 2, 2, 0, 1])
    g, res = m.gradient_results("L", wrt=["z"]) if _takes_wrt(m) else m.gradient_results("L")
    prog = bnp.lower(g, res, dtype="f64")
    assert prog.source.count("sce_parts(") == 2  # its definition and one call
    out = prog({"z": z, "y": y})
    zz = z - z.max(-1, keepdims=True)
    p = np.exp(zz) / np.exp(zz).sum(-1, keepdims=True)
    lp = zz - np.log(np.exp(zz).sum(-1, keepdims=True))
    np.testing.assert_allclose(out["L"], -lp[np.arange(7), y].mean(), rtol=1e-13)
    hot = np.eye(4)[y]
    grad = next(v for k, v in out.items() if k.startswith("grad:"))
    np.testing.assert_allclose(grad, (p - hot) / 7, rtol=1e-12, atol=1e-16)


def _takes_wrt(m) -> bool:
    import inspect
    return "wrt" in inspect.signature(m.gradient_results).parameters
