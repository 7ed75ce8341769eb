"""What `dlc check` reports: the model's signature, parameter count, graph sizes."""
from __future__ import annotations

from compiler.transform.autodiff import grad
from compiler.transform.passes import count_nodes, optimize
from compiler.core.types import shape_str


def summarize(m) -> dict:
    info = {
        "model": m.name,
        "file": m.program.path,
        "inputs": [{"name": k, "dtype": t.dtype, "shape": list(t.shape)} for k, t in m.inputs.items()],
        "params": [{"name": k, "dtype": t.dtype, "shape": list(t.shape),
                    "size": int(_size(t.shape))} for k, t in m.params.items()],
        "states": [{"name": k, "dtype": t.dtype, "shape": list(t.shape)} for k, t in m.states.items()],
        "outputs": [{"name": k, "kind": kind, "dtype": t.dtype, "shape": list(t.shape)}
                    for k, (kind, t) in m.outputs.items()],
        "param_count": m.param_count(),
        "models_in_file": list(m.program.models),
        "train_blocks": len(m.program.trains),
    }
    info["graph"] = graph_sizes(m)
    return info


def graph_sizes(m) -> dict:
    """Node counts of the forward graph and of forward+gradient graphs, before/after passes."""
    g = m.graph
    fwd = dict(g.outputs)
    sizes = {"forward": count_nodes(g, fwd.values())}
    o, r = optimize(g, fwd)
    sizes["forward_optimized"] = count_nodes(o, r.values())
    if m.losses and g.params:
        tg = m.train_graph
        res = {k: n for k, n in tg.outputs.items()}
        for loss in m.losses:
            for i, n in enumerate(grad(tg, tg.outputs[loss], list(tg.params))):
                res[f"grad:{loss}:{i}"] = n
        sizes["with_gradients"] = count_nodes(tg, res.values())
        o, r = optimize(tg, res)
        sizes["with_gradients_optimized"] = count_nodes(o, r.values())
    return sizes


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def render_summary(info: dict) -> str:
    rows = [("kind", "name", "dtype", "shape")]
    for i in info["inputs"]:
        rows.append(("input", i["name"], i["dtype"], shape_str(i["shape"])))
    for p in info["params"]:
        rows.append(("param", p["name"], p["dtype"], shape_str(p["shape"])))
    for s in info["states"]:
        rows.append(("state", s["name"], s["dtype"], shape_str(s["shape"])))
    for o in info["outputs"]:
        rows.append((o["kind"], o["name"], o["dtype"], shape_str(o["shape"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"model {info['model']} ({info['file']})"]
    for j, r in enumerate(rows):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append(f"parameters: {info['param_count']:,}")
    gs = info["graph"]
    line = f"graph nodes: forward {gs['forward']} ({gs['forward_optimized']} after passes)"
    if "with_gradients" in gs:
        line += (f"; forward+gradients {gs['with_gradients']} "
                 f"({gs['with_gradients_optimized']} after passes)")
    lines.append(line)
    return "\n".join(lines)
