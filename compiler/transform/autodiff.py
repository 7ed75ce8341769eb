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


def vjp(g: Graph, outputs: list[int], cts: list[int], wrt: list[int], *, span=None,
        leaves: bool = False) -> list[int]:
    """Cotangents of `wrt` for sum_i <outputs[i], cts[i]>, built into `g`.

    `leaves`: the partial derivatives, each `wrt` node held as an independent leaf (no
    cotangent flows from one `wrt` node back into another it depends on): what a VJP
    rule returns per argument, autodiff then carrying each further itself."""
    wrt_set = set(wrt)
    # The nodes between the seeds and `wrt`: one walk back from all the seeds, then one
    # sweep forward in id (= topological) order. The forward reach stops at
    # stop_gradient: what lies only behind one (floor of a stopped value, say) gets no
    # cotangent, so it needs no VJP rule.
    back = g.ancestors(outputs)
    reached = set(w for w in wrt if w in back)
    for n in sorted(back):
        if n not in reached and any(a in reached and g.node(a).op != "stop_gradient"
                                    for a in g.node(n).args):
            reached.add(n)
    order = [n for n in sorted(reached) if _differentiable(g.type(n))]
    relevant = set(order)

    acc: dict[int, int] = {}
    tuple_cts: dict[int, dict[int, int]] = {}

    def accumulate(n, c):
        if c is None or n not in relevant:
            return
        acc[n] = c if n not in acc else g.op("add", acc[n], c)

    for o, c in zip(outputs, cts):
        accumulate(o, c)

    saved = g.scope, g.site, g.default_span
    try:
        _backward(g, order, relevant, acc, tuple_cts, accumulate, span,
                  wrt_set if leaves else frozenset())
    finally:
        g.scope, g.site, g.default_span = saved
    return [acc[w] if w in acc else zeros_like(g, w) for w in wrt]


def _grad_path(path):
    """The layer path of the gradient nodes of a node at ``path`` (``dense0/grad``)."""
    if path is None:
        return "grad"
    return path if path == "grad" or path.endswith("/grad") else path + "/grad"


def _backward(g, order, relevant, acc, tuple_cts, accumulate, span, stop=frozenset()):
    """The reverse sweep of `vjp`: each node's rule, its nodes labelled with the node's
    layer path (``.../grad``) and user call site, so artifacts and errors name them.
    Nodes in `stop` (`vjp(leaves=True)`'s wrt) keep their cotangent, passing none on."""
    data = g._data
    for n in reversed(order):
        if n in stop:
            continue
        d = data[n]
        g.scope, g.site, g.default_span = _grad_path(d.get("path")), d.get("site"), d["span"]
        node = g.node(n)
        if node.op == "scan":
            if n in tuple_cts:
                for a, c in zip(node.args, _scan_vjp(g, n, tuple_cts[n], span, relevant)):
                    accumulate(a, c)
            continue
        if isinstance(node.type, tuple):
            # a multi-result primitive (eigh, svd, qr): one cotangent per result
            if n in tuple_cts:
                _multi_vjp(g, node, tuple_cts[n], accumulate, span, relevant)
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
            rule = vjp_rule(prim)
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


def _multi_vjp(g: Graph, node, cts: dict[int, int], accumulate, span, relevant=()) -> None:
    """Apply a multi-result primitive's rule to its per-result cotangents (None if unused).
    A rule marked ``wants_needed`` also gets which arguments need a cotangent (a fused
    rule computing them all at once can skip the others: `lstm`'s x, say)."""
    prim = get_primitive(node.op)
    try:
        rule = vjp_rule(prim)
    except MissingRule as e:
        raise SpecError(f"cannot differentiate through `{node.op}`: {e}", node.span or span) from None
    per_result = [cts.get(i) for i in range(len(node.type))]
    if getattr(rule, "wants_needed", False):
        arg_cts = rule(g, node, per_result, needed=tuple(a in relevant for a in node.args))
    else:
        arg_cts = rule(g, node, per_result)
    for i, (a, c) in enumerate(zip(node.args, arg_cts)):
        if i not in prim.static_args:
            accumulate(a, c)


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
        g.data(n)["type"] = get_primitive("scan").infer([g.type(x) for x in node.args], a)
    base = a["stored_from"]
    return [g.add("tuple_get", [n], {"index": base + i}) for i in range(nc)]


def _scan_vjp(g: Graph, n: int, out_cts: dict[int, int], span, relevant=None) -> list:
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
    # only the xs and consts a gradient is asked through (not the data input x)
    def wanted(v):
        return relevant is None or v in relevant
    float_k = [j for j in range(nk) if k_t[j].is_float and wanted(ks[j])]
    float_x = [j for j in range(nx_) if x_t[j].is_float and wanted(xs[j])]
    y_with_ct = [j for j in range(n_y) if (nc + j) in out_cts]

    ct_c_in = [inp(f"ct_carry{i}", t) for i, t in enumerate(carry_t)]
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
    bb, (ct_c, ct_x, ct_k), res_ys = _read_residuals(g, n, bb, m, body, c_in + x_in,
                                                     (ct_c, ct_x, ct_k))
    ct_c_in, x_in, c_in, cty_in, k_in = ([bb.meta["remap"][v] for v in vs]
                                         for vs in (ct_c_in, x_in, c_in, cty_in, k_in))
    res_in = bb.meta["residual_inputs"]
    # A const's per-step cotangent is summed over the steps. Its terms that are a
    # weight gradient h_tᵀ c_t or a bias gradient Σ_b c_t are summed after the loop
    # instead, as one matmul / one sum over the stacked steps (the factors become ys,
    # or are the stacked xs / stored carries already outside); only the rest is
    # accumulated in a carry.
    ys_ct = [out_cts[nc + j] for j in y_with_ct]
    outer_of = dict(zip(x_in + c_in + cty_in + res_in, list(xs) + stored + ys_ct + res_ys))
    split = [_hoistable(bb, c) for c in ct_k]
    acc_js = [i for i, (_, rest) in enumerate(split) if rest]
    acc_in = [inp(f"ct_const{float_k[i]}", k_t[float_k[i]]) for i in acc_js]
    new_acc = []
    for acc, i in zip(acc_in, acc_js):
        rest = split[i][1]
        total = rest[0]
        for r in rest[1:]:
            total = bb.op("add", total, r)
        new_acc.append(bb.op("add", acc, total))
    factor_ys: list[int] = []   # body nodes emitted per step for the hoisted terms

    def factor(node_id):
        if node_id in outer_of:
            return ("outer", outer_of[node_id])
        if node_id not in factor_ys:  # one y per node, however many terms read it
            factor_ys.append(node_id)
        return ("y", factor_ys.index(node_id))

    hoisted = [[(kind, [factor(f) for f in fs]) for kind, fs in terms] for terms, _ in split]
    bb.inputs = ct_c_in + acc_in + x_in + c_in + cty_in + res_in + k_in
    bb.meta["results"] = ct_c + new_acc + ct_x + factor_ys

    init_ct = [out_cts[i] if i in out_cts else zeros_like(g, g.add("tuple_get", [n], {"index": i}))
               for i in range(nc)]
    acc0 = [zeros_like(g, ks[float_k[i]]) for i in acc_js]
    n_carry = nc + len(acc_js)
    back = g.add("scan", init_ct + acc0 + list(xs) + stored + ys_ct + res_ys + list(ks),
                 {"body": bb, "n_carry": n_carry,
                  "n_x": nx_ + nc + len(ys_ct) + len(res_ys), "n_const": nk, "axis": a["axis"],
                  "reverse": not a["reverse"], "length": a["length"]}, span=node.span)
    n_out = n_carry + len(float_x) + len(factor_ys)
    outs = [g.add("tuple_get", [back], {"index": i}) for i in range(n_out)]
    fy = outs[n_carry + len(float_x):]
    arg_cts: list = list(outs[:nc])
    x_ct = dict(zip(float_x, outs[n_carry:n_carry + len(float_x)]))
    arg_cts += [x_ct.get(j) for j in range(nx_)]
    k_ct = {}
    for i, j in enumerate(float_k):
        total = outs[nc + acc_js.index(i)] if i in acc_js else None
        for kind, fs in hoisted[i]:
            stacked = [v if where == "outer" else fy[v] for where, v in fs]
            term = _after_loop(g, kind, stacked)
            total = term if total is None else g.op("add", total, term)
        k_ct[j] = total
    arg_cts += [k_ct.get(j) for j in range(nk)]
    return arg_cts


def _read_residuals(g: Graph, n: int, bb: Graph, m: dict, body: Graph, step_inputs: list,
                    results: tuple):
    """The VJP body reads the forward step's intermediates instead of recomputing them.

    `bb` holds a clone of the forward body (``m``: body node -> clone) and the VJP
    nodes built on it. Every per-step clone (one that depends on a carry or an x) that
    a VJP node reads becomes a *residual*: the forward scan emits it as an extra y,
    and a rebuilt VJP body takes it as one more x, so the clone (and what only it
    needed) is dead there. Constants and loop-invariant values are still recomputed.
    Returns (new body, results remapped, residual ys of the forward scan)."""
    clones = {v: k for k, v in m.items()}
    # descendants of the step inputs: one forward sweep in id (= topological) order
    per_step = set(step_inputs)
    for u in bb.topo_order():
        if u not in per_step and any(a in per_step for a in bb.node(u).args):
            per_step.add(u)
    live = bb.ancestors([x for group in results for x in group])
    need = []

    def storable(v):  # a tensor (not a nested scan's tuple), computed per step
        return (v in clones and v in per_step and v not in step_inputs and v not in need
                and bb.node(v).op not in SOURCE_OPS and not isinstance(bb.type(v), tuple))
    for u in sorted(live):
        if u in clones:
            continue
        for a in bb.node(u).args:
            if storable(a):
                need.append(a)
    for group in results:
        for r in group:
            if storable(r):
                need.append(r)
    # the forward scan emits them (appended: earlier projections keep their indices)
    node = g.node(n)
    a = node.attrs
    fbody = copy.copy(a["body"])
    fbody.meta = dict(fbody.meta)
    base = len(fbody.meta["results"])
    fbody.meta["results"] = list(fbody.meta["results"]) + [clones[v] for v in need]
    a["body"] = fbody
    g.nx.nodes[n]["type"] = get_primitive("scan").infer([g.type(x) for x in node.args], a)
    res_ys = [g.add("tuple_get", [n], {"index": base + i}) for i in range(len(need))]
    # rebuild the VJP body with the residuals as inputs
    nb = Graph(bb.name)
    remap = {}
    for v in bb.topo_order():
        if bb.node(v).op == "input":
            t = bb.type(v)
            remap[v] = nb.add("input", (), dict(bb.node(v).attrs))
    res_in = []
    for i, v in enumerate(need):
        t = bb.type(v)
        remap[v] = nb.add("input", (), {"name": f"residual{i}", "dtype": t.dtype,
                                          "shape": tuple(t.shape)})
        res_in.append(remap[v])
    mm = clone_into(nb, bb, remap)
    nb.meta["remap"] = mm
    nb.meta["residual_inputs"] = res_in
    return nb, tuple([mm[r] for r in group] for group in results), res_ys


def _hoistable(bb: Graph, ct: int) -> tuple[list, list]:
    """Split a per-step cotangent into terms to sum after the loop, and the rest.

    Terms: ``("mm", [a, c])`` for ``aᵀ c`` with a [N, I], c [N, O] (a weight gradient);
    ``("sum0", [c])`` for ``Σ_n c[n]`` of c [N, O] (a bias gradient)."""
    node = bb.node(ct)
    if node.op == "add" and all(bb.type(x) == node.type for x in node.args):
        l_terms, l_rest = _hoistable(bb, node.args[0])
        r_terms, r_rest = _hoistable(bb, node.args[1])
        return l_terms + r_terms, l_rest + r_rest
    if node.op == "matmul" and node.type.rank == 2:
        p, c = node.args
        pn = bb.node(p)
        if (pn.op == "transpose" and tuple(pn.attrs["perm"]) == (1, 0)
                and bb.type(c).rank == 2):
            return [("mm", [pn.args[0], c])], []
    if (node.op == "sum" and node.type.rank == 1 and bb.type(node.args[0]).rank == 2
            and not node.attrs.get("keepdims", False)
            and node.attrs.get("axis") in (0, (0,), -2, (-2,))):
        return [("sum0", [node.args[0]])], []
    return [], [ct]


def _after_loop(g: Graph, kind: str, stacked: list[int]) -> int:
    """The sum over the steps of one hoisted term, from its factors stacked over the
    steps (the step axis inserted anywhere, the same for every factor)."""
    if kind == "sum0":
        (c,) = stacked
        r = g.type(c).rank
        return g.op("sum", c, axis=tuple(range(r - 1)), keepdims=False)
    a, c = stacked
    a2 = g.op("reshape", a, shape=(-1, g.type(a).shape[-1]))
    c2 = g.op("reshape", c, shape=(-1, g.type(c).shape[-1]))
    return g.op("matmul", g.op("transpose", a2, perm=(1, 0)), c2)


def vjp_rule(prim):
    """The op's VJP rule: its own, else (a composite) its decomposition's, differentiated."""
    if prim.vjp_rule is None and prim.decomposition is not None:
        return decomposed_vjp
    return prim.get_vjp()


def decomposed_vjp(g, node, ct):
    """A composite's default VJP: differentiate its decomposition, built on the args.
    A multi-result composite gets one cotangent per result (None where unused)."""
    prim = get_primitive(node.op)
    out = prim.decomposition(g, list(node.args), dict(node.attrs))
    if isinstance(g.type(out), tuple):
        outs = [g.add("tuple_get", [out], {"index": i}) for i, c in enumerate(ct) if c is not None]
        seeds = [c for c in ct if c is not None]
    else:
        outs, seeds = [out], [ct]
    # an arg passed twice (attention(x, x, x)) gets its whole cotangent once
    wrt = list(dict.fromkeys(a for i, a in enumerate(node.args)
                             if i not in prim.static_args and g.type(a).is_float))
    # leaves: an argument computed from another (lstm_grad's cotangent of ys from W) gets
    # its own cotangent; autodiff carries it back (else that path would count twice)
    cts = dict(zip(wrt, vjp(g, outs, seeds, wrt, leaves=True))) if wrt and outs else {}
    return [cts.pop(a, None) for a in node.args]


def _fused_grad_decomposition(op: str, n_res: int, wrt_args: int | None = None):
    """The decomposition of a composite's fused VJP (`op`_grad: `lstm_grad`, `gru_grad` in
    compiler/primitives/recurrent.py, `attention_grad` in composite.py): the VJP of
    `op`'s decomposition as one tuple, the meaning of the fused rule and what backends
    without a native rule run. Its args are `op`'s then one cotangent per result of `op`;
    its results the cotangents of the first `wrt_args` operands (all by default)."""
    def decomposition(g, args, attrs):
        n_args = len(args) - n_res
        fwd = {k: v for k, v in attrs.items() if k != "needed"}
        out = get_primitive(op).decomposition(g, list(args[:n_args]), fwd)
        outs = ([g.add("tuple_get", [out], {"index": i}) for i in range(n_res)]
                if isinstance(g.type(out), tuple) else [out])
        operands = args[:n_args if wrt_args is None else wrt_args]
        needed = attrs.get("needed", (True,) * len(operands))
        # an operand passed twice (h0 = c0 = zeros, attention(x, x, x)) gets its whole
        # cotangent once
        wrt = list(dict.fromkeys(a for a, k in zip(operands, needed) if k))
        cts = dict(zip(wrt, vjp(g, outs, list(args[n_args:]), wrt, leaves=True)))
        return g.op("pack", *[cts.pop(a) if a in cts else zeros_like(g, a) for a in operands])
    return decomposition


get_primitive("lstm_grad").decompose(_fused_grad_decomposition("lstm", 3))
get_primitive("gru_grad").decompose(_fused_grad_decomposition("gru", 2))
get_primitive("attention_grad").decompose(_fused_grad_decomposition("attention", 1, wrt_args=3))
