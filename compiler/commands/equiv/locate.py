"""Locating the first node (in the user's code) where two backends diverge."""
from __future__ import annotations

import numpy as np

from compiler.commands.equiv.compare import ROUNDING, Backend, Divergence, judge
from compiler.commands.equiv.execute import lower_on, perturb, run_on
from compiler.core.ir import SOURCE_OPS, Graph
from compiler.core.types import TensorType

# ---- locating the first divergent node --------------------------------------------------------

SPAN_SEARCH_DEPTH = 3


def _span_of(g: Graph, n: int):
    """The node's span, or the span of the nearest ancestor (breadth-first over the
    arguments, at most SPAN_SEARCH_DEPTH levels, constants skipped) that has one: nodes
    built by autodiff or the optimizer carry no span of their own."""
    node = g.node(n)
    if node.span is not None:
        return node.span, None
    seen, frontier = {n}, list(node.args)
    for _ in range(SPAN_SEARCH_DEPTH):
        nxt = []
        for a in frontier:
            if a in seen:
                continue
            seen.add(a)
            an = g.node(a)
            if an.span is not None and an.op != "const":
                return an.span, a
            nxt.extend(an.args)
        frontier = nxt
    return None, None


def _fmt_span(span) -> str | None:
    if span is None:
        return None
    return f"{span.path}:{span.line}:{span.col}"


def locate_divergence(g: Graph, results: dict[str, int], b: Backend, ref: Backend, feeds: dict,
                      phase: str, step: int | None = None, probes=(), seed: int = 0) -> Divergence:
    """The first node (topological order) whose values on ``b`` and ``ref`` differ beyond
    its tolerance (widened for conditioning as for results), with every node of ``g``
    that ``results`` need evaluated on identical feeds."""
    order = [n for n in g.topo_order(list(results.values()))
             if g.node(n).op not in SOURCE_OPS and isinstance(g.type(n), TensorType)]
    every = {f"n{n}": n for n in order}
    div = Divergence(phase, b.name, ref.name, False, step=step, nodes_compared=len(order))
    try:
        ref_prog = lower_on(ref, g, every)
        ref_vals = run_on(ref, ref_prog, feeds)
        sens_vals = run_on(ref, ref_prog, perturb(feeds, ROUNDING[b.precision], seed))
        vals = run_on(b, lower_on(b, g, every), feeds)
        probe_vals = [run_on(p, lower_on(p, g, every), feeds) for p in probes]
    except Exception as e:
        div.message = f"could not evaluate every node: {type(e).__name__}: {e}"
        return div
    for n in order:
        k = f"n{n}"
        if k not in vals or k not in ref_vals:
            continue
        j = judge(phase, b, vals[k], ref_vals[k], sensitive=sens_vals.get(k),
                  probes=[p.get(k) for p in probe_vals])
        if j["ok"]:
            continue
        node = g.node(n)
        span, via = _span_of(g, n)
        x, r = np.asarray(vals[k]), np.asarray(ref_vals[k])
        div.found = True
        div.node, div.op, div.name = n, node.op, node.name
        div.span, div.span_from = _fmt_span(span), via
        if span is not None and span.source is not None:
            div.line = span.source.line(span.line)
            div.col = span.col
        div.max_abs, div.max_rel, div.index = j["max_abs"], j["max_rel"], j["index"]
        if div.index is not None and x.shape == r.shape:
            div.value, div.ref_value = _scalar(x[div.index]), _scalar(r[div.index])
        div.args = [f"%{a} {g.node(a).op}" for a in node.args]
        if div.span is None:
            where = "a node the compiler generated (autodiff or optimizer; no source span)"
        elif via is not None:
            where = f"{div.span} (generated from %{via} `{g.node(via).op}` there)"
        else:
            where = div.span
        div.message = (f"first divergent node %{n} `{node.op}` at {where}: max abs err "
                       f"{j['max_abs']:.3e}, max rel err {j['max_rel']:.3e} "
                       f"(atol {j['atol']:.3g}, rtol {j['rtol']:.3g})")
        return div
    div.message = ("no single node differs beyond tolerance on identical inputs: the "
                   "difference accumulates" + (" over steps" if phase == "train" else "")
                   + " (or comes from a result's final conversion)")
    return div


def _scalar(v):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()


