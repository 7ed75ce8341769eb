"""Composite ops seen from a backend: the decomposition built as a graph of its own,
the fallback lowering of a backend with no native rule. (The VJP of an op that has
only a decomposition is `compiler.transform.autodiff.vjp_rule`.)"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.primitives import MissingRule, Primitive, get_primitive
# autodiff registers the decompositions that are VJPs (`lstm_grad`'s)
from compiler.transform import autodiff  # noqa: F401
from compiler.transform.passes import optimize_body


def expand(prim: Primitive, arg_types: list, attrs: dict):
    """The decomposition as a graph of its own: ``(graph, input ids, result id)``.

    Backends without a native rule lower that graph in place of the node. One holding
    a scan (`lstm`, `lstm_grad`: a loop and its reverse) is optimised like a program
    first, so its loops get the rewrites a spec's own scans get (the decomposition is
    built after the program's `optimize`)."""
    if prim.decomposition is None:
        raise MissingRule("decomposition", prim.name)
    g = Graph(f"{prim.name}.decomposition")
    ins = [g.add("input", (), {"name": f"_arg{i}", "dtype": t.dtype, "shape": tuple(t.shape)})
           for i, t in enumerate(arg_types)]
    out = prim.decomposition(g, ins, dict(attrs))
    if not any(g.node(n).op == "scan" for n in g.topo_order([out])):
        return g, ins, out
    g.inputs, g.meta["results"] = ins, [out]
    g = optimize_body(g)
    return g, list(g.inputs), g.meta["results"][0]
