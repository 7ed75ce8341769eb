"""Projections after an optimizer step: `constrain PREFIX ... KIND` in a train block
or a player block.

    constrain critic clip(0.01)          # every critic weight into [-0.01, 0.01] (WGAN)
    constrain enc max_norm(3.0, axis = 0) # each column of enc's matrices: L2 norm <= 3
    constrain nmf.W nmf.H nonneg          # nonnegativity (NMF)
    constrain simplex fn(w) -> relu(w) / sum(relu(w))   # any projection: a function of
                                          # the updated value, in the model's scope

The projection is built into the train-step graph: the new parameter value is
``project(optimizer update)`` (``new:P`` is already projected), so NumPy, PyTorch,
ONNX and the exported train step all apply it, and the optimizer's slots are not
touched (projected gradient descent). Several constraints on one parameter apply in
the order written. A top-level `constrain` applies to the parameters it names in
whichever group trains them (the model, or a player); a player's own `constrain`
may name only that player's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dsl import ast as A
from dsl.errors import SpecError, Span

KINDS = {"clip": ("c",), "max_norm": ("c", "axis"), "nonneg": (), "fn": ()}
USAGE = ("usage: `constrain PREFIX ... clip(C)` | `max_norm(C, axis = 0)` | `nonneg` | "
         "`fn(w) -> EXPR`, e.g. `constrain critic clip(0.01)`")
# max_norm's guard against a zero norm (Keras's `MaxNorm` uses the same epsilon)
EPS = 1e-7


@dataclass
class Constraint:
    kind: str               # clip | max_norm | nonneg
    prefixes: list
    params: list            # resolved parameter names
    c: float = 0.0
    axis: int = 0
    span: Span | None = None
    extra: dict = field(default_factory=dict)

    def key(self):
        """What a resume must not change (the config hash)."""
        return [self.kind, list(self.params), self.c, self.axis, repr(self.extra.get("fn"))]


def parse(prog, model, opts: list, param_group, dotted, const, allowed=None) -> list:
    """The `constrain` options of one block -> [Constraint]. `param_group(model, opt)`
    resolves prefixes (shared with players' `params`); `allowed` limits them to a
    player's parameters."""
    out = []
    for opt in opts:
        if len(opt.args) < 2:
            raise SpecError("`constrain` expects parameter prefixes and a projection",
                            opt.span, hint=USAGE)
        *where, what = opt.args
        kind, pos, kw = _kind(what, const, prog)
        prefixes, params = param_group(model, A.Option(opt.name, where, span=opt.span))
        if allowed is not None:
            stray = [p for p in params if p not in allowed]
            if stray:
                raise SpecError(f"`constrain` in a player names `{stray[0]}`, which the player "
                                "does not train", opt.span,
                                hint="constrain it in its own player, or at the top level")
        c = Constraint(kind, prefixes, params, span=opt.span)
        if kind == "fn":
            c.extra["fn"] = what
        names = KINDS[kind]
        if len(pos) > len(names):
            raise SpecError(f"`{kind}` takes at most {len(names)} arguments", what.span,
                            hint=USAGE)
        vals = dict(zip(names, pos))
        for k, v in kw.items():
            if k not in names or k in vals:
                raise SpecError(f"`{kind}` has no option `{k}`" if k not in names else
                                f"`{kind}` option `{k}` given twice", what.span, hint=USAGE)
            vals[k] = v
        if "c" in names:
            v = vals.get("c")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise SpecError(f"`{kind}` needs a bound C > 0, e.g. `{kind}(0.01)`", what.span)
            c.c = float(v)
        if "axis" in names:
            a = vals.get("axis", 0)
            if isinstance(a, bool) or not isinstance(a, int):
                raise SpecError("`max_norm` `axis` must be an integer", what.span)
            c.axis = a
        out.append(c)
    return out


def _kind(e, const, prog):
    if isinstance(e, A.Lambda):
        if len(e.params) != 1 or not isinstance(e.params[0], A.SigParam):
            raise SpecError("a projection `fn` takes one argument, the updated parameter",
                            e.span, hint="e.g. `fn(w) -> maximum(w, 0)`")
        return "fn", [], {}
    if isinstance(e, A.Name) and e.id in KINDS and e.id != "fn":
        return e.id, [], {}
    if isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id in KINDS:
        return (e.func.id, [const(prog, a) for a in e.args],
                {k.name: const(prog, k.value) for k in e.kwargs})
    name = e.func.id if isinstance(e, A.Call) and isinstance(e.func, A.Name) else \
        (e.id if isinstance(e, A.Name) else "?")
    raise SpecError(f"unknown projection `{name}`", e.span, hint=USAGE)


def for_param(constraints: list, name: str) -> list:
    return [c for c in constraints if name in c.params]


def project(g, node: int, value: int, constraints: list) -> int:
    """`value` (a new value of param `node`) projected by each constraint in turn."""
    t = g.type(node)
    for c in constraints:
        if c.kind == "fn":
            value = _apply_fn(g, node, value, c)
        elif c.kind == "clip":
            value = g.op("minimum", g.op("maximum", value, g.const(-c.c, t.dtype)),
                         g.const(c.c, t.dtype))
        elif c.kind == "nonneg":
            value = g.op("maximum", value, g.const(0.0, t.dtype))
        elif c.kind == "max_norm":
            rank = len(t.shape)
            axis = c.axis if rank == 0 else c.axis % rank
            if rank and not -rank <= c.axis < rank:
                raise SpecError(f"`max_norm(axis = {c.axis})` does not fit parameter "
                                f"`{g.node(node).attrs['name']}` of rank {rank}", c.span)
            sq = g.op("mul", value, value)
            norm = g.op("sqrt", g.op("sum", sq, axis=axis, keepdims=True)) if rank else \
                g.op("abs", value)
            # scale = min(1, c / (norm + eps)): rows within the ball are left alone
            scale = g.op("minimum", g.const(1.0, t.dtype),
                         g.op("div", g.const(c.c, t.dtype),
                              g.op("add", norm, g.const(EPS, t.dtype))))
            value = g.op("mul", value, scale)
    return value


def _apply_fn(g, node: int, value: int, c: Constraint) -> int:
    """`fn(w) -> EXPR` applied to the updated value, evaluated in the model's scope by
    the evaluator that built the graph (so hyperparameters and builtins are in reach)."""
    from compiler.core.values import Tensor
    ev, scope = g.meta["instances"], g.meta["scope"]
    name = g.node(node).attrs["name"]
    closure = ev.eval(c.extra["fn"], scope)
    out = ev.call(closure, [Tensor(ev.frame, value)], {}, c.extra["fn"].span)
    if not isinstance(out, Tensor) or g.type(out.node) != g.type(node):
        got = g.type(out.node) if isinstance(out, Tensor) else type(out).__name__
        raise SpecError(f"the projection of `{name}` must return a tensor like it, "
                        f"{g.type(node)}; it returns {got}", c.extra["fn"].span)
    return out.node
