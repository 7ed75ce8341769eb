"""Composite ops seen from a backend: the decomposition built as a graph of its own,
the fallback lowering of a backend with no native rule. (The VJP of an op that has
only a decomposition is `compiler.transform.autodiff.vjp_rule`.)"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.primitives import MissingRule, Primitive, get_primitive


def expand(prim: Primitive, arg_types: list, attrs: dict):
    """The decomposition as a graph of its own: ``(graph, input ids, result id)``.

    Backends without a native rule lower that graph in place of the node."""
    if prim.decomposition is None:
        raise MissingRule("decomposition", prim.name)
    g = Graph(f"{prim.name}.decomposition")
    ins = [g.add("input", (), {"name": f"_arg{i}", "dtype": t.dtype, "shape": tuple(t.shape)})
           for i, t in enumerate(arg_types)]
    return g, ins, prim.decomposition(g, ins, dict(attrs))
