"""Calls: functions, lambdas, layer instances (created on first call, shared when
reused), models used as sub-models, and the call stack that bounds recursion."""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path

from compiler.core.types import TypeMismatch
from compiler.core.values import Builtin, Closure, Instance, LayerDef, Record, Sequential
from compiler.elaborate.checks import _NO_RETURN, MAX_CALL_DEPTH, _call_site, _check_annot, describe
from compiler.elaborate.scope import Scope
from dsl import ast as A
from dsl.errors import ShapeError, SpecError


# the bundled std library: a call site in it is not the user's (see `Graph.site`)
_STD_DIR = str(Path(__file__).resolve().parents[2] / "specs" / "std")


def _in_user_code(span) -> bool:
    src = getattr(span, "source", None)
    path = getattr(src, "path", None)
    return path is not None and not str(path).startswith(_STD_DIR)


class Calls:
    """Calling anything callable: closures, builtins, layer definitions, instances."""


    def eval_Call(self, e, scope):
        f = self.eval(e.func, scope)
        if isinstance(f, Builtin) and f.lazy:
            return f.fn(self, e.args, {k.name: k.value for k in e.kwargs}, e.span, scope)
        args = [self.eval(a, scope) for a in e.args]
        kwargs = {}
        for k in e.kwargs:
            if k.name in kwargs:
                raise SpecError(f"keyword argument `{k.name}` given twice", k.span)
            kwargs[k.name] = self.eval(k.value, scope)
        return self.call(f, args, kwargs, e.span, arg_spans=[a.span for a in e.args])

    # ---- calls ----------------------------------------------------------------------------
    def call(self, f, args, kwargs, span, arg_spans=None):
        if isinstance(f, Builtin):
            try:
                return f.fn(self, args, kwargs, span)
            except TypeMismatch as e:
                raise ShapeError(f"`{f.name}`: {e}", span) from None
        if isinstance(f, Closure):
            return self.call_closure(f, args, kwargs, span)
        if isinstance(f, LayerDef):
            return self.instantiate(f, args, kwargs, span)
        if isinstance(f, Instance):
            return self.apply(f, args, kwargs, span)
        if isinstance(f, Sequential):
            if kwargs or len(args) != 1:
                raise SpecError("a `repeat` stack takes exactly one input", span)
            v = args[0]
            for inst in f.items:
                v = self.apply(inst, [v], {}, span)
            return v
        raise SpecError(f"{describe(f)} is not callable", span)

    @contextmanager
    def entering(self, name: str, span, key=None):
        """Track expansion. Layers and functions are expanded at compile time, so a
        recursion must end by a compile-time base case; one that has not ended after
        MAX_CALL_DEPTH nested calls is reported with its cycle (``A -> B -> A``), located
        at the call that first closed it. A definition may legitimately appear twice on
        one path when passed as a value (``W(W(Dense(3)))``).
        `key` identifies the definition (distinct lambdas share the label `<fn>`)."""
        key = name if key is None else key
        if len(self.call_stack) >= MAX_CALL_DEPTH:
            stack = self.call_stack + [(key, name, span)]
            keys = [k for k, _, _ in stack]
            for i, k in enumerate(keys):
                if k in keys[i + 1:]:
                    j = keys.index(k, i + 1)
                    labels = [label for _, label, _ in stack[i:j + 1]]
                    raise SpecError(f"recursion is not allowed: {' -> '.join(labels)} (layers "
                                    "and functions are expanded at compile time; this one "
                                    f"had not ended after {MAX_CALL_DEPTH} nested calls)",
                                    stack[j][2] or span)
            raise SpecError(f"calls nested more than {MAX_CALL_DEPTH} deep", span)
        self.call_stack.append((key, name, span))
        try:
            yield
        finally:
            self.call_stack.pop()

    def bind_hparams(self, what: str, hps: list, args, kwargs, span, scope: Scope):
        names = [h.name for h in hps]
        if len(args) > len(hps):
            raise SpecError(f"{what} takes at most {len(hps)} argument"
                            f"{'s' if len(hps) != 1 else ''} ({', '.join(names)}), got {len(args)}",
                            span)
        values = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                raise SpecError(f"{what} has no parameter `{k}`", span,
                                hint=f"did you mean `{close[0]}`?" if close else
                                f"its parameters are: {', '.join(names) or 'none'}")
            if k in values:
                raise SpecError(f"{what}: `{k}` given both by position and by keyword", span)
            values[k] = v
        for h in hps:
            if h.name not in values:
                if h.default is None:
                    raise SpecError(f"{what} needs a value for `{h.name}`", span)
                values[h.name] = self.eval(h.default, scope)
            _check_annot(h, values[h.name], what, span)
        return values

    def call_closure(self, f: Closure, args, kwargs, span):
        inner = Scope(f.scope, kind="fn")
        with self.entering(f.name, span, key=id(f.body)), _call_site(f"`{f.name}`", span):
            if f.is_lambda:
                if kwargs:
                    raise SpecError("anonymous functions take positional arguments only", span)
                if len(args) != len(f.params):
                    raise SpecError(f"this function takes {len(f.params)} argument"
                                    f"{'s' if len(f.params) != 1 else ''}, got {len(args)}", span)
                for p, v in zip(f.params, args):
                    self.bind_target(p, v, inner, bind_dims=True)
            else:
                for k, v in self.bind_hparams(f"`{f.name}`", f.params, args, kwargs, span,
                                              f.scope).items():
                    inner.define(k, v)
                with _call_site(f"`{f.name}`", span, pattern=True):
                    for h in f.params:
                        if isinstance(h.annot, A.TypeExpr):
                            self.check_type(h.annot, inner.lookup(h.name), inner, h.span,
                                            bind=True)
            return self.eval_body(f.body, inner, what=f"`{f.name}`")

    def eval_body(self, body, scope: Scope, what: str, mode: str = "fn"):
        if not isinstance(body, A.Block):
            return self.eval(body, scope)
        result = self.exec_stmts(body.stmts, scope, mode=mode)
        if result is _NO_RETURN:
            raise SpecError(f"{what} ends without `return`", body.span)
        return result

    def instantiate(self, d: LayerDef, args, kwargs, span) -> Instance:
        hp = self.bind_hparams(f"`{d.name}`", d.node.hparams, args, kwargs, span, d.scope)
        owner = self.instance
        if owner is None:
            return Instance(d, hp, owner=None, span=span)
        # Inside a layer's body, the k-th instance made at a call site is the same
        # object on every call of the owner, so calling a composite layer twice
        # reuses its sub-layers (and their parameters) instead of rebuilding them.
        site = (span.line, span.col, span.end_line, span.end_col) if span else None
        k = owner.site_counter.get(site, 0)
        owner.site_counter[site] = k + 1
        cached = owner.children_named.get((site, k))
        if cached is not None:
            if cached.defn is not d or cached.hparams != hp:
                raise SpecError(f"a sub-layer of shared instance `{owner.path(self)}` would be "
                                f"rebuilt with different hyperparameters on this call", span)
            return cached
        inst = Instance(d, hp, owner=owner, span=span)
        owner.children_named[(site, k)] = inst
        return inst

    def apply(self, inst: Instance, args, kwargs, span):
        d = inst.defn
        scope = Scope(d.scope, kind="layer")
        for k, v in inst.hparams.items():
            scope.define(k, v)
        saved = self.instance
        self.instance = inst
        inst.site_counter = {}
        g = self.frame.graph if self.frame is not None else None
        outer = (g.scope, g.site) if g is not None else None
        if g is not None:  # the nodes this call adds carry the layer path and user call site
            g.scope = inst.path(self).replace(".", "/")
            if g.site is None and _in_user_code(span):
                g.site = span
        with self.entering(d.name, span), _call_site(f"`{d.name}`", span):
            try:
                if d.is_model:
                    return self.apply_model(inst, args, kwargs, span, scope)
                calldefs = [s for s in d.node.body.stmts if isinstance(s, A.CallDef)]
                if len(calldefs) != 1:
                    raise SpecError(f"layer `{d.name}` must have exactly one call definition "
                                    "`(inputs) -> result`", d.node.span)
                cd = calldefs[0]
                bound = self.bind_inputs(d.name, cd.params, args, kwargs, span, scope)
                with _call_site(f"`{d.name}`", span, pattern=True):
                    for p, v in bound:
                        self.bind_target(p, v, scope, bind_dims=True)
                self.exec_stmts([s for s in d.node.body.stmts if s is not cd], scope, mode="layer")
                out = self.eval_body(cd.body, scope, what=f"`{d.name}`", mode="call")
                inst.calls += 1
                return out
            finally:
                self.instance = saved
                if g is not None:
                    g.scope, g.site = outer

    def bind_inputs(self, name, params, args, kwargs, span, scope):
        """A layer call's inputs: by position, or by name for the ones with a name; an
        input left out takes its default (`(x, keep = true) -> ...`), evaluated in the
        layer's scope, so a default may use the hyperparameters."""
        names = [p.name for p in params if isinstance(p, A.SigParam)]
        required = sum(1 for p in params if not (isinstance(p, A.SigParam) and p.default is not None))
        if len(args) > len(params):
            raise SpecError(f"`{name}` takes {len(params)} input{'s' if len(params) != 1 else ''}"
                            f", got {len(args)}", span)
        given = dict(enumerate(args))
        for k, v in kwargs.items():
            if k not in names:
                raise SpecError(f"`{name}` has no input `{k}`", span,
                                hint=f"its inputs are: {', '.join(names) or 'none by name'}")
            i = next(j for j, p in enumerate(params) if isinstance(p, A.SigParam) and p.name == k)
            if i in given:
                raise SpecError(f"`{name}`: input `{k}` given twice", span)
            given[i] = v
        bound = []
        for i, p in enumerate(params):
            if i in given:
                bound.append((p, given[i]))
            elif isinstance(p, A.SigParam) and p.default is not None:
                bound.append((p, self.eval(p.default, scope)))
            else:
                what = f"input `{p.name}`" if isinstance(p, A.SigParam) else f"input {i + 1}"
                raise SpecError(f"`{name}` takes {required} input{'s' if required != 1 else ''}"
                                f"{'' if required == len(params) else f' (up to {len(params)})'}"
                                f", got {len(args) + len(kwargs)}: {what} is missing", span)
        return bound

    def apply_model(self, inst, args, kwargs, span, scope):
        """A model used inside another model: its inputs are the call's arguments."""
        inputs = [s for s in inst.defn.node.body.stmts if isinstance(s, A.InputDecl)]
        names = [i.name for i in inputs]
        if len(args) > len(inputs):
            raise SpecError(f"`{inst.defn.name}` has {len(inputs)} inputs ({', '.join(names)}), "
                            f"got {len(args)}", span)
        given = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise SpecError(f"`{inst.defn.name}` has no input `{k}`", span)
            given[k] = v
        scope.vars["__given__"] = given
        results = {}
        self.exec_stmts(inst.defn.node.body.stmts, scope, mode="submodel", results=results)
        inst.calls += 1
        return Record(results)

    def name_instance(self, v, name: str):
        v.name = name
        if isinstance(v, Sequential):
            for i, inst in enumerate(v.items):
                inst.name = f"{name}.{i}"
