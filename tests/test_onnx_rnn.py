"""The ONNX lowerings of `lstm` / `gru` (compiler/primitives/_onnx_rnn.py): onnxruntime's
fused LSTM / GRU kernels, against the std cell's scan and autodiff's reverse scan on
NumPy in float64 (tests/test_composites.py's `_build_rnn` graphs: every result and the
cotangents of all six operands).

onnxruntime's RNN kernels are float32-only, so a float32 model runs them: bound 2e-5
of the largest magnitude. float32 rounding is ~6e-8 a value; T = 5 steps of sums of
D + H = 10 products and the reverse scan through them grow it to the ~1e-6 measured;
a swapped gate, a missed forget bias or a time flip is O(0.1-1). A float64 model
inlines the decompositions instead (test_composites: 1e-10) and has no RNN node.
"""
from __future__ import annotations

import numpy as np
import pytest

import backends.onnx as box
from tests.test_composites import _build_rnn, _run

CASES = [("lstm", 0.0, False), ("lstm", 1.0, True), ("lstm", -0.5, False),
         ("gru", 0.0, False), ("gru", 0.0, True)]


def _op_types(model):
    out = set()

    def walk(graph):
        for node in graph.node:
            out.add(node.op_type)
            for a in node.attribute:
                if a.g is not None and a.g.node:
                    walk(a.g)
    walk(model.graph)
    return out


@pytest.mark.parametrize("op,forget_bias,reverse", CASES)
def test_fused_onnx_rnn_matches_decomposition(op, forget_bias, reverse):
    g_ref, r_ref, feeds = _build_rnn(op, True, reverse, forget_bias)
    ref = _run("numpy", g_ref, r_ref, feeds, np.float64)
    g, r, _ = _build_rnn(op, False, reverse, forget_bias)
    fwd = {k: r[k] for k in r if not k.startswith("d_")}
    assert op.upper() in _op_types(box.lower(g, fwd, "f32"))
    assert op.upper() not in _op_types(box.lower(g, fwd, "f64"))
    got = _run("onnx", g, r, feeds, np.float32)
    assert set(got) == set(ref)
    for k in ref:
        scale = max(1.0, float(np.max(np.abs(ref[k]))))
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=2e-5 * scale, err_msg=k)


@pytest.mark.parametrize("op,reverse,forget_bias", [("lstm", False, 0.0), ("lstm", True, 1.0),
                                                    ("gru", False, 0.0), ("gru", True, 0.0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_native_rnn_grad_matches_decomposition(dtype, op, reverse, forget_bias):
    """`lstm_grad` / `gru_grad` (backends/onnx/rnn_grad.py): in a train step (the
    forward on the same operands lowered first) they read that node's hidden states
    and run BPTT as Scans (no Loop: the decomposition's VJP is not inlined; in
    float64 the forward itself is the inlined decomposition, a Loop). Alone (a program
    of the cotangents only) lstm_grad recomputes the states with its forward Scan,
    gru_grad inlines its decomposition. Their ops all have float64 kernels: 1e-10
    there (summation order only, as test_composites), 2e-5 of the largest magnitude
    in float32 (as above)."""
    g_ref, r_ref, feeds = _build_rnn(op, True, reverse, forget_bias)
    ref = _run("numpy", g_ref, r_ref, feeds, np.float64)
    g, r, _ = _build_rnn(op, False, reverse, forget_bias)
    grads = {k: v for k, v in r.items() if k.startswith("d_")}
    run = "f64" if dtype == np.float64 else "f32"
    tol = 1e-10 if dtype == np.float64 else 2e-5
    fused = op.upper() if run == "f32" else None
    alone = {"Scan"} if op == "lstm" else {"Loop"}
    for results, want in ((r, {"Scan", fused or "Loop"}), (grads, alone)):
        ops = _op_types(box.lower(g, results, run))
        assert want <= ops and not ({"Scan", "Loop", "LSTM", "GRU"} - want) & ops, (want, ops)
        got = _run("onnx", g, results, feeds, dtype)
        for k in results:
            scale = max(1.0, float(np.max(np.abs(ref[k]))))
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=tol * scale, err_msg=k)
