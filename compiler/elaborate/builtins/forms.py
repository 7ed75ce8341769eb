"""Special forms (`grad`, `scan`, `repeat`, `len`, `error`) and tensor indexing."""
from __future__ import annotations

from compiler.core.values import Builtin, Closure, Instance, Record, Sequential, SymDim, Tensor
from compiler.elaborate.builtins.base import _bind, _bool, _describe, _int, _tensor, builtin
from dsl import ast as A
from dsl.errors import ShapeError, SpecError

# ---- special forms: grad, scan, repeat ------------------------------------------------------------

@builtin()
def grad(ev, args, kwargs, span):
    """grad(y, wrt): dy/dwrt of a scalar y, for a tensor or a tuple of tensors (any order)"""
    from compiler.transform.autodiff import grad as ad_grad
    b = _bind("grad", args, kwargs, span, ["y", "wrt"], {})
    y = b["y"]
    if not isinstance(y, Tensor) or y.type.rank != 0 or not y.type.is_float:
        raise ShapeError(f"grad needs a float scalar to differentiate, found {_describe(y)} "
                         "(reduce it with sum or mean first)", span)
    wrt = b["wrt"]
    single = isinstance(wrt, Tensor)
    items = (wrt,) if single else wrt.as_tuple() if isinstance(wrt, Record) else wrt
    if not isinstance(items, tuple) or not all(isinstance(w, Tensor) for w in items):
        raise SpecError(f"grad's `wrt` must be a tensor or a tuple of tensors, found {_describe(wrt)}",
                        span)
    for w in items:
        if not w.type.is_float:
            raise ShapeError(f"cannot differentiate with respect to an integer tensor {w.type}", span)
    nodes = ad_grad(ev.graph, ev.lift(y), [ev.lift(w) for w in items], span=span)
    out = tuple(Tensor(ev.frame, n) for n in nodes)
    return out[0] if single else out


@builtin()
def scan(ev, args, kwargs, span):
    """scan(f, xs, init, axis=0, reverse=false, length=none): fold f(carry, x_t) -> (carry, y_t)"""
    from compiler.core.ir import Graph
    from compiler.elaborate.scope import Frame
    b = _bind("scan", args, kwargs, span, ["f", "xs", "init", "axis", "reverse", "length"],
              {"xs": (), "axis": 0, "reverse": False, "length": None, "init": ()})
    f = b["f"]
    if not isinstance(f, (Closure, Instance, Builtin, Sequential)):
        raise SpecError(f"scan's first argument must be a function or layer, found {_describe(f)}", span)
    xs = b["xs"]
    x_single = isinstance(xs, Tensor)
    xs_flat = (xs,) if x_single else xs
    if not isinstance(xs_flat, tuple) or not all(isinstance(x, Tensor) for x in xs_flat):
        raise SpecError(f"scan's `xs` must be a tensor or a tuple of tensors, found {_describe(xs)}", span)
    axis = _int(b["axis"], span, "axis")
    if axis < 0:
        raise SpecError("scan's axis must be non-negative", span)
    length = b["length"]
    for x in xs_flat:
        if x.type.rank <= axis:
            raise ShapeError(f"scan over axis {axis} of {x.type}: no such axis", span)
        d = x.type.shape[axis]
        if length is None:
            length = d
        elif str(length) != str(d):
            raise ShapeError(f"scanned inputs disagree on the length of axis {axis}: {length} vs {d}", span)
    if length is None:
        raise SpecError("scan without `xs` needs `length`", span)
    if isinstance(length, bool) or not isinstance(length, (int, str)) or \
            isinstance(length, int) and length < 0:
        raise SpecError(f"scan's `length` must be a non-negative integer or a dim, found "
                        f"{_describe(length)}", span)
    length = str(length) if isinstance(length, SymDim) else length
    init_leaves, rebuild = _flatten(b["init"], span, "init")
    init_leaves = [_tensor(ev, v, span, "init") for v in init_leaves]

    outer = ev.frame
    body = Graph(f"{outer.graph.name}.scan")
    frame = Frame(body, outer, length=length, axis=axis)
    carries = [Tensor(frame, body.add("input", (), {"name": f"carry{i}", "dtype": t.type.dtype,
                                                      "shape": t.type.shape}))
               for i, t in enumerate(init_leaves)]
    slices = []
    for i, x in enumerate(xs_flat):
        t = x.type
        shape = t.shape[:axis] + t.shape[axis + 1:]
        slices.append(Tensor(frame, body.add("input", (), {"name": f"x{i}", "dtype": t.dtype,
                                                             "shape": shape})))
    ev.frame = frame
    try:
        x_arg = slices[0] if x_single else tuple(slices)
        res = ev.call(f, [rebuild(carries), x_arg] if xs_flat else [rebuild(carries)], {}, span)
        if not isinstance(res, tuple) or len(res) != 2:
            raise SpecError(f"a scan body must return (new_carry, y), found {_describe(res)}", span)
        new_leaves, rebuild_new = _flatten(res[0], span, "the new carry")
        if len(new_leaves) != len(init_leaves):
            raise SpecError(f"the scan body returns {len(new_leaves)} carried values, init has "
                            f"{len(init_leaves)}", span)
        y_leaves, rebuild_y = _flatten(res[1], span, "y")
        new_nodes = [ev.lift(ev.to_tensor(v, span, like=c)) for v, c in zip(new_leaves, carries)]
        for i, (n, c) in enumerate(zip(new_nodes, carries)):
            if body.type(n) != c.type:
                raise ShapeError(f"scan carry {i} enters as {c.type} but the body returns "
                                 f"{body.type(n)}", span)
        y_nodes = [ev.lift(_tensor(ev, v, span, "y")) for v in y_leaves]
    finally:
        ev.frame = outer
    # body inputs in the contract's order: carries, x slices (incl. hoisted noise), captures
    hoisted = [n for _, n in frame.extra_xs]
    captures = [frame.captures[o] for o in frame.capture_list]
    body.inputs = [c.node for c in carries] + [s.node for s in slices] + hoisted + captures
    body.meta["results"] = new_nodes + y_nodes
    xs_all = list(xs_flat) + [t for t, _ in frame.extra_xs]
    const_nodes = list(frame.capture_list)
    node = outer.graph.add("scan", [ev.lift(t) for t in init_leaves] + [ev.lift(t) for t in xs_all]
                           + const_nodes,
                           {"body": body, "n_carry": len(init_leaves), "n_x": len(xs_all),
                            "n_const": len(const_nodes), "axis": axis, "reverse": _bool(b["reverse"], span, "reverse"),
                            "length": length}, span=span)
    outs = [Tensor(outer, outer.graph.add("tuple_get", [node], {"index": i}, span=span))
            for i in range(len(init_leaves) + len(y_nodes))]
    return (rebuild_new(outs[:len(init_leaves)]), rebuild_y(outs[len(init_leaves):]))


def _flatten(tree, span, what):
    """Leaves of a nested tuple of tensors, and a function rebuilding the structure."""
    if isinstance(tree, Record):
        tree = tree.as_tuple()
    if isinstance(tree, tuple):
        parts = [_flatten(t, span, what) for t in tree]
        leaves = [leaf for p in parts for leaf in p[0]]

        def rebuild(vals, parts=parts):
            out, i = [], 0
            for p_leaves, p_rebuild in parts:
                out.append(p_rebuild(vals[i:i + len(p_leaves)]))
                i += len(p_leaves)
            return tuple(out)
        return leaves, rebuild
    if tree is None:
        return [], lambda vals: ()
    return [tree], lambda vals: vals[0]


@builtin(lazy=True)
def repeat(ev, args, kwargs, span, scope):
    """repeat(n, Layer(...)): n instances of the layer, applied in sequence"""
    if kwargs or len(args) != 2:
        raise SpecError("repeat takes two arguments: repeat(n, Layer(...))", span)
    n = ev.eval(args[0], scope)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SpecError(f"repeat needs a positive integer count, found {_describe(n)}", args[0].span)
    from compiler.core.limits import describe, limit
    if n > limit("DLC_MAX_REPEAT"):
        raise SpecError(f"repeat count {n:,} is over the limit of {describe('DLC_MAX_REPEAT')}",
                        args[0].span)
    items = []
    for _ in range(n):
        v = ev.eval(args[1], scope)
        if not isinstance(v, Instance):
            raise SpecError(f"repeat needs a layer instance such as `Block(64)`, found {_describe(v)}",
                            args[1].span)
        items.append(v)
    return Sequential(items, owner=ev.instance)


@builtin()
def identity(ev, args, kwargs, span):
    """identity(x) = x"""
    return _bind("identity", args, kwargs, span, ["x"], {})["x"]


@builtin("error")
def error_(ev, args, kwargs, span):
    """error(message): stop compiling with a located error, e.g. for an unknown
    value of a string hyperparameter"""
    msg = _bind("error", args, kwargs, span, ["message"], {})["message"]
    raise SpecError(msg if isinstance(msg, str) else _describe(msg), span)


@builtin("len")
def len_(ev, args, kwargs, span):
    """len(tuple)"""
    v = _bind("len", args, kwargs, span, ["x"], {})["x"]
    if isinstance(v, tuple):
        return len(v)
    if isinstance(v, Sequential):
        return len(v.items)
    raise SpecError(f"len needs a tuple or a stack of layers, found {_describe(v)}", span)


# ---- indexing ------------------------------------------------------------------------------------

def index_tensor(ev, x: Tensor, subs, scope, span):
    """x[...]: slices, integers (drop the axis), `...`, and one integer tensor (gather)."""
    rank = x.type.rank
    n_ell = sum(isinstance(s, A.Ellipsis_) for s in subs)
    if n_ell > 1:
        raise SpecError("at most one `...` in an index", span)
    explicit = len(subs) - n_ell
    if explicit > rank:
        raise ShapeError(f"too many indices ({explicit}) for {x.type}", span)
    full = []
    for s in subs:
        if isinstance(s, A.Ellipsis_):
            full += [A.Slice(None, None, None)] * (rank - explicit)
        else:
            full.append(s)
    full += [A.Slice(None, None, None)] * (rank - len(full))
    axis = 0
    for s in full:
        if isinstance(s, A.Slice):
            start, stop, step = (None if p is None else ev.eval(p, scope) for p in (s.start, s.stop, s.step))
            for p in (start, stop, step):
                if p is not None and (isinstance(p, bool) or not isinstance(p, int)):
                    raise SpecError(f"slice bounds must be integers, found {_describe(p)}", span)
            if step == 0:
                raise SpecError("a slice step must not be zero", span)
            if (start, stop, step) != (None, None, None) and (start or 0, stop, step or 1) != (0, None, 1):
                x = ev.add("slice", [x], span, axis=axis, start=start, stop=stop, step=step or 1)
            axis += 1
        elif isinstance(s, int) and not isinstance(s, bool):
            d = x.type.shape[axis]
            if isinstance(d, int) and not -d <= s < d:
                raise ShapeError(f"index {s} is out of range for axis {axis} of size {d}", span)
            stop = s + 1 if s != -1 else None
            x = ev.add("slice", [x], span, axis=axis, start=s, stop=stop, step=1)
            x = ev.add("squeeze", [x], span, axis=axis)
        elif isinstance(s, Tensor):
            x = ev.add("take", [x, s], span, axis=axis)
            axis += s.type.rank
        else:
            raise SpecError(f"cannot index with {_describe(s)}", span)
    return x


