"""Statements and declarations: bindings, `if`, `param`/`state`/`input`, outputs,
losses and metrics, update rules, and host noise."""
from __future__ import annotations

from compiler.core.values import Builtin, InitSpec, Instance, Record, Sequential, SymDim, Tensor
from compiler.elaborate.checks import (_ALLOWED, _DTYPE_NAMES, _NO_RETURN, _STMT_LABEL, _check_new, _dim_like, _show_dim, _show_type, describe)
from compiler.elaborate.scope import Scope, unknown_name
from dsl import ast as A
from dsl.errors import DslError, NameError_, ShapeError, SpecError


class Statements:
    """The `exec_*` half of the evaluator, and the type checks of declarations."""


    # ---- binding and types -------------------------------------------------------------
    def bind_target(self, target, value, scope: Scope, bind_dims: bool = False):
        if isinstance(target, A.SigTuple):
            items = value.as_tuple() if isinstance(value, Record) else value
            if not isinstance(items, tuple) or len(items) != len(target.items):
                n = len(items) if isinstance(items, tuple) else None
                raise SpecError(f"cannot unpack {describe(value)} into {len(target.items)} names"
                                + (f" (it has {n})" if n is not None else ""), target.span)
            for t, v in zip(target.items, items):
                self.bind_target(t, v, scope, bind_dims)
            return
        if target.name == "training":
            raise SpecError("`training` is the compile-time train/eval flag; it cannot be "
                            "assigned", target.span)
        if target.type is not None:
            self.check_type(target.type, value, scope, target.span, bind=bind_dims)
        if isinstance(value, (Instance, Sequential)) and value.name is None:
            self.name_instance(value, target.name)
        scope.define(target.name, value, target.span)

    def eval_dims(self, te: A.TypeExpr, scope: Scope, span, *, bind_unknown: bool = False):
        dims = []
        for d in te.dims:
            if isinstance(d, A.Ellipsis_):
                raise SpecError("`...` only matches inputs; declared shapes are explicit", d.span)
            if isinstance(d, A.Name) and d.id != "training" and (
                    not scope.has(d.id) or bind_unknown and not _dim_like(scope.lookup(d.id))):
                if bind_unknown:
                    dims.append(SymDim(d.id))
                    continue
                raise unknown_name(d.id, scope, d.span, what="dim")
            v = self.eval(d, scope)
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise SpecError(f"a dim must be an integer or a symbol, found {describe(v)}", d.span)
            if isinstance(v, int) and v < 0:
                raise SpecError(f"a dim must not be negative, found {v}", d.span)
            dims.append(v)
        return tuple(dims)

    def check_type(self, te: A.TypeExpr, value, scope: Scope, span, *, bind: bool):
        """Check `value` against a declared type, binding unknown dim names to its dims."""
        if not isinstance(value, Tensor):
            raise SpecError(f"expected a tensor of type {_show_type(te)}, found {describe(value)}",
                            span)
        t = value.type
        if te.dtype is not None and te.dtype != t.dtype:
            raise ShapeError(f"expected dtype {te.dtype}, found {t.dtype}", span)
        dims = te.dims
        ell = [i for i, d in enumerate(dims) if isinstance(d, A.Ellipsis_)]
        if len(ell) > 1:
            raise SpecError("at most one `...` per shape", te.span)
        shape = t.shape
        if ell:
            i = ell[0]
            before, after = dims[:i], dims[i + 1:]
            if len(shape) < len(before) + len(after):
                raise ShapeError(f"expected at least {len(before) + len(after)} dims "
                                 f"{_show_type(te)}, found {t}", span)
            pairs = list(zip(before, shape[:len(before)])) + \
                list(zip(after, shape[len(shape) - len(after):]))
        else:
            if len(shape) != len(dims):
                raise ShapeError(f"expected a rank-{len(dims)} tensor {_show_type(te)}, "
                                 f"found {t}", span)
            pairs = list(zip(dims, shape))
        for d, actual in pairs:
            if isinstance(d, A.Name) and d.id == "_":
                continue
            if isinstance(d, A.Name) and d.id not in scope.vars and (
                    not scope.has(d.id) or bind and not _dim_like(scope.lookup(d.id))):
                if not bind:
                    raise unknown_name(d.id, scope, d.span, what="dim")
                scope.define(d.id, SymDim(actual) if isinstance(actual, str) else actual, d.span)
                continue
            want = self.eval(d, scope)
            if want != actual:
                raise ShapeError(f"dim `{_show_dim(d)}` is {want} but the tensor has {actual} "
                                 f"there: expected {_show_type(te)}, found {t}", span)

    # ---- statements ----------------------------------------------------------------------
    def exec_stmts(self, stmts, scope: Scope, mode: str, results: dict | None = None):
        for s in stmts:
            r = self.exec_stmt(s, scope, mode, results)
            if r is not _NO_RETURN:
                return r
        return _NO_RETURN

    def exec_stmt(self, s, scope, mode, results):
        kind = type(s).__name__
        allowed = _ALLOWED[mode]
        if kind not in allowed:
            where = {"fn": "a function body", "layer": "a layer body", "model": "a model body",
                     "submodel": "a model body", "call": "a layer's call body"}[mode]
            raise SpecError(f"{_STMT_LABEL.get(kind, kind)} is not allowed in {where}", s.span)
        try:
            return getattr(self, "exec_" + kind)(s, scope, mode, results)
        except DslError as e:  # an error found deep inside still points at the user's code
            raise e.with_span(s.span)

    def exec_Let(self, s: A.Let, scope, mode, results):
        value = self.eval(s.value, scope)
        if len(s.targets) == 1 and isinstance(value, Tensor) and value.frame is self.frame:
            data = self.graph.data(value.node)
            if data["name"] is None:  # generated code reads like the spec: `h = ...` -> h
                data["name"] = s.targets[0].name
        if len(s.targets) == 1:
            self.bind_target(s.targets[0], value, scope)
        else:
            self.bind_target(A.SigTuple(s.targets, span=s.span), value, scope)
        return _NO_RETURN

    def exec_Return(self, s, scope, mode, results):
        return self.eval(s.value, scope)

    def exec_If(self, s: A.If, scope, mode, results):
        test = self.eval(s.test, scope)
        if not isinstance(test, bool):
            raise SpecError("`if` needs a compile-time condition (a hyperparameter or "
                            "`training`); for tensors use `where(cond, a, b)`", s.test.span)
        branch = s.then if test else s.orelse
        if branch is None:
            return _NO_RETURN
        if isinstance(branch, A.If):
            return self.exec_If(branch, scope, mode, results)
        return self.exec_stmts(branch.stmts, scope, mode, results)

    def _source_path(self, local: str) -> str:
        return f"{self.instance.path(self)}.{local}" if self.instance is not None else local

    def exec_ParamDecl(self, s: A.ParamDecl, scope, mode, results):
        return self._declare_source(s, scope, "param")

    def exec_StateDecl(self, s: A.StateDecl, scope, mode, results):
        return self._declare_source(s, scope, "state")

    def _declare_source(self, s, scope, kind):
        dims = self.eval_dims(s.type, scope, s.span)
        dtype = s.type.dtype or "f32"
        if dtype not in _DTYPE_NAMES:
            raise SpecError(f"unknown dtype `{dtype}`", s.type.span)
        if any(isinstance(d, str) for d in dims):
            raise ShapeError(f"{kind} `{s.name}` must have a static shape, found "
                             f"[{', '.join(map(str, dims))}]", s.span)
        store = (self.instance.params if kind == "param" else self.instance.states) \
            if self.instance is not None else None
        _check_new(scope, s.name, kind, s.span)
        if store is not None and s.name in store:
            t = store[s.name]
            if t.type.shape != dims:
                raise ShapeError(f"shared instance `{self.instance.path(self)}` was first called "
                                 f"with {kind} `{s.name}` of shape {list(t.type.shape)}, now "
                                 f"{list(dims)}", s.span)
            scope.define(s.name, t, s.span)
            return _NO_RETURN
        init = self.eval_init(s.init, scope, dtype, kind)
        name = self._source_path(s.name)
        self.claim_source_name(name, s.span)
        root = self.frame.root
        node = root.graph.add(kind, (), {"name": name, "dtype": dtype, "shape": dims,
                                         "init": init.as_attr()}, span=s.span, name=name)
        t = Tensor(root, node)
        if store is not None:
            store[s.name] = t
            self.instance.sub[s.name] = t
        scope.define(s.name, t, s.span, unique=True, what=kind)
        return _NO_RETURN

    def eval_init(self, e, scope, dtype, kind) -> InitSpec:
        if e is None:
            return InitSpec("zeros")
        from compiler.elaborate.builtins import INIT_SCOPE
        inits = Scope(scope, kind="init")  # initializer names shadow the rest here
        inits.vars.update(INIT_SCOPE)
        v = self.eval(e, inits)
        if isinstance(v, Builtin) and v.name in INIT_SCOPE:
            v = v.fn(self, [], {}, e.span)
        if isinstance(v, (int, float)) and not isinstance(v, (bool, SymDim)):
            return InitSpec("const", (float(v),))
        if not isinstance(v, InitSpec):
            raise SpecError(f"`~` needs an initializer (zeros, ones, normal(std), uniform(lo, hi), "
                            f"glorot, he, orthogonal, or a number), found {describe(v)}", e.span)
        return v

    def exec_InputDecl(self, s: A.InputDecl, scope, mode, results):
        if mode == "submodel":
            given = scope.vars["__given__"]
            if s.name not in given:
                raise SpecError(f"model input `{s.name}` was not given", s.span)
            v = given[s.name]
            self.check_type(s.type, v, scope, s.span, bind=True)
            scope.define(s.name, v, s.span)
            return _NO_RETURN
        dims = self.eval_dims(s.type, scope, s.span, bind_unknown=True)
        dtype = s.type.dtype or "f32"
        if dtype not in _DTYPE_NAMES:
            raise SpecError(f"unknown dtype `{dtype}`", s.type.span)
        _check_new(scope, s.name, "input", s.span)
        self.claim_source_name(s.name, s.span)
        attrs = {"name": s.name, "dtype": dtype, "shape": dims}
        if s.domain is not None:
            attrs["domain"] = self.input_domain(s.domain, dtype, scope)
        node = self.graph.add("input", (), attrs, span=s.span, name=s.name)
        for axis, (d, src) in enumerate(zip(dims, s.type.dims)):
            if isinstance(d, SymDim) and d not in self.graph.dim_sources:
                self.graph.dim_sources[str(d)] = (node, axis)
                scope.define(str(d), d, src.span)
        scope.define(s.name, Tensor(self.frame, node), s.span, unique=True, what="input")
        return _NO_RETURN

    def input_domain(self, e, dtype: str, scope) -> tuple:
        """`in DOMAIN` of an input: a name or a call with compile-time numbers, checked
        against the input's dtype (`compiler.core.domains`)."""
        from compiler.core import domains
        if isinstance(e, A.Name):
            name, args = e.id, []
        elif isinstance(e, A.Call) and isinstance(e.func, A.Name) and not e.kwargs:
            name, args = e.func.id, [self.eval(a, scope) for a in e.args]
        else:
            raise SpecError("an input domain is a name or a call, e.g. `in nonnegative`, "
                            "`in range(0, 10)`", e.span,
                            hint=f"domains: {', '.join(domains.DOMAINS)}")
        try:
            return domains.check(name, args, dtype)
        except domains.DomainError as err:
            raise SpecError(str(err), e.span) from None

    def exec_ResultDecl(self, s: A.ResultDecl, scope, mode, results):
        if s.value is None:
            try:
                v = scope.lookup(s.name)
            except KeyError:
                raise unknown_name(s.name, scope, s.span) from None
        else:
            v = self.eval(s.value, scope)
        if mode == "submodel":
            results[s.name] = v
            scope.define(s.name, v, s.span)
            return _NO_RETURN
        if not isinstance(v, Tensor):
            raise SpecError(f"{s.kind} `{s.name}` must be a tensor, found {describe(v)}", s.span)
        if s.kind in ("loss", "metric"):
            if v.type.rank != 0:
                raise ShapeError(f"{s.kind} `{s.name}` must be a scalar, found {v.type}"
                                 + (" (reduce it with mean or sum)" if s.kind == "loss" else ""),
                                 s.span)
            if s.kind == "loss" and not v.type.is_float:
                raise ShapeError(f"loss `{s.name}` must be a float, found {v.type}", s.span)
        g = self.graph
        if s.name in g.outputs:
            raise NameError_(f"duplicate result `{s.name}`", s.span)
        node = self.lift(v)
        g.outputs[s.name] = node
        g.output_kinds[s.name] = s.kind
        if s.value is not None:
            scope.define(s.name, v, s.span)
        return _NO_RETURN

    def exec_Update(self, s: A.Update, scope, mode, results):
        target = self.resolve_dotted(s.target, scope, s.span)
        g = self.graph
        if not isinstance(target, Tensor) or target.frame.graph.node(target.node).op not in ("param", "state"):
            raise SpecError(f"`{'.'.join(s.target)} <- ...` updates a param or state; "
                            f"`{'.'.join(s.target)}` is {describe(target)}", s.span)
        value = self.to_tensor(self.eval(s.value, scope), s.value.span, like=target)
        if value.type != target.type:
            raise ShapeError(f"update of `{'.'.join(s.target)}` has type {value.type}, the "
                             f"{g.node(target.node).op} is {target.type}", s.span)
        if target.node in g.updates:
            raise SpecError(f"`{'.'.join(s.target)}` is updated twice", s.span)
        g.updates[target.node] = self.lift(value)
        return _NO_RETURN

    def resolve_dotted(self, parts, scope, span):
        try:
            v = scope.lookup(parts[0])
        except KeyError:
            raise unknown_name(parts[0], scope, span) from None
        for p in parts[1:]:
            if isinstance(v, Instance) and p in v.sub:
                v = v.sub[p]
            else:
                raise SpecError(f"`{'.'.join(parts)}`: {describe(v)} has no member `{p}`", span)
        return v

    def exec_CallDef(self, s, scope, mode, results):
        raise SpecError("a call definition `(inputs) -> ...` belongs directly in a layer", s.span)

    # ---- noise ---------------------------------------------------------------------------
    def make_noise(self, dist: str, shape: tuple, span) -> Tensor:
        """Seeded host noise. Inside a scan body the draw is hoisted out of the loop
        (one slice per step), so every step sees fresh values and backends agree."""
        frame = self.frame
        if frame is None:
            raise SpecError("random noise can only be drawn inside a model", span)
        if frame.parent is None:
            name = f"noise.{self.noise_count}"
            self.noise_count += 1
            self.claim_source_name(name, span)
            node = frame.graph.add("noise", (), {"name": name, "dist": dist, "dtype": "f32",
                                                 "shape": tuple(shape)}, span=span, name=name)
            return Tensor(frame, node)
        outer_shape = tuple(shape[:frame.axis]) + (frame.length,) + tuple(shape[frame.axis:])
        self.frame = frame.parent
        try:
            outer = self.make_noise(dist, outer_shape, span)
        finally:
            self.frame = frame
        node = frame.graph.add("input", (), {"name": f"noise_slice{len(frame.extra_xs)}",
                                             "dtype": "f32", "shape": tuple(shape)})
        frame.extra_xs.append((outer, node))
        return Tensor(frame, node)
