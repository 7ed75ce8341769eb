"""Jacobians as graphs: one VJP per output entry, folded into a `scan`.

``jacobian(g, y, wrt)`` builds ``J[i, ...] = ∂ y.flat[i] / ∂ wrt`` for every entry
i of y. The forward computation between `wrt` and `y` is cloned into a scan body
whose per-step input is i; the body seeds the VJP with the one-hot cotangent
``e_i`` (reshaped to y's shape). So the graph does not grow with the number of
outputs, the result lowers to every backend (an ONNX `Loop`) and is itself
differentiable (the scan's VJP).
"""
from __future__ import annotations

import networkx as nx

from compiler.transform.autodiff import vjp
from compiler.core.ir import Graph
from compiler.core.types import dim_prod


def jacobian(g: Graph, y: int, wrt: list[int], *, span=None) -> list[int]:
    """Node ids of ∂y/∂w for each w in `wrt`, each shaped ``y.shape + w.shape``."""
    ty = g.type(y)
    n_out = dim_prod(ty.shape) if ty.shape else 1
    ancestors = nx.ancestors(g.nx, y) | {y}
    inside = set()
    for w in wrt:
        inside |= (nx.descendants(g.nx, w) & ancestors)
    inside -= set(wrt)
    order = [n for n in g.topo_order([y]) if n in inside]

    body = Graph(f"{g.name}.jacobian")
    step = body.add("input", (), {"name": "index", "dtype": "i64", "shape": ()})
    consts: list[int] = []          # outer node ids the body reads, in input order
    m: dict[int, int] = {}

    def outer(n: int) -> int:
        if n not in m:
            t = g.type(n)
            m[n] = body.add("input", (), {"name": f"k{len(consts)}", "dtype": t.dtype,
                                          "shape": t.shape})
            consts.append(n)
        return m[n]

    for w in wrt:
        outer(w)
    for n in order:
        node = g.node(n)
        args = [m[a] if a in m else outer(a) for a in node.args]
        m[n] = body.add(node.op, args, dict(node.attrs), span=node.span, type=node.type)
    y_b = m[y] if y in m else outer(y)

    hot = body.op("eq", body.op("arange", length=n_out, dtype="i64"), step)
    ct = body.op("cast", hot, dtype=ty.dtype)
    ct = body.op("reshape", ct, shape=tuple(ty.shape))
    grads = vjp(body, [y_b], [ct], [m[w] for w in wrt], span=span)
    body.inputs = [step] + [m[c] for c in consts]
    body.meta["results"] = list(grads)

    idx = g.op("arange", length=n_out, dtype="i64")
    node = g.add("scan", [idx] + consts,
                 {"body": body, "n_carry": 0, "n_x": 1, "n_const": len(consts), "axis": 0,
                  "reverse": False, "length": n_out}, span=span)
    out = []
    for i, w in enumerate(wrt):
        j = g.add("tuple_get", [node], {"index": i}, span=span)
        out.append(g.op("reshape", j, shape=tuple(ty.shape) + tuple(g.type(w).shape), span=span))
    return out
