"""`dlc graph`: the typed graph as a Graphviz picture (through pydot).

Layer instances are clusters (nested: ``encoder`` holds ``encoder.0`` holds
``encoder.0.self_attn``), edges carry the shapes. `--grad` draws the forward graph with
the gradient nodes autodiff adds to it; `--train-step` draws the whole training step
of the train block (forward, gradients, schedule and optimizer update, for every
player), built by the training engine itself (`compiler.training.step.build_step`). Without the `dot` binary the .dot file is still
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


# fill colours of the step picture's parts
STEP_COLORS = {"forward": "white", "gradient": "mistyrose", "update": "lightcyan"}


def _step_parts(sg) -> dict[int, str]:
    """Each node of a split step graph: forward (the model's outputs, losses, metrics and
    state updates), gradient (autodiff's nodes up to ``grad:P``) or update (schedule,
    optimizer, averages: what reads ``grad:P``)."""
    g = sg.graph
    grad_half, upd_half = sg.halves()
    grads = {k: n for k, n in grad_half.items() if k.startswith(("grad:", "gsnap:"))}
    fwd = g.ancestors([n for k, n in grad_half.items() if k not in grads])
    gradient = g.ancestors(list(grads.values())) - fwd
    update = g.ancestors(list(upd_half.values())) - fwd - gradient
    parts = {n: "forward" for n in fwd}
    parts.update({n: "gradient" for n in gradient})
    parts.update({n: "update" for n in update})
    return parts


def build_step_dot(m):
    """The whole train step: one cluster per layer for the forward nodes, the gradient
    nodes beside them, the optimizer update in an `update` cluster per player. The
    split step's ``grad:P`` input (what the update reads) is drawn as the edge from the
    gradient node that computes it."""
    import pydot
    from compiler.training import step as training
    from compiler.training.spec import model_for, parse_train
    cfg = parse_train(m)
    tm = model_for(m, cfg)
    rounds = training.total_rounds(cfg, tm)
    dot = pydot.Dot(m.name, graph_type="digraph", rankdir="TB", fontsize="10")
    clusters: dict[str, pydot.Cluster] = {}
    counts = {"forward": 0, "gradient": 0, "update": 0}
    many = len(cfg.groups) > 1

    def cluster(path, parent_dot, key):
        if key not in clusters:
            c = pydot.Cluster(key.replace(".", "_").replace(" ", "_").replace(":", "_"),
                              label=path, style="rounded", color="gray40", fontsize="10")
            clusters[key] = c
            parent_dot.add_subgraph(c)
        return clusters[key]

    layers = set()
    for sg in (training.build_step(tm, cfg, grp, rounds * grp.steps, split=True) for grp in cfg.groups):
        g = sg.graph
        pre = f"{sg.group.name}_" if many else ""
        top = cluster(f"player {sg.group.name}", dot, f"player {sg.group.name}") if many else dot
        parts = _step_parts(sg)
        grad_half, _ = sg.halves()
        # the update half reads `grad:P` inputs: draw them as edges from the gradient nodes
        fed = {g.node(n).attrs.get("name"): n for n in g.inputs}
        alias = {fed[k]: n for k, n in grad_half.items() if k.startswith(("grad:", "gsnap:")) and k in fed}
        param_path = {n: (g.node(n).name or "").rsplit(".", 1)[0] if "." in (g.node(n).name or "")
                      else "" for n in g.params}

        def layer_of(path, parent):
            parts_ = path.split(".")
            c = parent
            for i in range(len(parts_)):
                sub = ".".join(parts_[:i + 1])
                layers.add(sub)
                c = cluster(sub, c, pre + sub)
            return c

        for nid in g.topo_order(list(sg.results.values())):
            if nid in alias:
                continue
            node, part = g.node(nid), parts.get(nid, "forward")
            counts[part] += 1
            label = node.name if node.op in ("input", "param", "state") and node.name else node.op
            if node.op == "param" and node.name and "." in node.name:
                label = node.name.rsplit(".", 1)[1]
            shape = {"input": "invhouse", "param": "box", "state": "box"}.get(node.op, "ellipse")
            color = ("lightblue" if node.op == "input" else "lightyellow" if node.op == "param"
                     else STEP_COLORS[part])
            n = pydot.Node(pre + str(nid), label=label, shape=shape, style="filled",
                           fillcolor=color, fontsize="9")
            if part == "update" and node.op != "param":
                target = cluster(f"update ({sg.group.optimizer.name})" if sg.group.optimizer else "update",
                                 top, pre + "update")
            elif part == "forward":
                path = param_path.get(nid) if node.op == "param" else _owner(g, nid, param_path)
                target = layer_of(path, top) if path else top
            else:
                target = top
            target.add_node(n)
            for a in node.args:
                src = alias.get(a, a)
                dot.add_edge(pydot.Edge(pre + str(src), pre + str(nid), label=_shape(g.type(a)),
                                        fontsize="8"))
        for name, nid in sg.results.items():
            if name.startswith(("grad:", "gsnap:")):
                continue
            # a colon in a DOT node id would be a port: ids stay word characters
            out = f"{pre}out_" + "".join(ch if ch.isalnum() else "_" for ch in name)
            top.add_node(pydot.Node(out, label=name, shape="house", style="filled",
                                    fillcolor="palegreen"))
            dot.add_edge(pydot.Edge(pre + str(nid), out, label=_shape(g.type(nid)), fontsize="8"))
    return dot, sorted(layers), counts


def write_graph(m, out: str, with_grad: bool = False, train_step: bool = False) -> dict:
    counts = None
    if train_step:
        dot, layers, counts = build_step_dot(m)
    else:
        dot, layers = build_dot(m, with_grad)
    path = Path(out)
    fmt = path.suffix.lstrip(".").lower() or "dot"
    dot_path = path if fmt == "dot" else path.with_suffix(".dot")
    dot_path.write_text(dot.to_string())
    info = {"dot": str(dot_path), "layers": layers, "path": str(dot_path), "rendered": fmt == "dot"}
    if counts is not None:
        info["nodes"] = counts  # forward / gradient / update nodes of the step
    if fmt != "dot":
        if shutil.which("dot") is None:
            info["message"] = INSTALL.format(fmt=fmt, dot=dot_path)
            return info
        path.write_bytes(dot.create(format=fmt))
        info.update(path=str(path), rendered=True)
    return info
