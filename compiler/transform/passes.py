"""Graph passes: dead-code elimination, CSE, constant folding, algebraic simplification.

`optimize` rebuilds the part of a graph the results need (that is the dead-code
elimination) into a fresh graph, node by node. Each node goes through the rewrite
visitors in turn (`ast.NodeVisitor` style: ``visit_<op>`` or ``generic_visit``); a
visitor returns an existing node id to replace the node, or None to keep it. What
survives is hash-consed, which is the common-subexpression elimination. Scan
bodies are optimised recursively.
"""
from __future__ import annotations

import math

from compiler.core.ir import SOURCE_OPS, Graph


class Rewrite:
    """A visitor over nodes being copied: return a node id (in the new graph) or None."""

    def __init__(self, out: Graph):
        self.out = out

    def visit(self, op: str, args: tuple, attrs: dict, type_):
        return getattr(self, "visit_" + op, self.generic_visit)(args, attrs, type_)

    def generic_visit(self, args, attrs, type_):
        return None

    # helpers
    def const_value(self, n):
        node = self.out.node(n)
        if node.op == "const":
            return node.attrs["value"]
        return None

    def same_type(self, n, type_) -> bool:
        return self.out.type(n) == type_


_FOLD = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "pow": lambda a, b: a ** b, "maximum": max, "minimum": min,
    "neg": lambda a: -a, "exp": math.exp, "log": math.log, "sqrt": math.sqrt,
    "rsqrt": lambda a: 1 / math.sqrt(a), "reciprocal": lambda a: 1 / a, "abs": abs,
    "tanh": math.tanh, "sigmoid": lambda a: 1 / (1 + math.exp(-a)), "log1p": math.log1p,
}


class ConstantFold(Rewrite):
    """Elementwise ops on filled constants become one filled constant."""

    def visit(self, op, args, attrs, type_):
        fn = _FOLD.get(op)
        if fn is None or not args or isinstance(type_, tuple) or not type_.is_float:
            return None
        if not all(isinstance(d, int) for d in type_.shape):
            return None
        vals = [self.const_value(a) for a in args]
        if any(v is None for v in vals):
            return None
        try:
            v = fn(*[float(x) for x in vals])
        except (ArithmeticError, ValueError):
            return None  # leave it for run time, where it yields inf/nan as the user asked
        if isinstance(v, complex) or not math.isfinite(v):
            return None
        return self.out.const(v, type_.dtype, type_.shape)


_BROADCASTING = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")


class Simplify(Rewrite):
    """x*1, 1*x, x+0, 0+x, x-0, x/1, x**1, x**2 = x*x, x**0.5 = sqrt(x), --x,
    stop_gradient of constants, transposes of transposes, and broadcasts that an
    elementwise op would do anyway."""

    def visit(self, op, args, attrs, type_):
        r = super().visit(op, args, attrs, type_)
        if r is None and op in _BROADCASTING:
            r = self.absorb_broadcast(op, args, attrs, type_)
        return r

    def absorb_broadcast(self, op, args, attrs, t):
        """op(broadcast_like(a, like), b) -> op(a, b) when broadcasting a against b
        already gives the result's shape (VJPs of reductions produce these)."""
        from compiler.core.types import TypeMismatch, broadcast_shapes
        new = list(args)
        for i, a in enumerate(args):
            node = self.out.node(a)
            if node.op != "broadcast_like":
                continue
            inner, other = node.args[0], new[1 - i]
            try:
                shape = broadcast_shapes(self.out.type(inner).shape, self.out.type(other).shape)
            except TypeMismatch:
                continue
            if tuple(shape) == tuple(t.shape):
                new[i] = inner
        if new == list(args):
            return None
        return self.out.add(op, new, dict(attrs), type=t)

    def _is(self, n, value):
        v = self.const_value(n)
        return v is not None and float(v) == value

    def visit_mul(self, args, attrs, t):
        a, b = args
        if self._is(b, 1.0) and self.same_type(a, t):
            return a
        if self._is(a, 1.0) and self.same_type(b, t):
            return b
        return None

    def visit_add(self, args, attrs, t):
        a, b = args
        if self._is(b, 0.0) and self.same_type(a, t):
            return a
        if self._is(a, 0.0) and self.same_type(b, t):
            return b
        return self.pads_to_concat(args, t)

    def pads_to_concat(self, args, t):
        """A sum of zero-padded pieces tiling one axis is their concat: the VJP of
        `split` (slices of one tensor: LSTM/GRU gates) without a pad per piece."""
        pieces = []
        for a in args:
            p = self._pieces(a, t)
            if p is None:
                return None
            pieces += p
        axes = {ax for ax, _, _, _ in pieces}
        if len(axes) != 1:
            return None
        (ax,) = axes
        pieces.sort(key=lambda p: p[1])
        at = 0
        for _, start, stop, _ in pieces:
            if start != at:
                return None
            at = stop
        if at != t.shape[ax]:
            return None
        return self.out.add("concat", [p[3] for p in pieces], {"axis": ax}, type=t)

    def _pieces(self, n, t, depth=0):
        """[(axis, start, stop, source)] if `n` is a zero pad on one axis of a static
        length, or a sum of those (of type t); else None."""
        node = self.out.node(n)
        if node.type != t or depth > 16:
            return None
        if node.op == "add":
            out = []
            for a in node.args:
                p = self._pieces(a, t, depth + 1)
                if p is None:
                    return None
                out += p
            return out
        if node.op != "pad" or node.attrs.get("value", 0) != 0:
            return None
        padded = [(i, pr) for i, pr in enumerate(node.attrs["pads"]) if tuple(pr) != (0, 0)]
        if len(padded) != 1:
            return None
        ax, (before, _) = padded[0]
        length = self.out.type(node.args[0]).shape[ax]
        if not isinstance(before, int) or not isinstance(length, int):
            return None
        return [(ax, before, before + length, node.args[0])]

    def visit_sub(self, args, attrs, t):
        a, b = args
        return a if self._is(b, 0.0) and self.same_type(a, t) else None

    def visit_div(self, args, attrs, t):
        a, b = args
        return a if self._is(b, 1.0) and self.same_type(a, t) else None

    def visit_pow(self, args, attrs, t):
        a, b = args
        if not self.same_type(a, t):
            return None
        if self._is(b, 1.0):
            return a
        if self._is(b, 2.0):
            return self.out.add("mul", (a, a), {}, type=t)
        if self._is(b, 0.5):
            return self.out.add("sqrt", (a,), {}, type=t)
        return None

    def visit_neg(self, args, attrs, t):
        node = self.out.node(args[0])
        return node.args[0] if node.op == "neg" else None

    def visit_transpose(self, args, attrs, t):
        perm = tuple(attrs["perm"])
        if perm == tuple(range(len(perm))):
            return args[0]
        node = self.out.node(args[0])
        if node.op == "transpose":
            inner = node.attrs["perm"]
            if tuple(inner[p] for p in perm) == tuple(range(len(perm))):
                return node.args[0]
        return None

    def visit_sum(self, args, attrs, t):
        # the sum of a filled zero constant is a zero constant
        if self._is(args[0], 0.0) and all(isinstance(d, int) for d in t.shape):
            return self.out.const(0.0, t.dtype, t.shape)
        return None

    def visit_reshape(self, args, attrs, t):
        return args[0] if self.same_type(args[0], t) else None

    def visit_broadcast_like(self, args, attrs, t):
        return args[0] if self.same_type(args[0], t) else None

    def visit_stop_gradient(self, args, attrs, t):
        return args[0] if self.out.node(args[0]).op == "const" else None


DEFAULT_PASSES = (ConstantFold, Simplify)


def optimize(g: Graph, results: dict[str, int], passes=DEFAULT_PASSES) -> tuple[Graph, dict[str, int]]:
    """A new graph holding only what `results` need, rewritten and de-duplicated."""
    out = Graph(g.name)
    out.meta = dict(g.meta)
    m = _rebuild(g, out, list(results.values()) + list(g.updates.values()), passes, {})
    out.scope = out.site = None
    for sym, (n, axis) in g.dim_sources.items():
        if n in m:
            out.dim_sources[sym] = (m[n], axis)
        else:  # keep the input that defines a dim even when no result reads its values
            out.dim_sources[sym] = (_copy_source(g, out, n, m), axis)
    for k, n in g.outputs.items():
        if k in results:
            out.outputs[k] = m[n]
            out.output_kinds[k] = g.output_kinds[k]
    for p, v in g.updates.items():
        if p in m:
            out.updates[m[p]] = m[v]
    return out, {k: m[n] for k, n in results.items()}


def _copy_source(g, out, n, m):
    node = g.node(n)
    m[n] = out.add(node.op, (), dict(node.attrs), span=node.span, name=node.name, type=node.type)
    return m[n]


def _rebuild(g: Graph, out: Graph, roots, passes, m: dict) -> dict:
    visitors = [p(out) for p in passes]
    seen: dict = {}
    for n in g.topo_order(roots):
        if n in m:
            continue
        node = g.node(n)
        d = g._data[n]  # a rewrite's nodes keep the layer path and call site of the original
        out.scope, out.site = d.get("path"), d.get("site")
        if node.op in SOURCE_OPS:
            _copy_source(g, out, n, m)
            continue
        args = tuple(m[a] for a in node.args)
        attrs = dict(node.attrs)
        if node.op == "scan":
            attrs["body"] = optimize_body(attrs["body"], passes)
        replaced = None
        for v in visitors:
            replaced = v.visit(node.op, args, attrs, node.type)
            if replaced is not None:
                break
        if replaced is not None:
            m[n] = replaced
            continue
        key = _key(node.op, args, attrs)
        if key is not None and key in seen:
            m[n] = seen[key]
            continue
        m[n] = out.add(node.op, args, attrs, span=node.span, name=node.name, type=node.type)
        if key is not None:
            seen[key] = m[n]
    return m


def optimize_body(body: Graph, passes=DEFAULT_PASSES) -> Graph:
    """Optimise a scan body, keeping its inputs (their positions are the scan's args)."""
    out = Graph(body.name)
    out.meta = dict(body.meta)
    m: dict = {}
    for n in body.inputs:
        _copy_source(body, out, n, m)
    out.inputs = [m[n] for n in body.inputs]
    results = list(body.meta["results"])
    _rebuild(body, out, results, passes, m)
    out.meta["results"] = [m[r] for r in results]
    return out


def _key(op, args, attrs):
    if op == "scan":
        return None
    try:
        frozen = tuple(sorted((k, _freeze(v)) for k, v in attrs.items()))
        hash(frozen)
    except TypeError:
        return None
    return (op, args, frozen)


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, float) and v == 0.0:
        return (0.0, math.copysign(1.0, v))  # keep -0.0 and 0.0 apart
    return v


def count_nodes(g: Graph, roots) -> int:
    """Nodes the roots depend on, scan bodies included."""
    total = 0
    for n in g.topo_order(list(roots)):
        total += 1
        node = g.node(n)
        if node.op == "scan":
            body = node.attrs["body"]
            total += count_nodes(body, body.meta["results"])
    return total


__all__ = ["optimize", "optimize_body", "count_nodes", "Rewrite", "ConstantFold", "Simplify"]
