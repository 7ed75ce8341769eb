"""`input NAME: TYPE in DOMAIN`: parsed, checked with located errors, and respected by the
random feeds of gradcheck and equiv (the one function both draw from: sample_inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import api
from compiler.commands.equiv import phases
from compiler.commands.gradcheck import gradcheck, sample_inputs
from dsl.errors import DslError

SPEC = """model M() {
  input x: f32[B, 3] in nonnegative
  input q: f32[B, 3] in positive
  input p: f32[B, 4] in probability
  input s: f32[B, 4] in simplex
  input m: bool[B, 3] in binary
  input a: f32[N, N] in adjacency
  input y: i64[B] in range(2, 5)
  input u: f32[B] in range(-1.5, 0.5)
  output z = sum(sqrt(x)) + sum(log(q)) + sum(log(p)) + sum(s) + sum(a) + sum(float(m)) + sum(float(y)) + sum(u)
}
"""


def test_random_feeds_stay_in_their_domains():
    m = api.load(text=SPEC)
    for seed in range(3):
        f = sample_inputs(m.graph, np.random.default_rng(seed), 6)
        assert f["x"].min() >= 0 and f["q"].min() >= 0.1
        assert 0 < f["p"].min() and f["p"].max() < 1
        assert f["s"].min() >= 0
        np.testing.assert_allclose(f["s"].sum(-1), 1.0, rtol=1e-12)
        assert f["m"].dtype == bool
        a = f["a"]
        assert a.shape == (6, 6) and set(np.unique(a)) <= {0.0, 1.0}
        np.testing.assert_array_equal(a, a.T)
        np.testing.assert_array_equal(np.diag(a), 0)
        assert f["y"].dtype.kind == "i" and f["y"].min() >= 2 and f["y"].max() < 5
        assert f["u"].min() >= -1.5 and f["u"].max() < 0.5
    # equiv draws its random inputs through the same function: its feeds are in range too
    e = phases._sample_data(m, 0, 8)
    assert e["x"].min() >= 0 and e["y"].min() >= 2 and np.isfinite(m.run(e, {})["z"])


def test_gradcheck_of_log_of_a_nonnegative_input():
    # without the domain, N(0, 1) feeds would put log of negatives (NaN) into the check
    src = ("model L() {\n  input x: f32[B, 3] in positive\n  param w: [3] ~ ones\n"
           "  loss l = mean(log(x) * w)\n}\n")
    checks = gradcheck(api.load(text=src))
    assert checks and all(c.ok for c in checks)
    bare = api.load(text=src.replace(" in positive", ""))
    assert not all(c.ok for c in gradcheck(bare))  # NaNs: the domain is what makes it pass


@pytest.mark.parametrize("decl,msg,col", [
    ("f32[B] in nonnegativ", "did you mean `nonnegative`", 22),
    ("i64[B] in range(0)", "takes 2 argument(s)", 22),
    ("i64[B] in range(3, 1)", "lo < hi", 22),
    ("i64[B] in probability", "does not apply to an input of dtype i64", 22),
    ("f32[B] in 3", "a name or a call", 22),
    ("i64[B] in range(0, 2.5)", "integer bounds", 22),
    ("f32[B] in range(0, \"a\")", "numbers known at compile time", 22),
])
def test_bad_domains_are_located_errors(decl, msg, col):
    with pytest.raises(DslError) as e:
        api.load(text=f"model M() {{\n  input x: {decl}\n  output z = x\n}}\n")
    err = e.value
    assert msg in str(err)
    assert err.span.line == 2 and err.span.col == col
    assert "^" in err.render()


def test_domain_keyword_does_not_steal_dim_names():
    # `in` is a dim name of the standard library (Dense's [in, out]): still one here
    m = api.load(text="model M() {\n  input x: f32[B, in] in nonnegative\n  output z = x\n}\n",
                 dims={"in": 3})
    assert m.inputs["x"].shape[1] == 3
