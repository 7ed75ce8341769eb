"""`dlc graph`: the typed graph as a Graphviz picture (through pydot).

Layer instances are clusters (nested: ``encoder`` holds ``encoder.0`` holds
``encoder.0.self_attn``), edges carry the shapes. `--grad` draws the forward graph with
the gradient nodes autodiff adds to it. Without the `dot` binary the .dot file is still
written and the message says how to install Graphviz.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from compiler.commands.layers import _owner
from compiler.core.types import shape_str
from compiler.transform.autodiff import grad

INSTALL = ("the Graphviz `dot` program is missing: install it (Debian/Ubuntu: "
           "apt-get install graphviz; macOS: brew install graphviz; conda: conda install graphviz) "
           "to render {fmt}; the graph was written as {dot}")


def _shape(t):
    return shape_str(t.shape) if hasattr(t, "shape") else ", ".join(shape_str(x.shape) for x in t)


def build_dot(m, with_grad: bool = False):
    import pydot
    g = m.train_graph if with_grad else m.graph
    roots = list(g.outputs.values())
    if with_grad and m.losses:
        for loss in m.losses:
            roots += [n for n in grad(g, g.outputs[loss], list(g.params)) if n is not None]
    names = {g.node(n).name: n for n in g.params}
    param_path = {n: (g.node(n).name or "").rsplit(".", 1)[0] if "." in (g.node(n).name or "")
                  else "" for n in g.params}
    forward = set(m.graph.topo_order()) if with_grad else None
    dot = pydot.Dot(m.name, graph_type="digraph", rankdir="TB", fontsize="10")
    clusters: dict[str, pydot.Cluster] = {}

    def cluster(path):
        if path not in clusters:
            c = pydot.Cluster(path.replace(".", "_"), label=path, style="rounded",
                              color="gray40", fontsize="10")
            clusters[path] = c
            parent = path.rsplit(".", 1)[0] if "." in path else None
            (cluster(parent) if parent else dot).add_subgraph(c)
        return clusters[path]

    order = g.topo_order(roots)
    for nid in order:
        node = g.node(nid)
        label = node.name if node.op in ("input", "param", "state") and node.name else node.op
        if node.op == "param" and node.name and "." in node.name:
            label = node.name.rsplit(".", 1)[1]
        shape = {"input": "invhouse", "param": "box", "state": "box"}.get(node.op, "ellipse")
        color = "lightblue" if node.op == "input" else ("lightyellow" if node.op == "param" else
                "mistyrose" if (forward is not None and nid not in forward) else "white")
        n = pydot.Node(str(nid), label=label, shape=shape, style="filled", fillcolor=color,
                       fontsize="9")
        path = param_path.get(nid) if node.op == "param" else _owner(g, nid, param_path)
        if with_grad and nid not in (forward or ()):
            path = None  # gradient nodes stay outside the forward layers
        (cluster(path) if path else dot).add_node(n)
        for a in node.args:
            dot.add_edge(pydot.Edge(str(a), str(nid), label=_shape(g.type(a)), fontsize="8"))
    for name, nid in g.outputs.items():
        dot.add_node(pydot.Node(f"out_{name}", label=f"{g.output_kinds.get(name, 'output')} {name}",
                                shape="house", style="filled", fillcolor="palegreen"))
        dot.add_edge(pydot.Edge(str(nid), f"out_{name}", label=_shape(g.type(nid)), fontsize="8"))
    del names
    return dot, sorted(clusters)


def write_graph(m, out: str, with_grad: bool = False) -> dict:
    dot, layers = build_dot(m, with_grad)
    path = Path(out)
    fmt = path.suffix.lstrip(".").lower() or "dot"
    dot_path = path if fmt == "dot" else path.with_suffix(".dot")
    dot_path.write_text(dot.to_string())
    info = {"dot": str(dot_path), "layers": layers, "path": str(dot_path), "rendered": fmt == "dot"}
    if fmt != "dot":
        if shutil.which("dot") is None:
            info["message"] = INSTALL.format(fmt=fmt, dot=dot_path)
            return info
        path.write_bytes(dot.create(format=fmt))
        info.update(path=str(path), rendered=True)
    return info
