"""Every op case (tests/opcases/*.py), checked on the NumPy and PyTorch backends.

For each case the primitive is applied once to named inputs (one-node graph):

* value: the NumPy lowering in float64 against ``case.ref`` on float64 torch
  tensors (``case.atol/rtol``), plus the result's shape and dtype against the
  node's inferred type;
* grad: the VJP rule, applied directly (``autodiff.vjp_rule(get_primitive(op))(g, node, ct)``
  with a cotangent input), must return one entry per argument, ``None`` for
  integer/boolean/static ones and the argument's shape otherwise; its value must
  match central finite differences of ``sum(out * ct)`` (eps 1e-6, atol 1e-5,
  rtol 1e-3: torch.autograd.gradcheck's defaults);
* second_order (cases with ``second_order=True``): the VJP graph differentiated
  again with `compiler.autodiff.vjp`, seeded with random weights on the
  first-order cotangents, against finite differences of the first-order program;
* torch: the PyTorch lowering in float64 agrees with the NumPy one.

A case opts out of a check only with ``case.skip[check] = reason``. A check that
cannot apply (a gradient of a nondifferentiable primitive or of a case without
float arguments) is reported as skipped with an "n/a" reason.
"""
from __future__ import annotations

import importlib
import pkgutil
import traceback
import zlib

import numpy as np
import pytest
import torch

import backends.numpy as bnp
import backends.torch as btorch
import tests.opcases as opcases
from compiler.transform.autodiff import vjp_rule
from compiler.transform import autodiff
from compiler.core.ir import SOURCE_OPS, Graph
from compiler.primitives import MissingRule, all_primitives, get_primitive

EPS, GRAD_ATOL, GRAD_RTOL = 1e-6, 1e-5, 1e-3

# Differentiable primitives whose derivative no finite-difference case can check.
NOT_FD_CHECKED = {
    "stop_gradient": "its derivative is zero by definition; finite differences see the identity",
    "tuple_get": "autodiff gathers the cotangents of projections itself (no VJP rule)",
    "scan": "its VJP (a reverse scan) lives in compiler/transform/autodiff.py, not in a VJP rule",
    # the fused recurrent composites: values and all six gradients against their
    # decomposition (a scan, itself finite-difference checked through the globbed
    # gradcheck of lstm.dl / gru.dl), and lstm_grad's own derivative against finite
    # differences, in tests/test_composites.py (test_rnn_native_matches_decomposition,
    # test_second_order_through_the_fused_lstm_vjp)
    "lstm": "checked against its decomposition in tests/test_composites.py",
    "gru": "checked against its decomposition in tests/test_composites.py",
    "lstm_grad": "lstm's VJP; second order against finite differences in tests/test_composites.py",
    "gru_grad": "gru's VJP; checked against the decomposition's VJP in tests/test_composites.py",
    "layer_norm_grad": "layer_norm's VJP (values in tests/opcases); second order against "
                       "finite differences in tests/test_composites.py",
    "attention_grad": "attention's VJP (values in tests/opcases); second order against "
                      "finite differences in tests/test_composites.py",
    "pack": "bundles lstm_grad's results; autodiff gathers its projections' cotangents (no rule)",
}


# ---- collecting the cases -------------------------------------------------------

def _collect():
    params, errors, seen = [], [], set()
    for m in sorted(pkgutil.iter_modules(opcases.__path__), key=lambda m: m.name):
        try:
            mod = importlib.import_module(f"tests.opcases.{m.name}")
        except Exception:  # a case file being written must not hide the others
            errors.append(f"tests/opcases/{m.name}.py:\n{traceback.format_exc()}")
            continue
        for case in getattr(mod, "CASES", []):
            cid, k = case.id, 2
            while cid in seen:
                cid, k = f"{case.id}#{k}", k + 1
            seen.add(cid)
            params.append(pytest.param(case, id=cid))
    return params, errors


CASES, IMPORT_ERRORS = _collect()
SECOND_ORDER_CASES = [p for p in CASES if p.values[0].second_order]


def test_opcase_modules_import():
    assert not IMPORT_ERRORS, "\n".join(IMPORT_ERRORS)


# ---- building and running one-node graphs -----------------------------------------

_DT = {"f": "f64", "i": "i64", "u": "i64", "b": "bool"}
_NP_OF = {"f64": np.float64, "f32": np.float64, "f16": np.float64, "i64": np.int64,
          "i32": np.int32, "bool": np.bool_}


def _dtype_of(v: np.ndarray) -> str:
    return "i32" if v.dtype == np.int32 else _DT[v.dtype.kind]


def _skip(case, check):
    if check in case.skip:
        pytest.skip(case.skip[check])


def build(case):
    """(graph, arg input ids, node id, feeds): each argument is a named input."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    g = Graph(case.id)
    ids, feeds = [], {}
    for i, a in enumerate(case.args):
        v = np.asarray(a(rng) if callable(a) else a)
        if v.dtype.kind == "f":
            v = v.astype(np.float64)
        name = f"a{i}"
        ids.append(g.add("input", (), {"name": name, "dtype": _dtype_of(v), "shape": v.shape}))
        feeds[name] = v
    node = g.add(case.op, ids, dict(case.attrs))
    return g, ids, node, feeds


def results_of(g, node, prefix="y"):
    t = g.type(node)
    if isinstance(t, tuple):
        return {f"{prefix}{i}": g.op("tuple_get", node, index=i) for i in range(len(t))}
    return {prefix: node}


_VALUES: dict[int, tuple] = {}


def numpy_value(case):
    """(graph, ids, node, feeds, results, outputs) of the NumPy f64 run, cached."""
    key = id(case)
    if key not in _VALUES:
        g, ids, node, feeds = build(case)
        res = results_of(g, node)
        out = bnp.lower(g, res, dtype="f64")(feeds)
        _VALUES[key] = (g, ids, node, feeds, res, out)
    return _VALUES[key]


def _is_float(g, n) -> bool:
    return g.type(n).is_float


def _close(actual, expected, atol, rtol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "biu" and actual.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   atol=atol, rtol=rtol, err_msg=what)


# ---- value ---------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_value(case):
    _skip(case, "value")
    assert case.ref is not None, "case has no ref (give one or skip['value'])"
    g, ids, node, feeds, res, out = numpy_value(case)
    tensors = [torch.from_numpy(np.array(feeds[f"a{i}"])) for i in range(len(ids))]
    with torch.no_grad():
        ref = case.ref(*tensors)
    refs = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    assert len(refs) == len(res), f"ref gives {len(refs)} results, the node {len(res)}"
    for (name, nid), r in zip(res.items(), refs):
        t = g.type(nid)
        v = out[name]
        assert v.shape == tuple(t.shape), f"{name}: shape {v.shape}, inferred {t}"
        assert v.dtype == _NP_OF[t.dtype], f"{name}: dtype {v.dtype}, inferred {t}"
        expected = r.detach().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
        _close(v, expected, case.atol, case.rtol, f"{case.id} {name} vs ref")


# ---- first-order gradient -------------------------------------------------------

def _fd(fn, feeds, name, eps=EPS):
    """Central differences of scalar fn(feeds) w.r.t. feeds[name], element by element."""
    x = feeds[name]
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = fn(feeds)
        flat[i] = old - eps
        lo = fn(feeds)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return grad


def _grad_graph(case):
    """Forward graph plus the VJP of its node: (g, ids, node, feeds, cts, ct_input)."""
    prim = get_primitive(case.op)
    g, ids, node, feeds = build(case)
    t = g.type(node)
    if isinstance(t, tuple):
        pytest.skip("n/a: multi-result primitive (its VJP is applied by autodiff)")
    if not any(_is_float(g, a) for a in ids) or not t.is_float:
        pytest.skip("n/a: no float argument or result")
    rng = np.random.default_rng(zlib.crc32(b"ct" + case.id.encode()))
    ct = g.add("input", (), {"name": "ct", "dtype": "f64", "shape": t.shape})
    feeds["ct"] = rng.standard_normal(tuple(t.shape))
    cts = vjp_rule(prim)(g, g.node(node), ct)
    cts = list(cts)
    assert len(cts) == len(ids), f"the VJP returned {len(cts)} cotangents for {len(ids)} arguments"
    for i, (a, c) in enumerate(zip(ids, cts)):
        if not _is_float(g, a) or i in prim.static_args:
            assert c is None, f"argument {i} ({g.type(a)}) cannot take a cotangent, got {g.type(c)}"
        elif c is not None:
            assert g.type(c).is_float and tuple(g.type(c).shape) == tuple(g.type(a).shape), (
                f"cotangent of argument {i} is {g.type(c)}, the argument is {g.type(a)}")
    return g, ids, node, feeds, cts, ct


def _differentiable(case):
    prim = get_primitive(case.op)
    if not prim.differentiable:
        assert prim.vjp_rule is None, f"{case.op} is nondiff ({prim.nondiff}) yet has a VJP rule"
        pytest.skip(f"n/a: {case.op} is not differentiable ({prim.nondiff})")
    return prim


@pytest.mark.parametrize("case", CASES)
def test_grad(case):
    _skip(case, "grad")
    prim = _differentiable(case)
    g, ids, node, feeds, cts, ct = _grad_graph(case)
    wrt = [i for i, a in enumerate(ids) if _is_float(g, a) and i not in prim.static_args]
    got = {f"d{i}": cts[i] for i in wrt if cts[i] is not None}
    analytic = bnp.lower(g, got, dtype="f64")(feeds) if got else {}
    fwd = bnp.lower(g, {"y": node}, dtype="f64")
    f = lambda fd: float(np.sum(fwd(fd)["y"] * fd["ct"]))  # noqa: E731
    for i in wrt:
        numeric = _fd(f, dict(feeds), f"a{i}")
        a = analytic.get(f"d{i}", np.zeros_like(numeric))
        _close(a, numeric, GRAD_ATOL, GRAD_RTOL, f"{case.id}: VJP of argument {i} vs finite differences")


# ---- second order ----------------------------------------------------------------

@pytest.mark.parametrize("case", SECOND_ORDER_CASES)
def test_second_order(case):
    _skip(case, "second_order")
    prim = _differentiable(case)
    g, ids, node, feeds, cts, ct = _grad_graph(case)
    rng = np.random.default_rng(zlib.crc32(b"w" + case.id.encode()))
    seeds, first = [], {}
    for i, c in enumerate(cts):
        if c is None:
            continue
        w = g.add("input", (), {"name": f"w{i}", "dtype": "f64", "shape": g.type(c).shape})
        feeds[f"w{i}"] = rng.standard_normal(tuple(g.type(c).shape))
        seeds.append((c, w))
        first[f"d{i}"] = c
    if not seeds:
        pytest.skip("n/a: the VJP passes no gradient")
    wrt_names = {ct: "ct"} | {a: f"a{i}" for i, a in enumerate(ids)
                              if _is_float(g, a) and i not in prim.static_args}
    # compiler.autodiff applies the VJP rules again (the same node may be the
    # cotangent of two arguments, as in add: its seeds are summed)
    second = autodiff.vjp(g, [c for c, _ in seeds], [w for _, w in seeds], list(wrt_names))
    got = {f"dd_{wrt_names[w]}": c for w, c in zip(wrt_names, second)}
    analytic = bnp.lower(g, got, dtype="f64")(feeds) if got else {}
    prog1 = bnp.lower(g, first, dtype="f64")

    def s(fd):
        out = prog1(fd)
        return float(sum(np.sum(out[f"d{i}"] * fd[f"w{i}"]) for i, c in enumerate(cts)
                         if c is not None))

    for w, name in wrt_names.items():
        numeric = _fd(s, dict(feeds), name)
        a = analytic.get(f"dd_{name}", np.zeros_like(numeric))
        _close(a, numeric, GRAD_ATOL, GRAD_RTOL,
               f"{case.id}: second-order derivative w.r.t. {name} vs finite differences")


# ---- torch agrees with numpy -------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_torch(case):
    _skip(case, "torch")
    g, ids, node, feeds, res, out = numpy_value(case)
    module = btorch.lower(g, res, dtype="f64")
    with torch.no_grad():
        got = module(feeds)
    for name in res:
        t = g.type(res[name])
        v = got[name].numpy()
        assert v.dtype == _NP_OF[t.dtype], f"{name}: torch dtype {v.dtype}, inferred {t}"
        _close(v, out[name], case.atol, case.rtol, f"{case.id} {name}: torch vs numpy")


# ---- the registry ------------------------------------------------------------------

def test_every_primitive_lowers():
    missing = []
    for name, prim in sorted(all_primitives().items()):
        if name in SOURCE_OPS or prim.decomposition is not None:
            continue  # a composite without a native rule inlines its decomposition
        for backend in ("numpy", "torch"):
            try:
                prim.lowering(backend)
            except MissingRule as e:
                missing.append(str(e))
    assert not missing, "missing lowerings:\n" + "\n".join(missing)


def test_every_differentiable_primitive_is_grad_checked():
    checked = {p.values[0].op for p in CASES if "grad" not in p.values[0].skip}
    missing = sorted(name for name, prim in all_primitives().items()
                     if prim.differentiable and name not in SOURCE_OPS
                     and name not in NOT_FD_CHECKED and name not in checked)
    assert not missing, ("differentiable primitives without a grad-checked case in "
                         "tests/opcases: " + ", ".join(missing))
