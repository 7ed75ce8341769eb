"""Host-side noise: every `noise` source is drawn from one seeded generator per
(seed, step, name), outside the graph, and fed like an input. So the same seed
gives the same numbers on every backend, and a resumed run draws what an
uninterrupted one would have."""
from __future__ import annotations

import hashlib

import numpy as np

from compiler.core.ir import Graph


def resolve_shape(g: Graph, shape, feeds: dict) -> tuple[int, ...]:
    env = {}
    for sym, (n, axis) in g.dim_sources.items():
        name = g.node(n).attrs["name"]
        if name in feeds:
            env[sym] = int(np.shape(feeds[name])[axis])
    return tuple(eval_dim(d, env) for d in shape)


def eval_dim(d, env: dict) -> int:
    if isinstance(d, int):
        return d
    # dims are products of symbols with a coefficient, optionally plus/minus an int
    offset = 0
    for sign in ("+", "-"):
        head, sep, tail = d.rpartition(sign)
        if sep and head and tail.isdigit():
            d, offset = head, int(tail) * (1 if sign == "+" else -1)
            break
    value = 1
    for part in d.split("*"):
        value *= int(part) if part.isdigit() else env[part]
    return value + offset


def needed(g: Graph, roots) -> frozenset[str]:
    """Names of the noise sources that `roots` depend on (draw only those)."""
    deps = set(g.topo_order(list(roots)))
    return frozenset(g.node(n).attrs["name"] for n in g.noises if n in deps)


def draw(g: Graph, feeds: dict, seed: int, step: int, names=None) -> dict[str, np.ndarray]:
    """Every noise source of `g` (or just those in `names`) for this seed and step."""
    out = {}
    for n in g.noises:
        a = g.node(n).attrs
        if names is not None and a["name"] not in names:
            continue
        h = int.from_bytes(hashlib.sha256(a["name"].encode()).digest()[:8], "little")
        rng = np.random.default_rng([seed, step, h])
        shape = resolve_shape(g, a["shape"], feeds)
        if a["dist"] == "normal":
            out[a["name"]] = rng.standard_normal(shape, dtype=np.float32)
        elif a["dist"] == "uniform":
            out[a["name"]] = rng.random(shape, dtype=np.float32)
        else:
            raise ValueError(f"unknown noise distribution {a['dist']!r}")
    return out
