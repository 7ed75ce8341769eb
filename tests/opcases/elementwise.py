"""Test cases for compiler/primitives/elementwise.py (schema: tests/opcases/__init__.py).

Inputs for gradient checks stay away from kinks and domain edges (|x| > 0.1 for
relu/abs, positive bases for log/sqrt/pow, |x - y| > 0.1 for maximum/minimum),
except the deliberate tie cases, where the even split of the gradient is exactly
what a central difference measures.
"""
from __future__ import annotations

import numpy as np
import torch

from . import Case


# ---- input generators: fn(rng) -> float64 array -----------------------------

def normal(*shape, scale=1.0):
    return lambda rng: scale * rng.standard_normal(shape)


def uniform(lo, hi, *shape):
    return lambda rng: rng.uniform(lo, hi, shape)


def away(*shape, gap=0.1, hi=2.0):
    """|x| in [gap, hi], random sign: clear of a kink at 0."""
    return lambda rng: rng.uniform(gap, hi, shape) * rng.choice([-1.0, 1.0], shape)


def ints(lo, hi, *shape, dtype=np.int64):
    return lambda rng: rng.integers(lo, hi, shape).astype(dtype)


def small_ints_f(*shape):
    """Float values in {-2, ..., 2}: comparisons see plenty of ties."""
    return lambda rng: rng.integers(-2, 3, shape).astype(np.float64)


def bools(*shape):
    return lambda rng: rng.random(shape) < 0.5


def grid_x(*shape):
    """Odd multiples of 0.25 in [-1.75, 1.75]."""
    return lambda rng: (2 * rng.integers(-4, 4, shape) + 1) * 0.25


def grid_y(*shape):
    """Multiples of 0.5 in [-2, 2] plus noise below 0.1: always > 0.1 from grid_x."""
    return lambda rng: rng.integers(-4, 5, shape) * 0.5 + rng.uniform(-0.1, 0.1, shape)


def unary_cases(op, ref, gen, shapes=((3, 4), (), (2, 3, 5)), second_order=True, **kw):
    return [Case(op, [gen(*s)], ref=ref, name="x".join(map(str, s)) or "scalar",
                 second_order=second_order, **kw) for s in shapes]


# Broadcasting shape pairs: same, trailing, both sides, scalar.
BIN_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,))]


def binary_cases(op, ref, gen_x, gen_y, second_order=True, shapes=BIN_SHAPES, **kw):
    return [Case(op, [gen_x(*a), gen_y(*b)], ref=ref,
                 name=f"{'x'.join(map(str, a)) or 's'}_{'x'.join(map(str, b)) or 's'}",
                 second_order=second_order, **kw) for a, b in shapes]


CASES: list[Case] = [
    # ---- float unary ----------------------------------------------------------
    *unary_cases("neg", torch.neg, normal),
    Case("neg", [ints(-5, 5, 3, 4)], ref=torch.neg, name="int"),
    *unary_cases("exp", torch.exp, normal),
    Case("exp", [uniform(-700, 700, 20)], ref=torch.exp, name="wide", rtol=1e-12, atol=0,
         skip={"grad": "values up to e^700 overflow the finite-difference check",
               "second_order": "as grad"}),
    *unary_cases("log", torch.log, lambda *s: uniform(0.2, 5.0, *s)),
    *unary_cases("log1p", torch.log1p, lambda *s: uniform(-0.7, 3.0, *s)),
    Case("log1p", [lambda rng: rng.choice([-1.0, 1.0], 12) * 10.0 ** rng.uniform(-15, -5, 12)],
         ref=torch.log1p, name="tiny", atol=0, rtol=1e-12,
         skip={"grad": "covered by the other cases", "second_order": "as grad"}),
    *unary_cases("sqrt", torch.sqrt, lambda *s: uniform(0.2, 5.0, *s)),
    *unary_cases("rsqrt", torch.rsqrt, lambda *s: uniform(0.2, 5.0, *s)),
    *unary_cases("abs", torch.abs, away),
    Case("abs", [ints(-5, 5, 3, 4)], ref=torch.abs, name="int"),
    Case("sign", [small_ints_f(3, 4)], ref=torch.sign, name="float"),
    Case("sign", [ints(-3, 4, 5)], ref=torch.sign, name="int"),
    *unary_cases("sin", torch.sin, lambda *s: normal(*s, scale=2.0)),
    *unary_cases("cos", torch.cos, lambda *s: normal(*s, scale=2.0)),
    # inside (-1, 1), clear of the infinite slope at ±1
    *unary_cases("acos", torch.acos, lambda *s: uniform(-0.9, 0.9, *s)),
    *unary_cases("tanh", torch.tanh, lambda *s: normal(*s, scale=2.0)),
    *unary_cases("sigmoid", torch.sigmoid, lambda *s: normal(*s, scale=3.0)),
    Case("sigmoid", [np.array([-800.0, -40.0, -20.0, 0.0, 20.0, 40.0, 800.0])], ref=torch.sigmoid,
         name="tails", atol=0, rtol=1e-12,
         skip={"grad": "derivative underflows in the tails", "second_order": "as grad"}),
    *unary_cases("relu", torch.relu, away),
    # relu's VJP, fused: torch's own relu backward is the reference
    *[Case("relu_grad", [normal(*sh), away(*sh)],
           ref=lambda g, x: torch.ops.aten.threshold_backward(g, x, 0.0),
           name="x".join(map(str, sh)) or "scalar", second_order=True) for sh in [(3, 4), (), (2, 3, 5)]],
    *unary_cases("softplus", lambda x: torch.logaddexp(x, torch.zeros_like(x)),
                 lambda *s: normal(*s, scale=3.0)),
    Case("softplus", [np.array([-800.0, -40.0, -1e-3, 0.0, 25.0, 40.0, 800.0])],
         ref=lambda x: torch.logaddexp(x, torch.zeros_like(x)), name="tails", atol=0, rtol=1e-12,
         skip={"grad": "covered by the other cases", "second_order": "as grad",
               "torch": "F.softplus linearises above x = 20 (error < 3e-9)"}),
    *unary_cases("erf", torch.special.erf, lambda *s: normal(*s, scale=1.5)),
    *unary_cases("reciprocal", torch.reciprocal, away),
    Case("floor", [normal(3, 4, scale=3.0)], ref=torch.floor),
    Case("ceil", [normal(3, 4, scale=3.0)], ref=torch.ceil),
    # halves must go to the even neighbour everywhere
    Case("round", [lambda rng: np.concatenate([rng.normal(0, 3, 8), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]])],
         ref=torch.round),

    # ---- binary arithmetic ----------------------------------------------------
    *binary_cases("add", torch.add, normal, normal),
    Case("add", [ints(-5, 5, 3, 4), ints(-5, 5, 4)], ref=torch.add, name="int"),
    *binary_cases("sub", torch.sub, normal, normal),
    Case("sub", [ints(-5, 5, 3, 4), ints(-5, 5, 4)], ref=torch.sub, name="int"),
    *binary_cases("mul", torch.mul, normal, normal),
    Case("mul", [ints(-5, 5, 3, 4), ints(-5, 5, 4)], ref=torch.mul, name="int"),
    *binary_cases("div", torch.div, normal, away),
    *binary_cases("pow", torch.pow, lambda *s: uniform(0.3, 3.0, *s), lambda *s: uniform(-2.0, 3.0, *s)),
    # x^y at x = 0: the y-gradient is 0 (not NaN), as in torch
    Case("pow", [np.array([0.0, 0.0, 0.0, 1.5]), np.array([2.0, 3.5, 0.0, 2.0])], ref=torch.pow,
         name="zero_base",
         skip={"grad": "x = 0 is the edge of pow's domain in y: one-sided differences",
               "second_order": "as grad"}),
    *binary_cases("maximum", torch.maximum, grid_x, grid_y),
    *binary_cases("minimum", torch.minimum, grid_x, grid_y),
    # exact ties: the gradient is split evenly (as torch does, and as a central
    # difference measures); the VJP jumps there, so no second-order check
    Case("maximum", [np.array([1.0, 2.0, -1.0, 0.5]), np.array([1.0, 0.0, -1.0, 2.0])],
         ref=torch.maximum, name="ties"),
    Case("minimum", [np.array([1.0, 2.0, -1.0, 0.5]), np.array([1.0, 0.0, -1.0, 2.0])],
         ref=torch.minimum, name="ties"),
    Case("maximum", [ints(-3, 3, 3, 4), ints(-3, 3, 4)], ref=torch.maximum, name="int"),
    Case("minimum", [ints(-3, 3, 3, 4), ints(-3, 3, 4)], ref=torch.minimum, name="int"),

    # int meets float (binary_arith promotes): the int operand gets no cotangent
    Case("add", [normal(3, 4), ints(-5, 5, 4)], ref=torch.add, name="f_i", second_order=True),
    Case("sub", [ints(-5, 5, 3, 1), normal(3, 4)], ref=torch.sub, name="i_f", second_order=True),
    Case("mul", [normal(3, 4), ints(-5, 5, 3, 4)], ref=torch.mul, name="f_i", second_order=True),
    Case("div", [ints(-5, 5, 3, 4), away(4)], ref=torch.div, name="i_f", second_order=True),
    Case("pow", [normal(3, 4), ints(0, 4, 3, 4)], ref=torch.pow, name="int_exponent",
         second_order=True),
    Case("pow", [ints(1, 4, 3, 4), uniform(-1.0, 2.0, 4)], ref=torch.pow, name="int_base",
         second_order=True),
    Case("maximum", [grid_x(3, 4), ints(-2, 3, 4)], ref=torch.maximum, name="f_i",
         second_order=True),
    Case("add", [ints(-5, 5, 3, 4), ints(-5, 5, 4, dtype=np.int32)], ref=torch.add, name="i64_i32"),

    # ---- comparisons and logic ------------------------------------------------
    *[Case(op, [small_ints_f(3, 4), small_ints_f(4)], ref=ref, name="float")
      for op, ref in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                      ("gt", torch.gt), ("ge", torch.ge)]],
    *[Case(op, [ints(-2, 3, 2, 1, 3), ints(-2, 3, 4, 1)], ref=ref, name="int")
      for op, ref in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le),
                      ("gt", torch.gt), ("ge", torch.ge)]],
    Case("lt", [small_ints_f(3, 4), ints(-2, 3, 4)], ref=torch.lt, name="f_i"),
    Case("eq", [ints(-2, 3, 3, 4, dtype=np.int32), ints(-2, 3, 4)], ref=torch.eq, name="i32_i64"),
    Case("eq", [bools(3, 4), bools(4)], ref=torch.eq, name="bool"),
    Case("ne", [bools(3, 4), bools(4)], ref=torch.ne, name="bool"),
    Case("logical_and", [bools(3, 4), bools(4)], ref=torch.logical_and),
    Case("logical_or", [bools(3, 4), bools(2, 1, 4)], ref=torch.logical_or),
    Case("logical_not", [bools(3, 4)], ref=torch.logical_not),

    # ---- where, cast ----------------------------------------------------------
    Case("where", [bools(3, 4), normal(3, 4), normal(3, 4)], ref=torch.where, name="same",
         second_order=True),
    Case("where", [bools(3, 1), normal(4), normal(2, 3, 4)], ref=torch.where, name="broadcast",
         second_order=True),
    Case("where", [bools(3, 4), normal(), normal(3, 1)], ref=torch.where, name="scalar",
         second_order=True),
    Case("where", [bools(2, 3), ints(-5, 5, 2, 3), ints(-5, 5, 3)], ref=torch.where, name="int"),
    Case("where", [bools(2, 3), normal(2, 3), ints(-5, 5, 3)], ref=torch.where, name="f_i",
         second_order=True),
    Case("cast", [normal(3, 4)], attrs={"dtype": "f32"}, ref=lambda x: x, name="f_to_f",
         second_order=True),
    Case("cast", [normal(2, 5)], attrs={"dtype": "f64"}, ref=lambda x: x, name="f_to_f64",
         second_order=True),
    # truncation toward zero; values kept off integers so no backend sits on a boundary
    Case("cast", [lambda rng: rng.integers(-5, 5, (3, 4)) + rng.uniform(0.1, 0.9, (3, 4))],
         attrs={"dtype": "i64"}, ref=lambda x: x.to(torch.int64), name="f_to_i64"),
    Case("cast", [ints(-5, 5, 3, 4)], attrs={"dtype": "f32"}, ref=lambda x: x.to(torch.float64),
         name="i64_to_f"),
    Case("cast", [ints(-5, 5, 3, 4)], attrs={"dtype": "i32"}, ref=lambda x: x.to(torch.int32),
         name="i64_to_i32"),
    Case("cast", [bools(3, 4)], attrs={"dtype": "f32"}, ref=lambda x: x.to(torch.float64),
         name="bool_to_f"),
    Case("cast", [small_ints_f(3, 4)], attrs={"dtype": "bool"}, ref=lambda x: x != 0,
         name="f_to_bool"),
]
