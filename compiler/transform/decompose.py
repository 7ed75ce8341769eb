"""Composite ops seen from a backend: the decomposition built as a graph of its own,
the fallback lowering of a backend with no native rule. (The VJP of an op that has
only a decomposition is `compiler.transform.autodiff.vjp_rule`.)"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.primitives import MissingRule, Primitive, get_primitive
# autodiff registers the decompositions that are VJPs (`lstm_grad`'s)
from compiler.transform import autodiff  # noqa: F401
from compiler.transform.passes import optimize_body

# (op, argument types, attrs) -> (graph, input ids, result id). A train step inlines
# the same few composites (an optimizer's `lerp`, `adam_param`) once per parameter:
# building each decomposition once per signature, not once per node, halves the ONNX
# lowering of a 10k-node stack. The graphs are templates: lowerings only read them.
_CACHE: dict = {}


def expand(prim: Primitive, arg_types: list, attrs: dict):
    """The decomposition as a graph of its own: ``(graph, input ids, result id)``.

    Backends without a native rule lower that graph in place of the node; the graph
    is shared between calls with equal arguments, so callers must not change it;
    ``graph.meta["order"]`` lists the nodes the result needs, in topological order.
    One holding a scan (`lstm`, `lstm_grad`: a loop and its reverse) is optimised like
    a program first, so its loops get the rewrites a spec's own scans get (the
    decomposition is built after the program's `optimize`)."""
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
    res = prim.decomposition(g, ins, dict(attrs))
    if any(g.node(n).op == "scan" for n in g.topo_order([res])):
        g.inputs, g.meta["results"] = ins, [res]
        g = optimize_body(g)
        ins, res = list(g.inputs), g.meta["results"][0]
    out = (g, ins, res)
    g.meta["order"] = g.topo_order([out[2]])  # what to lower, in order: walked once
    if key is not None:
        _CACHE[key] = out
    return out
