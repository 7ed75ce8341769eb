"""Symbolic gradients vs central finite differences, in float64 on the NumPy backend.

For every loss of a model and every parameter and float input, the gradient graph
the compiler built is compared with (L(θ+ε) − L(θ−ε)) / 2ε, elementwise, with
torch.autograd.gradcheck's default criterion |sym − fd| <= atol + rtol·|fd|
(ε = 1e-6, atol = 1e-5, rtol = 1e-3). Tensors with more than `max_entries`
elements are checked on that many entries drawn with a fixed seed (the count is
reported); smaller ones on every entry. Noise is drawn once and held fixed.

`stop_gradient(v)` means "treat v as a constant": the symbolic gradient is that of
the function in which v is frozen at its current value. So the finite differences
are taken of exactly that function: every stop_gradient node becomes an input fed
with its value at the unperturbed point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.core.ir import Graph

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
DEFAULT_DIM = 3


@dataclass
class TensorCheck:
    loss: str
    tensor: str
    kind: str          # param | input
    checked: int       # entries compared
    size: int
    max_abs: float
    max_rel: float
    ok: bool


def sample_inputs(g: Graph, rng: np.random.Generator, dim: int = DEFAULT_DIM) -> dict:
    """Random inputs: symbolic dims set to `dim`; inside the input's declared domain
    (`in nonnegative`, `in range(0, 10)`: `compiler.core.domains`) when it has one;
    otherwise floats N(0, 1) and integer inputs kept in a valid range (below the depth
    of the one_hot, or the size of the axis a take indexes, they feed)."""
    from compiler.core import domains
    from compiler.core.noise import eval_dim
    env = {s: dim for s in g.dim_sources}
    feeds = {}
    for n in g.inputs:
        a = g.node(n).attrs
        shape = tuple(eval_dim(d, env) if not isinstance(d, int) else d for d in a["shape"])
        if a.get("domain"):
            feeds[a["name"]] = domains.sample(a["domain"], shape, a["dtype"], rng)
        elif a["dtype"] in ("f32", "f64", "f16"):
            feeds[a["name"]] = rng.standard_normal(shape)
        elif a["dtype"] == "bool":
            feeds[a["name"]] = rng.random(shape) < 0.5
        else:
            feeds[a["name"]] = rng.integers(0, _int_bound(g, n, env), shape)
    return feeds


def _int_bound(g: Graph, n: int, env: dict) -> int:
    from compiler.core.noise import eval_dim
    bound = None
    frontier, seen = [n], set()
    while frontier:
        m = frontier.pop()
        for u in g.users(m):
            if u in seen:
                continue
            seen.add(u)
            node = g.node(u)
            b = None
            if node.op == "one_hot":
                b = node.attrs["depth"]
            elif node.op == "take" and node.args[1] == m:
                d = g.type(node.args[0]).shape[node.attrs["axis"]]
                b = eval_dim(d, env) if isinstance(d, str) else d
            elif node.op in ("cast", "reshape", "squeeze", "expand_dims", "slice"):
                frontier.append(u)
            if b is not None:
                bound = b if bound is None else min(bound, b)
    return bound or 2


def gradcheck(model, *, seed: int = 0, max_entries: int = 64, dim: int = DEFAULT_DIM,
              feeds: dict | None = None) -> list[TensorCheck]:
    """`feeds`: real inputs (a batch of the train block's data set) instead of random."""
    g = model.graph
    rng = np.random.default_rng(seed)
    data = sample_inputs(g, rng, dim)
    if feeds:
        data = {k: (np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f"
                    else np.asarray(v)) for k, v in feeds.items() if k in data}
    params = {k: v.astype(np.float64) for k, v in model.init_params(seed).items()}
    # Random, non-degenerate values: zero-initialised biases would sit on relu kinks.
    for k, v in params.items():
        params[k] = np.array(v + 0.1 * rng.standard_normal(v.shape), dtype=np.float64)
    data.update(model.noise(data, seed))
    float_inputs = [g.node(n).attrs["name"] for n in g.inputs if g.type(n).is_float]
    results = []
    for loss in model.losses:
        wrt = list(model.params) + float_inputs
        sym = model.gradients(loss, data, params, wrt=wrt, dtype="f64")
        fwd = _frozen_forward(model, g, loss, {**params, **data})
        for name in wrt:
            base = params if name in params else data
            results.append(_check_tensor(fwd, loss, name, "param" if name in params else "input",
                                         base, params, data, sym[name], rng, max_entries))
    return results


def _frozen_forward(model, g: Graph, loss: str, feeds: dict):
    """The loss as a function of its sources, with stop_gradient values held fixed."""
    root = g.outputs[loss]
    order = g.topo_order([root])
    stops = [n for n in order if g.node(n).op == "stop_gradient"]
    if not stops:
        return model.lower({loss: root}, g, "numpy", "f64")
    values = model.lower({f"frozen.{n}": g.node(n).args[0] for n in stops}, g, "numpy", "f64")(feeds)
    # copies: a frozen value may be a source array that the checker perturbs in place
    values = {k: np.array(v, copy=True) for k, v in values.items()}
    fg, m = Graph(g.name), {}
    for n in order:
        node = g.node(n)
        if node.op == "stop_gradient":
            t = node.type
            m[n] = fg.add("input", (), {"name": f"frozen.{n}", "dtype": t.dtype, "shape": t.shape})
        else:
            m[n] = fg.add(node.op, [m[a] for a in node.args], dict(node.attrs), type=node.type)
    fg.dim_sources = {k: (m[n], ax) for k, (n, ax) in g.dim_sources.items() if n in m}
    prog = model.lower({loss: m[root]}, fg, "numpy", "f64", optimized=False)
    return lambda f: prog({**f, **values})


def _check_tensor(fwd, loss, name, kind, base, params, data, sym, rng, max_entries):
    x = base[name]
    size = x.size
    idx = np.arange(size) if size <= max_entries else rng.choice(size, max_entries, replace=False)
    flat = x.reshape(-1)
    fd = np.empty(len(idx))
    feeds = {**params, **data}
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + EPS
        up = float(fwd(feeds)[loss])
        flat[i] = old - EPS
        down = float(fwd(feeds)[loss])
        flat[i] = old
        fd[j] = (up - down) / (2 * EPS)
    s = np.asarray(sym, dtype=np.float64).reshape(-1)[idx]
    err = np.abs(s - fd)
    ok = bool(np.all(err <= ATOL + RTOL * np.abs(fd)))
    rel = err / np.maximum(np.abs(fd), 1e-12)
    return TensorCheck(loss, name, kind, len(idx), size, float(err.max(initial=0.0)),
                       float(rel.max(initial=0.0)), ok)
