"""Reverse-mode AD as a graph-to-graph transform.

`vjp` walks the nodes between the seeds and `wrt` in reverse topological order,
asks each primitive's VJP rule for one cotangent per argument (written with
primitives, so the result is an ordinary graph that every backend lowers and that
can itself be differentiated), and sums cotangents where a value fans out.
Integer and boolean values carry no gradient; `stop_gradient` returns none.

`scan` is differentiated here rather than by a table rule because it nests a
graph: the forward scan is made to also emit the carries it saw at each step, and
the VJP is a reverse scan whose body is the VJP of the forward body (BPTT derived
symbolically, not unrolled; graph size stays independent of sequence length).
"""
from __future__ import annotations

import copy

import networkx as nx

from dsl.errors import SpecError

from compiler.core.ir import SOURCE_OPS, Graph
from compiler.primitives import MissingRule, get_primitive


def grad(g: Graph, y: int, wrt: list[int], *, span=None) -> list[int]:
    """d y / d w for each w in `wrt`, for a scalar float node `y`."""
    one = g.scalar_like(1.0, y)
    return vjp(g, [y], [one], wrt, span=span)


def _differentiable(t) -> bool:
    if isinstance(t, tuple):
        return any(_differentiable(x) for x in t)
    return t.is_float


def zeros_like(g: Graph, n: int) -> int:
    t = g.type(n)
    z = g.scalar_like(0.0, n)
    if all(isinstance(d, int) for d in t.shape):
        return g.const(0.0, t.dtype, t.shape) if t.shape else z
    return g.op("broadcast_like", z, n)


def vjp(g: Graph, outputs: list[int], cts: list[int], wrt: list[int], *, span=None) -> list[int]:
    """Cotangents of `wrt` for sum_i <outputs[i], cts[i]>, built into `g`."""
    wrt_set = set(wrt)
    reach_back = set(outputs)
    for o in outputs:
        reach_back |= nx.ancestors(g.nx, o)
    # Forward reach stops at stop_gradient: what lies only behind one (floor of a
    # stopped value, say) gets no cotangent, so it needs no VJP rule.
    reach_fwd = set(wrt)
    todo = list(wrt)
    while todo:
        u = todo.pop()
        if g.node(u).op == "stop_gradient":
            continue
        for v in g.nx.successors(u):
            if v not in reach_fwd:
                reach_fwd.add(v)
                todo.append(v)
    relevant = {n for n in reach_back & reach_fwd if _differentiable(g.type(n))}

    acc: dict[int, int] = {}
    tuple_cts: dict[int, dict[int, int]] = {}

    def accumulate(n, c):
        if c is None or n not in relevant:
            return
        acc[n] = c if n not in acc else g.op("add", acc[n], c)

    for o, c in zip(outputs, cts):
        accumulate(o, c)

    order = [n for n in g.topo_order(list(outputs)) if n in relevant]
    for n in reversed(order):
        node = g.node(n)
        if node.op == "scan":
            if n in tuple_cts:
                for a, c in zip(node.args, _scan_vjp(g, n, tuple_cts[n], span)):
                    accumulate(a, c)
            continue
        if n not in acc or node.op in SOURCE_OPS:
            continue
        ct = acc[n]
        if node.op == "tuple_get":
            src = node.args[0]
            d = tuple_cts.setdefault(src, {})
            i = node.attrs["index"]
            d[i] = ct if i not in d else g.op("add", d[i], ct)
            continue
        prim = get_primitive(node.op)
        if not any(a in relevant for i, a in enumerate(node.args) if i not in prim.static_args):
            continue  # a wrt leaf, or a node no differentiable path runs through
        try:
            rule = prim.get_vjp()
        except MissingRule as e:
            raise SpecError(f"cannot differentiate through `{node.op}`: {e}", node.span or span) from None
        arg_cts = rule(g, node, ct)
        if len(arg_cts) != len(node.args):
            raise AssertionError(f"VJP rule of `{node.op}` returned {len(arg_cts)} cotangents "
                                 f"for {len(node.args)} arguments")
        for i, (a, c) in enumerate(zip(node.args, arg_cts)):
            if i in prim.static_args:
                continue
            accumulate(a, c)
    return [acc[w] if w in acc else zeros_like(g, w) for w in wrt]


# ---- scan ----------------------------------------------------------------------------------

def clone_into(dst: Graph, src: Graph, input_map: dict[int, int]) -> dict[int, int]:
    """Copy every node of `src` into `dst`; `src` inputs are replaced per `input_map`."""
    m = dict(input_map)
    for n in src.topo_order():
        if n in m:
            continue
        node = src.node(n)
        if node.op in SOURCE_OPS and node.op == "input":
            raise AssertionError(f"unmapped body input {node.attrs.get('name')}")
        m[n] = dst.add(node.op, [m[a] for a in node.args], dict(node.attrs), span=node.span,
                       name=node.name, type=node.type)
    return m


def _store_carries(g: Graph, n: int) -> list[int]:
    """Make scan `n` also emit, stacked, the carries each step started from."""
    node = g.node(n)
    a = node.attrs
    nc = a["n_carry"]
    if "stored_from" not in a:
        body = copy.copy(a["body"])
        body.meta = dict(body.meta)
        base = len(body.meta["results"])
        body.meta["results"] = list(body.meta["results"]) + list(body.inputs[:nc])
        a["body"] = body
        a["stored_from"] = base
        g.nx.nodes[n]["type"] = get_primitive("scan").infer([g.type(x) for x in node.args], a)
    base = a["stored_from"]
    return [g.add("tuple_get", [n], {"index": base + i}) for i in range(nc)]


def _scan_vjp(g: Graph, n: int, out_cts: dict[int, int], span) -> list:
    node = g.node(n)
    a = node.attrs
    body: Graph = a["body"]
    nc, nx_, nk = a["n_carry"], a["n_x"], a["n_const"]
    inits, xs, ks = node.args[:nc], node.args[nc:nc + nx_], node.args[nc + nx_:]
    results = body.meta["results"]
    # Every y counts, the stored carries too: in a second differentiation the
    # first VJP's reverse scan reads them, so cotangents reach them and must flow
    # back into the forward body (treating them as constants loses d2/dcarry2).
    n_y = len(results) - nc
    for i in range(nc):
        if not g.type(inits[i]).is_float:
            raise SpecError("cannot differentiate a scan with an integer carry", node.span or span)
    stored = _store_carries(g, n)

    bb = Graph(body.name + ".vjp")

    def inp(name, t):
        return bb.add("input", (), {"name": name, "dtype": t.dtype, "shape": t.shape})

    carry_t = [body.type(body.inputs[i]) for i in range(nc)]
    x_t = [body.type(body.inputs[nc + j]) for j in range(nx_)]
    k_t = [body.type(body.inputs[nc + nx_ + j]) for j in range(nk)]
    float_k = [j for j in range(nk) if k_t[j].is_float]
    float_x = [j for j in range(nx_) if x_t[j].is_float]
    y_with_ct = [j for j in range(n_y) if (nc + j) in out_cts]

    ct_c_in = [inp(f"ct_carry{i}", t) for i, t in enumerate(carry_t)]
    acc_in = [inp(f"ct_const{j}", k_t[j]) for j in float_k]
    x_in = [inp(f"x{j}", t) for j, t in enumerate(x_t)]
    c_in = [inp(f"carry{i}", t) for i, t in enumerate(carry_t)]
    cty_in = [inp(f"ct_y{j}", body.type(results[nc + j])) for j in y_with_ct]
    k_in = [inp(f"k{j}", t) for j, t in enumerate(k_t)]

    m = clone_into(bb, body, dict(zip(body.inputs, c_in + x_in + k_in)))
    res = [m[r] for r in results]
    seeds = res[:nc] + [res[nc + j] for j in y_with_ct]
    wrt = c_in + [x_in[j] for j in float_x] + [k_in[j] for j in float_k]
    grads = vjp(bb, seeds, ct_c_in + cty_in, wrt, span=span)
    ct_c = grads[:nc]
    ct_x = grads[nc:nc + len(float_x)]
    ct_k = grads[nc + len(float_x):]
    new_acc = [bb.op("add", acc, c) for acc, c in zip(acc_in, ct_k)]
    bb.inputs = ct_c_in + acc_in + x_in + c_in + cty_in + k_in
    bb.meta["results"] = ct_c + new_acc + ct_x

    init_ct = [out_cts[i] if i in out_cts else zeros_like(g, g.add("tuple_get", [n], {"index": i}))
               for i in range(nc)]
    acc0 = [zeros_like(g, ks[j]) for j in float_k]
    ys_ct = [out_cts[nc + j] for j in y_with_ct]
    back = g.add("scan", init_ct + acc0 + list(xs) + stored + ys_ct + list(ks),
                 {"body": bb, "n_carry": nc + len(float_k),
                  "n_x": nx_ + nc + len(ys_ct), "n_const": nk, "axis": a["axis"],
                  "reverse": not a["reverse"], "length": a["length"]}, span=node.span)
    outs = [g.add("tuple_get", [back], {"index": i}) for i in range(nc + len(float_k) + len(float_x))]
    arg_cts: list = list(outs[:nc])
    x_ct = dict(zip(float_x, outs[nc + len(float_k):]))
    arg_cts += [x_ct.get(j) for j in range(nx_)]
    k_ct = dict(zip(float_k, outs[nc:nc + len(float_k)]))
    arg_cts += [k_ct.get(j) for j in range(nk)]
    return arg_cts
