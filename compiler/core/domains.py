"""Input domains: `input a: f32[N, N] in adjacency`, `input y: i64[B] in range(0, 10)`.

A domain says which values an input takes, so that the random feeds of `dlc gradcheck`
and `dlc equiv` (`compiler.commands.gradcheck.sample_inputs`) stay inside it: a log of a
nonnegative input, a graph's 0/1 adjacency, labels below the number of classes. Without
one, float inputs are N(0, 1) and integer inputs stay below the depth of the `one_hot`
(or the size of the axis a `take` indexes) they feed.

Each domain: its arguments, the dtypes it applies to, and how to draw from it. The
elaborator checks the declaration (`check`, located errors) and stores
``(name, args)`` in the input node's ``domain`` attribute."""
from __future__ import annotations

import difflib

import numpy as np

FLOAT = ("f16", "f32", "f64")
INT = ("i32", "i64")

# name -> (argument names, dtypes, what it means)
DOMAINS = {
    "nonnegative": ((), FLOAT, "values >= 0 (|N(0, 1)|)"),
    "positive": ((), FLOAT, "values > 0 (|N(0, 1)| + 0.1: safe under log and division)"),
    "probability": ((), FLOAT, "each entry in (0, 1) (U(0.05, 0.95): away from log's 0)"),
    "simplex": ((), FLOAT, "rows of the last axis are distributions: >= 0, summing to 1"),
    "binary": ((), FLOAT + INT + ("bool",), "each entry 0 or 1"),
    "adjacency": ((), FLOAT + INT + ("bool",),
                  "a graph's 0/1 adjacency over the last two (equal) axes: symmetric, no self-loops"),
    "range": (("lo", "hi"), FLOAT + INT, "integers lo <= v < hi (floats: uniform in [lo, hi))"),
}


class DomainError(ValueError):
    """A bad domain declaration; the elaborator adds the location."""


def check(name: str, args: list, dtype: str) -> tuple:
    """The ``(name, args)`` attribute of a valid domain for an input of `dtype`."""
    if name not in DOMAINS:
        near = difflib.get_close_matches(name, list(DOMAINS), n=1)
        hint = f"; did you mean `{near[0]}`?" if near else ""
        raise DomainError(f"unknown input domain `{name}`{hint} (known: {', '.join(DOMAINS)})")
    params, dtypes, _ = DOMAINS[name]
    if len(args) != len(params):
        want = f"`{name}({', '.join(params)})`" if params else f"`{name}` (no arguments)"
        raise DomainError(f"domain `{name}` takes {len(params)} argument(s), got {len(args)}: write {want}")
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise DomainError(f"the arguments of domain `{name}` are numbers known at compile time")
    if dtype not in dtypes:
        raise DomainError(f"domain `{name}` does not apply to an input of dtype {dtype} "
                          f"(it takes {', '.join(dtypes)})")
    if name == "range":
        lo, hi = args
        if dtype in INT and (lo != int(lo) or hi != int(hi)):
            raise DomainError(f"an integer input's range has integer bounds, got range({lo}, {hi})")
        if not hi > lo:
            raise DomainError(f"range(lo, hi) needs lo < hi, got range({lo}, {hi})")
        args = [int(lo), int(hi)] if dtype in INT else [float(lo), float(hi)]
    return (name, tuple(args))


def sample(domain: tuple, shape: tuple, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Random values of `shape` inside `domain` (float64 / int64 / bool, as drawn)."""
    name, args = domain
    if name == "nonnegative":
        return np.abs(rng.standard_normal(shape))
    if name == "positive":
        return np.abs(rng.standard_normal(shape)) + 0.1
    if name == "probability":
        return rng.uniform(0.05, 0.95, shape)
    if name == "simplex":
        z = np.exp(rng.standard_normal(shape))
        return z / z.sum(axis=-1, keepdims=True)
    if name == "range":
        lo, hi = args
        return rng.integers(lo, hi, shape) if dtype in INT else rng.uniform(lo, hi, shape)
    if name in ("binary", "adjacency"):
        bits = rng.random(shape) < 0.5
        if name == "adjacency":
            if len(shape) < 2 or shape[-1] != shape[-2]:
                raise DomainError(f"an adjacency input is square over its last two axes, got shape {list(shape)}")
            upper = np.triu(bits, k=1)
            bits = upper | np.swapaxes(upper, -1, -2)
        return bits if dtype == "bool" else bits.astype(np.int64 if dtype in INT else np.float64)
    raise DomainError(f"unknown input domain `{name}`")
