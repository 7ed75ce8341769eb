"""backends/liveness.py: generated functions free each temporary after its last use."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from backends.liveness import free_dead_locals
from compiler import api


def test_a_local_is_deleted_right_after_its_last_read():
    body = ["a = f(x)", "b = g(a)", "c = h(b, a)", "d = k(c)", "return {'d': d, 'b': b}"]
    out = free_dead_locals(body)
    assert out == ["a = f(x)", "b = g(a)", "c = h(b, a)", "del a", "d = k(c)", "del c",
                   "return {'d': d, 'b': b}"]


def test_closures_and_names_bound_in_blocks_are_kept():
    body = ["a = f(x)",
            "def body(t):",
            "    return t + a",
            "for i in range(n):",
            "    z = body(i)",
            "w = g(z)",
            "q = h(w)",
            "return {'q': q}"]
    out = free_dead_locals(body)
    # `a` is read when `body` is called, `z` may never be bound (n = 0): both stay;
    # `w` is a plain local read once
    assert "del w" in out and not any(l.startswith("del") and ("a" in l.split() or "z" in l)
                                      for l in out if l != "del w")
    assert out.index("del w") == out.index("q = h(w)") + 1


def test_comments_between_statements_survive():
    body = ["a = f(x)", "# a note", "b = g(a)", "return {'b': b}"]
    assert free_dead_locals(body) == ["a = f(x)", "# a note", "b = g(a)", "del a", "return {'b': b}"]


CHAIN = """
model Chain(n = 1000) {
  input x: f32[B, n]
  output y = tanh(exp(sin(cos(tanh(exp(sin(cos(x * 0.5))))))) * 0.5)
}
"""


def test_a_numpy_chain_holds_two_temporaries_not_all_of_them():
    # eight elementwise steps over a 4 MB array: with every local alive until the
    # return, the peak is ~9 arrays; freed after their last use, two or three
    m = api.load(text=CHAIN)
    x = np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32)
    run = lambda: m.run({"x": x})  # noqa: E731
    want = np.tanh(np.exp(np.sin(np.cos(np.tanh(np.exp(np.sin(np.cos(x * 0.5))))))) * 0.5)
    np.testing.assert_allclose(run()["y"], want, rtol=1e-6, atol=1e-6)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 4 * x.nbytes, f"peak {peak / x.nbytes:.1f} arrays"


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_both_python_backends_emit_the_deletes(backend):
    import importlib

    from compiler.transform.passes import optimize
    m = api.load(text=CHAIN)
    g, res = optimize(m.graph, {"y": m.graph.outputs["y"]})
    src = importlib.import_module(f"backends.{backend}").lower(g, res, dtype="f32").source
    assert "\n    del " in src
