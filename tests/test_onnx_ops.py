"""Every op case (tests/opcases/*.py) as a one-node ONNX model, and its VJP graph.

For each case the node is lowered in float64 (float32 for the ops listed in
`F32_ONLY`, where onnxruntime has no float64 kernel), must pass
``check_model(full_check=True)``, run on onnxruntime, agree with onnx's
ReferenceEvaluator and with the NumPy backend (float64). The same is done for the
case's VJP subgraph (``autodiff.vjp_rule(get_primitive(op))(g, node, ct)``), so gradient
graphs lower to ONNX too. No torch reference is used (the case modules import torch
for their own `ref`s; `tests/test_backend_onnx.py` checks the backend never imports it).
"""
from __future__ import annotations

import importlib
import pkgutil
import zlib

import numpy as np
import pytest

import backends.onnx as bo
import tests.opcases as opcases
from compiler.transform.autodiff import vjp_rule
from compiler.core.ir import Graph
from compiler.primitives import MissingRule, get_primitive

# op -> (why it runs in float32, atol, rtol of the comparisons with float64 NumPy)
F32_ONLY: dict[str, tuple[str, float, float]] = {
    "erf": ("onnxruntime's CPU Erf has a float32 kernel only (no double)", 1e-5, 1e-5),
    "gelu": ("its decomposition uses Erf: float32 only", 1e-5, 1e-5),
    "gelu_grad": ("its decomposition uses Erf: float32 only", 1e-5, 1e-5),
    "conv": ("onnxruntime's CPU Conv/ConvTranspose (the VJP) are float32 only", 1e-4, 1e-4),
    "conv_transpose": ("onnxruntime's CPU ConvTranspose/Conv are float32 only", 1e-4, 1e-4),
    "conv_weight_grad": ("onnxruntime's CPU Conv/ConvTranspose are float32 only", 1e-4, 1e-4),
    "avg_pool": ("onnxruntime's CPU AveragePool is float32 only", 1e-5, 1e-5),
}

# case id -> (why onnxruntime cannot meet the case's own tolerance, atol, rtol)
ORT_TOLERANCE: dict[str, tuple[str, float, float]] = {
    "sigmoid-tails": ("onnxruntime's double Sigmoid flushes sigmoid(-40) = 4e-18 to 0 and is "
                      "off by 4e-8 relative at -20", 1e-16, 1e-7),
    "softplus-tails": ("its VJP is ct * sigmoid(x): as sigmoid-tails", 1e-16, 1e-7),
    # LayerNormalization's double kernel takes var = E[x^2] - E[x]^2, which cancels:
    # 1.5e-9 absolute on unit-scale outputs with eps = 0.1
    "layer_norm": ("onnxruntime's LayerNormalization: variance as E[x^2] - E[x]^2", 1e-8, 1e-7),
    "layer_norm-eps": ("as layer_norm", 1e-8, 1e-7),
}

# case id (or "vjp:<case id>" for the VJP graph only) -> why onnx's ReferenceEvaluator is
# wrong there (onnxruntime is still compared with NumPy; only ORT == reference is dropped)
REFERENCE_WRONG: dict[str, str] = {
    "logsumexp-scalar-axall": "reference ReduceLogSumExp fails on a 0-D input "
                              "('return arrays must be of ArrayType')",
    "logsumexp-neg_inf": "reference ReduceLogSumExp returns nan for an all -inf row",
    "log_softmax-2x5-ax0-large": "reference LogSoftmax is not shifted: -inf for x - max < -745",
    "max_pool-1d": "reference MaxPool with 1-D padding indexes out of bounds (IndexError)",
    # reference ConvTranspose ignores `group` ('cannot reshape array of size 6 into ...')
    "conv_transpose-2d_groups_dilation": "reference ConvTranspose does not support group > 1",
    "vjp:conv-2d_dilation_groups": "the VJP uses ConvTranspose with group > 1 (see above)",
    "vjp:conv-1d_groups": "the VJP uses ConvTranspose with group > 1",
    "vjp:conv_weight_grad-2d_stride_groups": "the VJP uses ConvTranspose with group > 1",
}


def _cases():
    out, seen = [], set()
    for m in sorted(pkgutil.iter_modules(opcases.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"tests.opcases.{m.name}")
        for case in getattr(mod, "CASES", []):
            cid = case.id
            k = 2
            while cid in seen:
                cid, k = f"{case.id}#{k}", k + 1
            seen.add(cid)
            out.append(pytest.param(case, id=cid))
    return out


CASES = _cases()

_DT = {"f": "f64", "i": "i64", "u": "i64", "b": "bool"}


def _dtype_of(v: np.ndarray) -> str:
    if v.dtype == np.int32:
        return "i32"
    if v.dtype == np.float32:
        return "f32"
    return _DT[v.dtype.kind]


def build(case):
    """(graph, node id, feeds) for one case: each argument is a named input."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    vals = [np.asarray(a(rng) if callable(a) else a) for a in case.args]
    g = Graph(case.id)
    ids, feeds = [], {}
    for i, v in enumerate(vals):
        if v.dtype.kind == "f":
            v = v.astype(np.float64)
        name = f"a{i}"
        ids.append(g.add("input", (), {"name": name, "dtype": _dtype_of(v), "shape": v.shape}))
        feeds[name] = v
    node = g.add(case.op, ids, dict(case.attrs))
    return g, node, feeds


def results_of(g, node, prefix="y"):
    t = g.type(node)
    if isinstance(t, tuple):
        return {f"{prefix}{i}": g.op("tuple_get", node, index=i) for i in range(len(t))}
    return {prefix: node}


def run_dtype(case):
    """(run dtype, atol, rtol) for a case: its own tolerance unless documented above."""
    dtype, atol, rtol = "f64", case.atol, case.rtol
    for table in (F32_ONLY, ORT_TOLERANCE):
        why = table.get(case.op) if table is F32_ONLY else table.get(case.id)
        if why is not None:
            atol, rtol = max(why[1], atol), max(why[2], rtol)
            dtype = "f32" if table is F32_ONLY else dtype
    return dtype, atol, rtol


def numpy_program(g, results):
    try:
        import backends.numpy as bn
        lower = bn.lower
    except (ImportError, AttributeError):
        pytest.skip("the NumPy backend is not there yet (ONNX model checked, ORT == reference)")
    return lower(g, results, dtype="f64")


def check_against_numpy(case, g, results, feeds, what):
    if case.skip.get("onnx"):
        pytest.skip(case.skip["onnx"])
    dtype, atol, rtol = run_dtype(case)
    model = bo.lower(g, results, dtype, name=case.id)
    bo.check(model)
    prog = bo.Program(model, threads=1)
    got = prog(feeds)
    wrong = case.id in REFERENCE_WRONG or f"{what}:{case.id}" in REFERENCE_WRONG
    ref = {} if wrong else bo.reference(model, feeds)
    for k in ref:
        assert got[k].shape == ref[k].shape, (what, k)
        np.testing.assert_allclose(_f(got[k]), _f(ref[k]), atol=atol, rtol=rtol,
                                   err_msg=f"{what} {k}: onnxruntime vs ReferenceEvaluator")
    for k in results:
        t = g.type(results[k])
        want_dt = np.dtype(np.float64 if dtype == "f64" else np.float32) if t.is_float else None
        if want_dt is not None:
            assert got[k].dtype == want_dt, (what, k, got[k].dtype)
    want = numpy_program(g, results)(feeds)
    for k in results:
        assert tuple(got[k].shape) == tuple(np.shape(want[k])), (what, k)
        np.testing.assert_allclose(_f(got[k]), _f(want[k]), atol=atol, rtol=rtol,
                                   err_msg=f"{what} {k}: onnxruntime vs NumPy backend")


def _f(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind in "biuf" else a


@pytest.mark.parametrize("case", CASES)
def test_value(case):
    g, node, feeds = build(case)
    check_against_numpy(case, g, results_of(g, node), feeds, "value")


@pytest.mark.parametrize("case", CASES)
def test_vjp(case):
    prim = get_primitive(case.op)
    if not prim.differentiable:
        pytest.skip(f"nondiff: {prim.nondiff}")
    # case.skip["grad"] is about finite differences; the VJP graph still has to lower.
    g, node, feeds = build(case)
    t = g.type(node)
    if isinstance(t, tuple):
        pytest.skip("the VJP of a multi-result node is assembled by autodiff")
    if not t.is_float:
        pytest.skip(f"integer/boolean result ({t.dtype}): no cotangent")
    try:
        rule = vjp_rule(prim)
    except MissingRule as e:
        pytest.skip(str(e))
    ct = g.add("input", (), {"name": "ct", "dtype": t.dtype, "shape": t.shape})
    rng = np.random.default_rng(zlib.crc32(("ct" + case.id).encode()))
    feeds["ct"] = rng.normal(size=[int(d) for d in t.shape])
    cts = rule(g, g.node(node), ct)
    results = {f"d{i}": c for i, c in enumerate(cts) if c is not None}
    if not results:
        pytest.skip("no cotangent flows to any argument")
    check_against_numpy(case, g, results, feeds, "vjp")


def test_cases_collected():
    """Sanity: the runner sees the case modules (empty until their helpers fill them)."""
    mods = [m.name for m in pkgutil.iter_modules(opcases.__path__)]
    assert all(isinstance(p.values[0].op, str) for p in CASES), mods
