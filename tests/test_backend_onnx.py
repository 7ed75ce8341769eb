"""The ONNX backend on hand-built graphs: symbolic dims, params, scan -> Loop.

Expected values are computed with plain NumPy here, and (once it exists) also with
the NumPy backend. Every model must pass ``check_model(full_check=True)`` and agree
with onnx's ReferenceEvaluator.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import backends.onnx as bo
from backends.onnx.builder import Builder, Names, value_info
from compiler.core.types import parse_dim
from compiler.core.ir import Graph
from compiler.primitives import MissingRule, get_primitive

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers -------------------------------------------------------------------

def needs(*ops):
    for op in ops:
        try:
            get_primitive(op).lowering("onnx")
        except MissingRule:
            pytest.skip(f"`{op}` has no ONNX lowering yet")


def src(g, kind, name, shape, dtype="f32", **extra):
    return g.add(kind, (), {"name": name, "dtype": dtype, "shape": tuple(shape), **extra})


def run_all(g, results, feeds, dtype="f64", **opts):
    """Lower, check, run on onnxruntime and the reference evaluator; return ORT's."""
    model = bo.lower(g, results, dtype, **opts)
    bo.check(model)
    out = bo.Program(model, threads=1)(feeds)
    ref = bo.reference(model, feeds)
    tol = 1e-10 if dtype == "f64" else 1e-5
    for k in out:
        np.testing.assert_allclose(out[k], ref[k], rtol=tol, atol=tol, err_msg=k)
    numpy_backend_agrees(g, results, feeds, out, opts.get("param_values"))
    return model, out


def numpy_backend_agrees(g, results, feeds, out, param_values=None):
    try:
        import backends.numpy as bn
        lower = bn.lower
    except (ImportError, AttributeError):
        return
    feeds = dict(feeds)
    feeds.update(param_values or {})
    try:
        prog = lower(g, results, dtype="f64")
    except MissingRule:
        return
    want = prog(feeds)
    for k in results:
        np.testing.assert_allclose(out[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"numpy {k}")


def dim_params(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in vi.type.tensor_type.shape.dim]


rng = np.random.default_rng(1234)


# ---- MLP with a symbolic batch dim --------------------------------------------

def mlp_graph():
    needs("matmul", "tanh", "add")
    g = Graph("mlp")
    x = src(g, "input", "x", ("B", 4))
    w1 = src(g, "param", "l1.w", (4, 8))
    b1 = src(g, "param", "l1.b", (8,))
    w2 = src(g, "param", "l2.w", (8, 3))
    b2 = src(g, "param", "l2.b", (3,))
    g.dim_sources["B"] = (x, 0)
    h = g.op("tanh", g.op("add", g.op("matmul", x, w1), b1))
    y = g.op("add", g.op("matmul", h, w2), b2)
    return g, {"y": y}


def mlp_values():
    return {"l1.w": rng.normal(size=(4, 8)), "l1.b": rng.normal(size=8),
            "l2.w": rng.normal(size=(8, 3)), "l2.b": rng.normal(size=3)}


def mlp_expect(x, p):
    return np.tanh(x @ p["l1.w"] + p["l1.b"]) @ p["l2.w"] + p["l2.b"]


def test_mlp_params_as_inputs_symbolic_batch():
    g, res = mlp_graph()
    p = mlp_values()
    model = None
    for b in (2, 5):
        x = rng.normal(size=(b, 4))
        model, out = run_all(g, res, {"x": x, **p})
        np.testing.assert_allclose(out["y"], mlp_expect(x, p), rtol=1e-10, atol=1e-12)
    names = [i.name for i in model.graph.input]
    assert names[0] == "x" and set(names) == {"x", "l1.w", "l1.b", "l2.w", "l2.b"}
    assert dim_params(model.graph.input[0]) == ["B", 4]
    assert dim_params(model.graph.output[0]) == ["B", 3]
    assert not model.graph.initializer or all(t.name not in p for t in model.graph.initializer)


def test_mlp_params_as_initializers():
    g, res = mlp_graph()
    p = mlp_values()
    x = rng.normal(size=(3, 4))
    model, out = run_all(g, res, {"x": x}, dtype="f32", param_values=p)
    assert [i.name for i in model.graph.input] == ["x"]
    assert {t.name for t in model.graph.initializer} >= set(p)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    np.testing.assert_allclose(out["y"], mlp_expect(x, p), rtol=1e-4, atol=1e-5)
    # the same graph with params fed (a train-step model takes them as inputs)
    m2 = bo.lower(g, res, "f32", params_as="inputs")
    assert {i.name for i in m2.graph.input} == {"x", *p}


def test_missing_param_value():
    g = Graph()
    x = src(g, "input", "x", (3,))
    w = src(g, "param", "w", (3,))
    with pytest.raises(KeyError, match="w"):
        bo.lower(g, {"y": g.op("add", x, w)}, params_as="initializers", param_values={})


def test_state_as_initializer_and_f32_cast():
    g = Graph()
    x = src(g, "input", "x", ("B", 2))
    s = src(g, "state", "bn.mean", (2,))
    g.dim_sources["B"] = (x, 0)
    y = g.op("add", x, s)
    prog = bo.lower_program(g, {"y": y}, "f32", param_values={"bn.mean": np.array([1.0, 2.0])},
                            threads=1, check_model=True)
    out = prog({"x": np.zeros((3, 2)), "unused": 1})
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], np.tile([1.0, 2.0], (3, 1)))
    with pytest.raises(KeyError, match="x"):
        prog({})


# ---- dims ----------------------------------------------------------------------

def test_parse_dim():
    assert parse_dim(3) == (0, [], 3)  # no monomial: all offset
    assert parse_dim("B") == (1, ["B"], 0)
    assert parse_dim("2*B*T") == (2, ["B", "T"], 0)
    assert parse_dim("T-1") == (1, ["T"], -1)
    assert parse_dim("B*T+2") == (1, ["B", "T"], 2)


def test_dims_from_dim_sources():
    """o.dims / o.dim_scalar read symbols via Shape from the dim_sources inputs."""
    g = Graph()
    x = src(g, "input", "x", ("B", "T", 3))
    g.dim_sources.update(B=(x, 0), T=(x, 1))
    o = Builder(g, "f32", names=Names(["x"]))
    o.env[x] = "x"
    shape = o.dims(("B", 3, "2*T", "T-1", "B*T", 1))
    again = o.dims(("B", 3, "2*T", "T-1", "B*T", 1))
    scalar = o.dim_scalar("B*T")
    static = o.dims((2, 3))
    assert shape == again
    shapes = [n for n in o.nodes if n.op_type == "Shape"]
    assert len(shapes) == 2                     # one per symbol, cached
    ty = onnx.TensorProto.INT64
    graph = onnx.helper.make_graph(
        o.nodes + [onnx.helper.make_node("Identity", [v], [k]) for k, v in
                   (("shape", shape), ("scalar", scalar), ("static", static))],
        "dims", [value_info("x", onnx.TensorProto.FLOAT, ("B", "T", 3))],
        [value_info("shape", ty, [6]), value_info("scalar", ty, []),
         value_info("static", ty, [2])], initializer=o.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", bo.OPSET)],
                                   ir_version=bo.ir_version())
    bo.check(model)
    out = bo.Program(model)({"x": np.zeros((4, 7, 3))})
    np.testing.assert_array_equal(out["shape"], [4, 3, 14, 6, 28, 1])
    assert out["scalar"].shape == () and out["scalar"] == 28
    np.testing.assert_array_equal(out["static"], [2, 3])
    np.testing.assert_array_equal(bo.reference(model, {"x": np.zeros((4, 7, 3))})["shape"],
                                  [4, 3, 14, 6, 28, 1])


def test_arange_symbolic_reads_unused_input():
    """A dim whose source input the results do not otherwise need still gets fed."""
    g = Graph()
    x = src(g, "input", "x", ("B", "T"))
    g.dim_sources.update(B=(x, 0), T=(x, 1))
    t = g.add("arange", (), {"length": "T-1", "dtype": "i64"})
    f = g.add("arange", (), {"length": "2*B", "dtype": "f32"})
    model, out = run_all(g, {"t": t, "f": f}, {"x": np.zeros((3, 5))})
    assert [i.name for i in model.graph.input] == ["x"]
    np.testing.assert_array_equal(out["t"], np.arange(4))
    np.testing.assert_array_equal(out["f"], np.arange(6.0))
    assert dim_params(model.graph.output[0]) == ["T-1"]


def test_symbol_without_dim_sources_found_on_inputs():
    g = Graph()
    src(g, "input", "x", (2, "N"))
    t = g.add("arange", (), {"length": "N", "dtype": "i64"})
    _, out = run_all(g, {"t": t}, {"x": np.zeros((2, 4))})
    np.testing.assert_array_equal(out["t"], np.arange(4))


def test_unknown_symbol_is_an_error():
    g = Graph()
    t = g.add("arange", (), {"length": "Q", "dtype": "i64"})
    with pytest.raises(ValueError, match="Q"):
        bo.lower(g, {"t": t})


# ---- errors and naming ---------------------------------------------------------

def test_missing_rule(monkeypatch):
    p = get_primitive("add")
    monkeypatch.delitem(p.lowerings, "onnx")
    g = Graph()
    x = src(g, "input", "x", (3,))
    with pytest.raises(MissingRule, match="no ONNX lowering for `add`"):
        bo.lower(g, {"y": g.op("add", x, x)})


def test_result_names_and_passthrough():
    g = Graph()
    x = src(g, "input", "x", (3,))
    y = g.op("add", x, x)
    model, out = run_all(g, {"a": y, "b": y, "x_out": x}, {"x": np.arange(3.0)})
    assert [o.name for o in model.graph.output] == ["a", "b", "x_out"]
    np.testing.assert_array_equal(out["x_out"], np.arange(3.0))
    with pytest.raises(ValueError, match="source"):
        bo.lower(g, {"x": y})


def test_only_needed_nodes_and_sources():
    g = Graph()
    x = src(g, "input", "x", (3,))
    z = src(g, "input", "z", (3,))
    g.op("add", z, z)
    y = g.op("add", x, x)
    model = bo.lower(g, {"y": y})
    assert [i.name for i in model.graph.input] == ["x"]
    # the Add writes the result `y` itself (no trailing Identity); z's Add is left out
    assert [(n.op_type, list(n.output)) for n in model.graph.node] == [("Add", ["y"])]


def test_consts_are_shared():
    g = Graph()
    x = src(g, "input", "x", (3,))
    y = g.op("add", g.op("add", x, g.const(1.5, "f32", (3,))), g.const(1.5, "f32", (3,)))
    model, out = run_all(g, {"y": y}, {"x": np.zeros(3)})
    assert len(model.graph.initializer) == 1
    np.testing.assert_array_equal(out["y"], [3.0, 3.0, 3.0])


# ---- scan -> Loop -------------------------------------------------------------

def rnn_body(batch="B", hidden=3):
    """h' = tanh(h * u + x_t * w); y_t = h' + h' (elementwise RNN)."""
    needs("tanh", "mul", "add")
    body = Graph("cell")
    h = src(body, "input", "h", (batch, hidden))
    xt = src(body, "input", "x_t", (batch, hidden))
    u = src(body, "input", "u", (hidden,))
    w = src(body, "input", "w", (hidden,))
    h2 = body.op("tanh", body.op("add", body.op("mul", h, u), body.op("mul", xt, w)))
    body.meta["results"] = [h2, body.op("add", h2, h2)]
    return body


def rnn_graph(reverse=False, axis=1, length="T", batch="B"):
    body = rnn_body(batch)
    g = Graph("rnn")
    xshape = (batch, length, 3) if axis == 1 else (length, batch, 3)
    x = src(g, "input", "x", xshape)
    h0 = src(g, "input", "h0", (batch, 3))
    u = src(g, "param", "u", (3,))
    w = src(g, "param", "w", (3,))
    if isinstance(batch, str):
        g.dim_sources[batch] = (x, 0 if axis == 1 else 1)
    if isinstance(length, str):
        g.dim_sources[length] = (x, axis)
    s = g.add("scan", (h0, x, u, w), dict(body=body, n_carry=1, n_x=1, n_const=2, axis=axis,
                                          reverse=reverse, length=length))
    return g, {"h": g.op("tuple_get", s, index=0), "ys": g.op("tuple_get", s, index=1)}


def rnn_expect(x, h0, u, w, reverse, axis):
    xs = np.moveaxis(x, axis, 0)
    h, ys = h0, [None] * len(xs)
    order = range(len(xs))[::-1] if reverse else range(len(xs))
    for t in order:
        h = np.tanh(h * u + xs[t] * w)
        ys[t] = 2 * h
    return h, np.moveaxis(np.stack(ys), 0, axis)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_scan_rnn(reverse, axis):
    g, res = rnn_graph(reverse, axis)
    for b, t in ((2, 5), (1, 3)):
        x = rng.normal(size=(b, t, 3) if axis == 1 else (t, b, 3))
        feeds = {"x": x, "h0": rng.normal(size=(b, 3)), "u": rng.normal(size=3),
                 "w": rng.normal(size=3)}
        model, out = run_all(g, res, feeds)
        h, ys = rnn_expect(x, feeds["h0"], feeds["u"], feeds["w"], reverse, axis)
        np.testing.assert_allclose(out["h"], h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["ys"], ys, rtol=1e-12, atol=1e-12)
    assert [n.op_type for n in model.graph.node].count("Loop") == 1
    assert dim_params(model.graph.output[1]) == (["B", "T", 3] if axis == 1 else ["T", "B", 3])


def test_scan_f32_with_initializers():
    g, res = rnn_graph()
    x, h0 = rng.normal(size=(2, 4, 3)), np.zeros((2, 3))
    p = {"u": rng.normal(size=3), "w": rng.normal(size=3)}
    model, out = run_all(g, res, {"x": x, "h0": h0}, dtype="f32", param_values=p)
    h, ys = rnn_expect(x, h0, p["u"], p["w"], False, 1)
    np.testing.assert_allclose(out["ys"], ys, rtol=1e-5, atol=1e-5)


def test_model_size_independent_of_length():
    sizes = []
    for t in (4, 40, 400):
        g, res = rnn_graph(length=t, batch=2)
        model = bo.lower(g, res, "f32")
        bo.check(model)
        sizes.append(model.ByteSize())
    assert max(sizes) - min(sizes) <= 8, sizes
    g, res = rnn_graph(length=40, batch=2)
    x = rng.normal(size=(2, 40, 3))
    feeds = {"x": x, "h0": np.zeros((2, 3)), "u": np.ones(3), "w": np.ones(3)}
    _, out = run_all(g, res, feeds)
    np.testing.assert_allclose(out["ys"], rnn_expect(x, feeds["h0"], 1, 1, False, 1)[1],
                               rtol=1e-12, atol=1e-12)


def test_scan_without_xs_and_scalar_ys():
    """A counter: carry c (scalar), no scanned input, ys are the 0-D carries."""
    needs("add")
    body = Graph("count")
    c = src(body, "input", "c", ())
    k = src(body, "input", "k", ())
    c2 = body.op("add", c, k)
    body.meta["results"] = [c2, c2]
    g = Graph()
    x = src(g, "input", "x", ("N",))
    c0 = src(g, "input", "c0", ())
    g.dim_sources["N"] = (x, 0)
    s = g.add("scan", (c0, g.const(2.0, "f32")), dict(body=body, n_carry=1, n_x=0, n_const=1,
                                                     axis=0, reverse=True, length="N"))
    res = {"c": g.op("tuple_get", s, index=0), "ys": g.op("tuple_get", s, index=1)}
    model, out = run_all(g, res, {"x": np.zeros(4), "c0": np.array(1.0)})
    assert out["c"] == 9.0
    np.testing.assert_array_equal(out["ys"], [9.0, 7.0, 5.0, 3.0])   # reversed order


def test_nested_scan():
    """Outer scan over T; its body runs an inner scan over S of each x_t [S, D]."""
    needs("tanh", "add", "mul")
    inner = Graph("inner")
    c = src(inner, "input", "c", ("D",))
    xs = src(inner, "input", "x_ts", ("D",))
    a = src(inner, "input", "a", ("D",))
    c2 = inner.op("tanh", inner.op("add", c, inner.op("mul", xs, a)))
    inner.meta["results"] = [c2, inner.op("mul", c2, a)]

    outer = Graph("outer")
    oc = src(outer, "input", "c", ("D",))
    ox = src(outer, "input", "x_t", ("S", "D"))
    oa = src(outer, "input", "a", ("D",))
    s = outer.add("scan", (oc, ox, oa), dict(body=inner, n_carry=1, n_x=1, n_const=1, axis=0,
                                             reverse=False, length="S"))
    c_new = outer.op("tuple_get", s, index=0)
    outer.meta["results"] = [c_new, outer.op("tuple_get", s, index=1)]

    g = Graph()
    x = src(g, "input", "x", ("T", "S", "D"))
    c0 = src(g, "input", "c0", ("D",))
    a0 = src(g, "param", "a", ("D",))
    g.dim_sources.update(T=(x, 0), S=(x, 1), D=(x, 2))
    top = g.add("scan", (c0, x, a0), dict(body=outer, n_carry=1, n_x=1, n_const=1, axis=0,
                                          reverse=True, length="T"))
    res = {"c": g.op("tuple_get", top, index=0), "ys": g.op("tuple_get", top, index=1)}
    X, C, A = rng.normal(size=(3, 4, 2)), rng.normal(size=2), rng.normal(size=2)
    model, out = run_all(g, res, {"x": X, "c0": C, "a": A})
    cc, Y = C, np.zeros_like(X)
    for t in reversed(range(3)):
        for s_ in range(4):
            cc = np.tanh(cc + X[t, s_] * A)
            Y[t, s_] = cc * A
    np.testing.assert_allclose(out["c"], cc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["ys"], Y, rtol=1e-12, atol=1e-12)
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body = loop.attribute[0].g
    assert [n.op_type for n in body.node].count("Loop") == 1
    # dims are read once, in the main graph, not inside the loop bodies
    assert not any(n.op_type == "Shape" for n in body.node)


# ---- no torch ------------------------------------------------------------------

def test_never_imports_torch():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import backends.onnx as bo
        from compiler.core.ir import Graph
        g = Graph()
        x = g.add("input", (), {"name": "x", "dtype": "f32", "shape": ("B", 3)})
        g.dim_sources["B"] = (x, 0)
        y = g.op("add", x, g.add("arange", (), {"length": 3, "dtype": "f32"}))
        prog = bo.lower_program(g, {"y": y}, check_model=True)
        out = prog({"x": np.zeros((2, 3))})
        bo.reference(prog.model, {"x": np.zeros((2, 3))})
        assert out["y"].shape == (2, 3)
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not bad, bad
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_program_cuda_request_falls_back_to_cpu():
    g = Graph()
    x = src(g, "input", "x", (2,))
    prog = bo.lower_program(g, {"y": g.op("add", x, x)}, device="cuda")
    assert "CPUExecutionProvider" in prog.providers
    np.testing.assert_array_equal(prog({"x": np.ones(2)})["y"], [2.0, 2.0])
    assert "Add" in prog.source


def test_scan_matmul_rnn_with_symbolic_reshape_in_body():
    """Dims used inside a loop body (reshape to B*H) are read in the main graph."""
    needs("matmul", "tanh", "reshape")
    body = Graph("cell")
    h = src(body, "input", "h", ("B", 4))
    xt = src(body, "input", "x_t", ("B", 3))
    u = src(body, "input", "U", (4, 4))
    w = src(body, "input", "W", (3, 4))
    flat = body.op("reshape", h, shape=("4*B",))
    h_ = body.op("reshape", flat, shape=("B", 4))
    h2 = body.op("tanh", body.op("add", body.op("matmul", h_, u), body.op("matmul", xt, w)))
    body.meta["results"] = [h2, body.op("reshape", h2, shape=("4*B",))]
    g = Graph()
    x = src(g, "input", "x", ("T", "B", 3))
    h0 = src(g, "input", "h0", ("B", 4))
    U, W = src(g, "param", "U", (4, 4)), src(g, "param", "W", (3, 4))
    g.dim_sources.update(T=(x, 0), B=(x, 1))
    s = g.add("scan", (h0, x, U, W), dict(body=body, n_carry=1, n_x=1, n_const=2, axis=0,
                                          reverse=False, length="T"))
    res = {"h": g.op("tuple_get", s, index=0), "ys": g.op("tuple_get", s, index=1)}
    X, H0 = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 4))
    p = {"U": rng.normal(size=(4, 4)) * 0.5, "W": rng.normal(size=(3, 4))}
    model, out = run_all(g, res, {"x": X, "h0": H0}, param_values=p)
    hh, ys = H0, []
    for t in range(6):
        hh = np.tanh(hh @ p["U"] + X[t] @ p["W"])
        ys.append(hh.reshape(-1))
    np.testing.assert_allclose(out["h"], hh, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["ys"], np.stack(ys), rtol=1e-12, atol=1e-12)
    assert dim_params(model.graph.output[1]) == ["T", "4*B"]
    body_nodes = next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g.node
    assert not any(n.op_type in ("Shape", "Concat") for n in body_nodes)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradient_bptt(reverse):
    """autodiff's reverse scan (BPTT) lowers to a second Loop; checked by finite differences."""
    needs("sum", "tanh", "mul")
    from compiler.transform.autodiff import grad

    g, res = rnn_graph(reverse=reverse, axis=1)
    loss = g.op("add", g.op("sum", res["ys"], axis=None, keepdims=False),
                g.op("sum", g.op("mul", res["h"], res["h"]), axis=None, keepdims=False))
    u, w, h0 = g.by_name("param")["u"], g.by_name("param")["w"], g.by_name("input")["h0"]
    du, dw, dh0 = grad(g, loss, [u, w, h0])
    results = {"loss": loss, "du": du, "dw": dw, "dh0": dh0}
    feeds = {"x": rng.normal(size=(2, 5, 3)), "h0": rng.normal(size=(2, 3)),
             "u": rng.normal(size=3), "w": rng.normal(size=3)}
    model, out = run_all(g, results, feeds)
    assert [n.op_type for n in model.graph.node].count("Loop") == 2
    prog = bo.Program(bo.lower(g, {"loss": loss}, "f64"))
    eps = 1e-6
    for name, key in (("u", "du"), ("w", "dw"), ("h0", "dh0")):
        num = np.zeros_like(feeds[name])
        for i in np.ndindex(num.shape):
            plus, minus = dict(feeds), dict(feeds)
            plus[name] = feeds[name].copy()
            plus[name][i] += eps
            minus[name] = feeds[name].copy()
            minus[name][i] -= eps
            num[i] = (prog(plus)["loss"] - prog(minus)["loss"]) / (2 * eps)
        np.testing.assert_allclose(out[key], num, rtol=1e-6, atol=1e-7, err_msg=key)


def test_f32_fallback_for_ops_without_double_kernels():
    """erf has no float64 onnxruntime kernel: lower_program computes it in float32."""
    needs("erf")
    import math
    g = Graph()
    x = src(g, "input", "x", (5,))
    y = g.op("add", g.op("erf", x), x)
    xs = np.linspace(-2, 2, 5)
    model = bo.lower(g, {"y": y}, "f64", f32_ops=True)
    bo.check(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Cast") == 2 and "Erf" in ops
    prog = bo.lower_program(g, {"y": y}, "f64")
    out = prog({"x": xs})["y"]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [math.erf(v) + v for v in xs], rtol=1e-6, atol=1e-7)
    pure = bo.lower(g, {"y": y}, "f64")
    assert "Cast" not in [n.op_type for n in pure.graph.node]
