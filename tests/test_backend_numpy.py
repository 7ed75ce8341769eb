"""The NumPy backend on hand-built graphs: generated code, dims, scan, standalone files.

The graph builders here are shared with tests/test_backend_torch.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import backends.numpy as bnp
from compiler.core.ir import Graph

RNG = np.random.default_rng(0)


# ---- graph builders (shared with the torch tests) -----------------------------------

def source(g, op, name, dtype, shape, **extra):
    return g.add(op, (), {"name": name, "dtype": dtype, "shape": tuple(shape), **extra})


def mlp_graph(dtype="f32"):
    """x[B, 4] -> dense0 (tanh) -> dense1 -> mean squared error against t[B, 3].

    Params under hierarchical names; ``B`` is read from ``x`` at run time.
    """
    g = Graph("mlp")
    x = source(g, "input", "x", dtype, ("B", 4))
    t = source(g, "input", "t", dtype, ("B", 3))
    g.dim_sources["B"] = (x, 0)
    w0 = source(g, "param", "dense0.W", dtype, (4, 8), init=("normal", 1.0))
    b0 = source(g, "param", "dense0.b", dtype, (8,), init=("zeros",))
    w1 = source(g, "param", "encoder.block.0.W", dtype, (8, 3), init=("normal", 1.0))
    scale = source(g, "state", "norm.scale", dtype, (3,), init=("ones",))
    h = g.add("tanh", (g.add("add", (g.add("matmul", (x, w0)), b0)),), name="h3")
    y = g.add("mul", (g.add("matmul", (h, w1)), scale), name="y")
    d = g.op("sub", y, t)
    loss = g.add("mean", (g.op("mul", d, d),), {"axis": None, "keepdims": False}, name="loss")
    g.outputs.update(y=y, loss=loss)
    g.output_kinds.update(y="output", loss="loss")
    return g, dict(y=y, loss=loss)


def mlp_values(B=5):
    return {"x": RNG.standard_normal((B, 4)), "t": RNG.standard_normal((B, 3)),
            "dense0.W": RNG.standard_normal((4, 8)), "dense0.b": RNG.standard_normal(8),
            "encoder.block.0.W": RNG.standard_normal((8, 3)),
            "norm.scale": RNG.standard_normal(3)}


def mlp_reference(v):
    h = np.tanh(v["x"] @ v["dense0.W"] + v["dense0.b"])
    y = (h @ v["encoder.block.0.W"]) * v["norm.scale"]
    return y, np.mean((y - v["t"]) ** 2)


def scan_node(g, args, body, n_carry, n_x, n_const, length, axis=0, reverse=False, name=None):
    attrs = dict(body=body, n_carry=n_carry, n_x=n_x, n_const=n_const, axis=axis,
                 reverse=reverse, length=length)
    return g.add("scan", args, attrs, name=name)


def cumsum_body(dtype, shape):
    """(c, x) -> (c + x, c + x)"""
    body = Graph("cumsum_body")
    c = source(body, "input", "c", dtype, shape)
    x = source(body, "input", "x_t", dtype, shape)
    s = body.add("add", (c, x), name="s")
    body.meta["results"] = [s, s]
    return body


def cumsum_graph(axis=0, reverse=False, dtype="f64"):
    """xs[T, B] (or [B, T] with axis=1) -> (final sum, running sums) by scan."""
    g = Graph("cumsum")
    shape = ("T", "B") if axis == 0 else ("B", "T")
    xs = source(g, "input", "xs", dtype, shape)
    g.dim_sources.update(T=(xs, axis), B=(xs, 1 - axis))
    c0 = g.add("broadcast_to", (g.const(0.0, dtype),), {"shape": ("B",)})
    sc = scan_node(g, (c0, xs), cumsum_body(dtype, ("B",)), 1, 1, 0, "T", axis, reverse)
    final = g.op("tuple_get", sc, index=0)
    ys = g.op("tuple_get", sc, index=1)
    return g, dict(final=final, ys=ys)


def rnn_graph(dtype="f64"):
    """h' = tanh(h @ W + x_t @ U + b) over xs[T, B, I]; ys are the hidden states."""
    body = Graph("rnn_body")
    h = source(body, "input", "h", dtype, ("B", 5))
    x = source(body, "input", "x", dtype, ("B", 3))
    W = source(body, "input", "W", dtype, (5, 5))
    U = source(body, "input", "U", dtype, (3, 5))
    b = source(body, "input", "b", dtype, (5,))
    pre = body.op("add", body.op("add", body.op("matmul", h, W), body.op("matmul", x, U)), b)
    hn = body.add("tanh", (pre,), name="h_next")
    body.meta["results"] = [hn, hn]

    g = Graph("rnn")
    xs = source(g, "input", "xs", dtype, ("T", "B", 3))
    h0 = source(g, "input", "h0", dtype, ("B", 5))
    g.dim_sources.update(T=(xs, 0), B=(xs, 1))
    W = source(g, "param", "rnn.W", dtype, (5, 5), init=("normal", 1.0))
    U = source(g, "param", "rnn.U", dtype, (3, 5), init=("normal", 1.0))
    b = source(g, "param", "rnn.b", dtype, (5,), init=("zeros",))
    sc = scan_node(g, (h0, xs, W, U, b), body, 1, 1, 3, "T", name="rnn")
    hT = g.op("tuple_get", sc, index=0)
    hs = g.op("tuple_get", sc, index=1)
    loss = g.op("sum", g.op("mul", hs, hs), axis=None, keepdims=False)
    return g, dict(hT=hT, hs=hs, loss=loss)


def rnn_values(T=6, B=2):
    return {"xs": RNG.standard_normal((T, B, 3)), "h0": RNG.standard_normal((B, 5)),
            "rnn.W": 0.5 * RNG.standard_normal((5, 5)), "rnn.U": RNG.standard_normal((3, 5)),
            "rnn.b": RNG.standard_normal(5)}


def rnn_reference(v):
    h, hs = v["h0"], []
    for t in range(v["xs"].shape[0]):
        h = np.tanh(h @ v["rnn.W"] + v["xs"][t] @ v["rnn.U"] + v["rnn.b"])
        hs.append(h)
    hs = np.stack(hs)
    return h, hs, np.sum(hs * hs)


def nested_scan_graph(dtype="f64"):
    """Outer scan over the rows of X[R, C]; its body runs an inner scan (a cumsum of
    the row, with a scale closed over as a const). Carry: acc[C] += scale * cumsum(row);
    ys: scale * row sums."""
    inner = Graph("inner")
    c = source(inner, "input", "c", dtype, ())
    x = source(inner, "input", "x", dtype, ())
    k = source(inner, "input", "k", dtype, ())
    s = inner.op("add", c, inner.op("mul", x, k))
    inner.meta["results"] = [s, s]

    outer = Graph("outer")
    acc = source(outer, "input", "acc", dtype, ("C",))
    row = source(outer, "input", "row", dtype, ("C",))
    k_o = source(outer, "input", "k", dtype, ())
    isc = scan_node(outer, (outer.const(0.0, dtype), row, k_o), inner, 1, 1, 1, "C")
    total = outer.op("tuple_get", isc, index=0)
    run = outer.op("tuple_get", isc, index=1)
    outer.meta["results"] = [outer.op("add", acc, run), total]

    g = Graph("nested")
    X = source(g, "input", "X", dtype, ("R", "C"))
    k = source(g, "input", "k", dtype, ())
    g.dim_sources.update(R=(X, 0), C=(X, 1))
    acc0 = g.add("broadcast_to", (g.const(0.0, dtype),), {"shape": ("C",)})
    osc = scan_node(g, (acc0, X, k), outer, 1, 1, 1, "R")
    return g, dict(acc=g.op("tuple_get", osc, index=0), sums=g.op("tuple_get", osc, index=1))


def nested_reference(X, k):
    return k * np.cumsum(X, axis=1).sum(axis=0), k * X.sum(axis=1)


# ---- tests ---------------------------------------------------------------------------

def test_mlp_values_and_symbolic_batch():
    g, res = mlp_graph("f64")
    prog = bnp.lower(g, res, dtype="f64")
    for B in (5, 2):  # one program, any batch size: B is read from x
        v = mlp_values(B)
        out = prog(v)
        y, loss = mlp_reference(v)
        np.testing.assert_allclose(out["y"], y, rtol=1e-12)
        np.testing.assert_allclose(out["loss"], loss, rtol=1e-12)
        assert out["loss"].shape == () and out["y"].dtype == np.float64


def test_run_dtype_f32_casts_feeds():
    g, res = mlp_graph("f32")
    prog = bnp.lower(g, res)  # float sources are cast to the run dtype at entry
    v = mlp_values(3)
    out = prog(v)
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], mlp_reference(v)[0], rtol=1e-5, atol=1e-5)
    assert "np.float32" in prog.source and "np.float64" not in prog.source


def test_source_is_readable_straight_line_code():
    g, res = mlp_graph()
    src = bnp.lower(g, {"loss": res["loss"]}).source
    assert "def run(feeds):" in src
    for name in ("dense0_W", "encoder_block_0_W", "h3"):
        assert name in src, name
    assert '"dense0.W"' in src
    assert "import torch" not in src and "compiler" not in src
    # one line per node (reads included), the `del`s of dead temporaries (each right
    # after a statement: backends/liveness.py), then the return; no dim is needed here
    body = src[src.index("def run"):src.index('if __name__')].strip().splitlines()[1:]
    code = [l for l in body if not l.strip().startswith("del ")]
    assert len(code) == len(g.topo_order([res["loss"]])) + 1
    assert all(not a.strip().startswith("del ") for a, b in zip(body, body[1:])
               if b.strip().startswith("del "))
    assert "_d_B" not in src


def test_only_needed_nodes_are_computed():
    g, res = mlp_graph()
    prog = bnp.lower(g, {"y": res["y"]})
    assert "t" not in prog.feeds  # the target is not needed for y
    assert set(prog.feeds) == {"x", "dense0.W", "dense0.b", "encoder.block.0.W", "norm.scale"}
    with pytest.raises(KeyError, match="missing feeds: x"):
        prog({k: v for k, v in mlp_values(2).items() if k != "x"})


def test_composite_dims():
    g = Graph("dims")
    x = source(g, "input", "x", "f32", ("B", "T", 2))
    g.dim_sources.update(B=(x, 0), T=(x, 1))
    flat = g.op("reshape", x, shape=("B*T", 2))
    r = g.add("arange", (), {"length": "2*B*T", "dtype": "i64"})
    z = g.add("arange", (), {"length": "T-1", "dtype": "i64"})
    out = bnp.lower(g, {"flat": flat, "r": r, "z": z})({"x": np.ones((3, 4, 2))})
    assert out["flat"].shape == (12, 2)
    np.testing.assert_array_equal(out["r"], np.arange(24))
    np.testing.assert_array_equal(out["z"], np.arange(3))


def test_dim_read_from_a_source_not_otherwise_needed():
    g = Graph("dimonly")
    x = source(g, "input", "x", "f32", ("B", 2))
    g.dim_sources["B"] = (x, 0)
    r = g.add("arange", (), {"length": "B", "dtype": "i64"})
    prog = bnp.lower(g, {"r": r})
    assert prog.feeds == ("x",)
    np.testing.assert_array_equal(prog({"x": np.zeros((4, 2))})["r"], np.arange(4))


def test_constants_and_int_results():
    g = Graph("consts")
    a = g.const(float("inf"), "f32", (2,))
    b = g.const(3, "i64", (2, 2))
    c = g.const(True, "bool")
    out = bnp.lower(g, {"a": a, "b": b, "c": c}, dtype="f64")({})
    assert out["a"].dtype == np.float64 and np.isinf(out["a"]).all()
    assert out["b"].dtype == np.int64 and (out["b"] == 3).all()
    assert out["c"].dtype == np.bool_ and out["c"]


def test_erf_helper_is_copied_once():
    g = Graph("erf")
    x = source(g, "input", "x", "f64", (5,))
    y = g.op("erf", g.op("erf", x))
    prog = bnp.lower(g, {"y": y}, dtype="f64")
    assert prog.source.count("def erf(") == 1 and "import math" in prog.source
    v = np.linspace(-3, 3, 5)
    import math
    np.testing.assert_allclose(prog({"x": v})["y"], [math.erf(math.erf(t)) for t in v], rtol=1e-15)


@pytest.mark.parametrize("axis,reverse", [(0, False), (0, True), (1, False), (1, True)])
def test_scan_cumsum(axis, reverse):
    g, res = cumsum_graph(axis, reverse)
    prog = bnp.lower(g, res, dtype="f64")
    xs = RNG.standard_normal((6, 3) if axis == 0 else (3, 6))
    out = prog({"xs": xs})
    want = np.cumsum(xs[::-1] if axis == 0 else xs[:, ::-1], axis=axis)
    want = (want[::-1] if axis == 0 else want[:, ::-1]) if reverse else np.cumsum(xs, axis=axis)
    np.testing.assert_allclose(out["ys"], want, rtol=1e-12)
    np.testing.assert_allclose(out["final"], xs.sum(axis=axis), rtol=1e-12)
    assert "def _scan" in prog.source and "for _scan" in prog.source


def test_scan_rnn():
    g, res = rnn_graph()
    prog = bnp.lower(g, res, dtype="f64")
    v = rnn_values()
    out = prog(v)
    hT, hs, loss = rnn_reference(v)
    np.testing.assert_allclose(out["hT"], hT, rtol=1e-12)
    np.testing.assert_allclose(out["hs"], hs, rtol=1e-12)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-12)
    # graph size does not grow with the sequence: the same program runs any T
    v2 = rnn_values(T=11)
    np.testing.assert_allclose(prog(v2)["hs"], rnn_reference(v2)[1], rtol=1e-12)


def test_nested_scan():
    g, res = nested_scan_graph()
    prog = bnp.lower(g, res, dtype="f64")
    X = RNG.standard_normal((4, 5))
    out = prog({"X": X, "k": np.array(1.5)})
    acc, sums = nested_reference(X, 1.5)
    np.testing.assert_allclose(out["acc"], acc, rtol=1e-12)
    np.testing.assert_allclose(out["sums"], sums, rtol=1e-12)
    assert prog.source.count("def _scan") == 2


def test_standalone_file_runs_with_numpy_only(tmp_path):
    g, res = rnn_graph()
    prog = bnp.lower(g, {"hs": res["hs"], "loss": res["loss"]}, dtype="f64")
    path = tmp_path / "model.py"
    prog.write(path)
    v = rnn_values()
    np.savez(tmp_path / "feeds.npz", **v)
    check = (
        "import runpy, sys\n"
        "sys.argv = ['model.py', 'feeds.npz', 'out.npz']\n"
        "runpy.run_path('model.py', run_name='__main__')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'compiler', 'backends', 'dsl', 'networkx', 'onnx'))\n"
        "assert not bad, bad\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-I", "-c", check], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["hs"], rnn_reference(v)[1], rtol=1e-12)
    np.testing.assert_allclose(out["loss"], rnn_reference(v)[2], rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_every_prelude_helper_is_self_contained(backend):
    """Each helper, copied into an otherwise empty module, finds every global it reads."""
    import builtins

    from backends.pysource import global_names
    if backend == "numpy":
        from backends.numpy.codegen import NumpyGen as Gen
    else:
        pytest.importorskip("torch")
        from backends.torch.codegen import TorchGen as Gen
    for name in sorted(Gen("f64").prelude):
        gen = Gen("f64")
        gen.helper(name)
        src = "\n".join(list(gen.imports) + gen.extra_imports) + "\n\n" + "\n\n".join(gen.helpers.values())
        ns: dict = {}
        exec(compile(src, f"<helper {name}>", "exec"), ns)
        for fname in [k for k in gen.helpers if not k.startswith("_CONST_")]:
            missing = [n for n in global_names(ns[fname].__code__)
                       if n not in ns and not hasattr(builtins, n)]
            assert not missing, f"helper {fname} (via {name}) reads undefined globals {missing}"


def test_numpy_backend_never_imports_torch():
    code = ("import sys, backends.numpy as b\n"
            "from compiler.primitives import all_primitives\n"
            "all_primitives()\n"
            "assert 'torch' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
