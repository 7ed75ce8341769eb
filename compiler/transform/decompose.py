"""Composite ops seen from a backend: the decomposition built as a graph of its own,
the fallback lowering of a backend with no native rule. (The VJP of an op that has
only a decomposition is `compiler.transform.autodiff.vjp_rule`.)"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.primitives import MissingRule, Primitive, get_primitive

# (op, argument types, attrs) -> (graph, input ids, result id). A train step inlines
# the same few composites (an optimizer's `lerp`, `adam_param`) once per parameter:
# building each decomposition once per signature, not once per node, halves the ONNX
# lowering of a 10k-node stack. The graphs are templates: lowerings only read them.
_CACHE: dict = {}


def expand(prim: Primitive, arg_types: list, attrs: dict):
    """The decomposition as a graph of its own: ``(graph, input ids, result id)``.

    Backends without a native rule lower that graph in place of the node; the graph
    is shared between calls with equal arguments, so callers must not change it;
    ``graph.meta["order"]`` lists the nodes the result needs, in topological order."""
    if prim.decomposition is None:
        raise MissingRule("decomposition", prim.name)
    try:
        key = (prim.name, tuple(arg_types), tuple(sorted(attrs.items())))
        hash(key)
    except TypeError:  # an unhashable attr (a graph): build it every time
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    g = Graph(f"{prim.name}.decomposition")
    ins = [g.add("input", (), {"name": f"_arg{i}", "dtype": t.dtype, "shape": tuple(t.shape)})
           for i, t in enumerate(arg_types)]
    out = (g, ins, prim.decomposition(g, ins, dict(attrs)))
    g.meta["order"] = g.topo_order([out[2]])  # what to lower, in order: walked once
    if key is not None:
        _CACHE[key] = out
    return out
