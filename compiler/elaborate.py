"""Elaboration: a parsed spec -> a typed `Graph` of primitives for one model.

Layers are expanded at compile time: hyperparameters are evaluated, parameters
created on an instance's first call (their shapes may come from the input's) and
named by the instance path (``encoder.block.0.W``); sharing an instance shares its
parameters; ``repeat(N, L(...))`` makes N instances. ``scan`` bodies elaborate into
nested graphs (frames); outer tensors a body uses are captured as scan inputs.
``grad`` differentiates the graph built so far, so it composes to any order.

Every mistake is reported as a located `DslError`.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dsl import ast as A
from dsl.errors import DslError, NameError_, ShapeError, SpecError
from dsl.parser import parse_file, parse_source
from dsl.errors import Source

from .ir import Graph
from .types import dim_add, dim_div, dim_mul, TypeMismatch
from .values import (Builtin, Closure, InitSpec, Instance, LayerDef, ModuleRef, Record,
                     Sequential, SymDim, Tensor)

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
STD_DIR = SPECS_DIR / "std"
_DTYPE_NAMES = {"f32", "f64", "f16", "i64", "i32", "bool"}
MAX_CALL_DEPTH = 64


# ---- scopes -----------------------------------------------------------------------

class Scope:
    def __init__(self, parent: "Scope | None" = None, kind: str = "block"):
        self.vars: dict = {}
        self.spans: dict = {}
        self.parent = parent
        self.kind = kind

    def lookup(self, name: str):
        s = self
        while s is not None:
            if name in s.vars:
                return s.vars[name]
            s = s.parent
        raise KeyError(name)

    def has(self, name: str) -> bool:
        try:
            self.lookup(name)
            return True
        except KeyError:
            return False

    def define(self, name: str, value, span=None, *, unique: bool = False, what: str = "name"):
        if unique and name in self.vars:
            prev = self.spans.get(name)
            raise NameError_(f"duplicate definition of {what} `{name}`", span,
                             notes=[("first defined here", prev)] if prev else None)
        self.vars[name] = value
        if span is not None:
            self.spans.setdefault(name, span)

    def names(self) -> set:
        out, s = set(), self
        while s is not None:
            out |= set(s.vars)
            s = s.parent
        return out


def unknown_name(name: str, scope: Scope, span, what: str = "name") -> NameError_:
    close = difflib.get_close_matches(name, sorted(scope.names()), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else None
    return NameError_(f"unknown {what} `{name}`", span, hint=hint)


# ---- programs (a file and its imports) ------------------------------------------------

@dataclass
class Program:
    """A loaded spec: its global scope, models and train blocks, in file order."""

    path: str
    scope: Scope
    models: dict = field(default_factory=dict)   # name -> LayerDef(is_model=True)
    trains: list = field(default_factory=list)   # [A.TrainDef]
    module: A.Module | None = None


_STD_CACHE: dict = {}


def builtin_scope() -> Scope:
    """Builtins plus the standard library written in the language (specs/std)."""
    if "scope" not in _STD_CACHE:
        from .builtins import BUILTINS
        base = Scope(kind="builtins")
        for name, b in BUILTINS.items():
            base.define(name, b)
        std = Scope(base, kind="std")
        from dsl.astcache import parse_file_cached  # the std AST, cached by content
        for f in sorted(STD_DIR.glob("*.dl")):
            _load_into(parse_file_cached(f), std, str(f), set())
        _STD_CACHE["scope"] = std
    return _STD_CACHE["scope"]


def load_program(path=None, *, text: str | None = None) -> Program:
    """Parse a spec (and its imports) and collect its definitions."""
    if text is not None:
        module = parse_source(Source(str(path or "<string>"), text))
    else:
        module = parse_file(path)
    scope = Scope(builtin_scope(), kind="global")
    prog = Program(str(path or "<string>"), scope, module=module)
    _load_into(module, scope, prog.path, {str(Path(prog.path).resolve())}, prog)
    return prog


def _load_into(module: A.Module, scope: Scope, path: str, seen: set, prog: Program | None = None):
    base = Path(path).resolve().parent
    for item in module.items:
        if isinstance(item, A.Import):
            target = _resolve_import(item, base)
            key = str(target.resolve())
            if key in seen:
                raise SpecError(f"import cycle: `{item.path}` is already being imported", item.span)
            sub = Scope(builtin_scope(), kind="global")
            _load_into(parse_file(target), sub, str(target), seen | {key})
            if item.alias:
                scope.define(item.alias, ModuleRef(str(target), sub), item.span, unique=True,
                             what="import alias")
            else:
                for name, v in sub.vars.items():
                    scope.define(name, v, sub.spans.get(name))
        elif isinstance(item, A.ConstDef):
            try:
                value = Evaluator(None).eval(item.value, scope)
            except DslError as e:
                raise e.with_span(item.span)
            if isinstance(value, (Instance, Sequential)):
                raise SpecError(f"a const cannot hold {describe(value)}: create layer instances "
                                "inside the model that uses them", item.span)
            scope.define(item.name, value, item.span, unique=True, what="constant")
        elif isinstance(item, A.LayerDef):
            scope.define(item.name, LayerDef(item, scope), item.span, unique=True, what="layer")
        elif isinstance(item, A.FnDef):
            scope.define(item.name, Closure(item.name, item.hparams, item.body, scope, item.span),
                         item.span, unique=True, what="function")
        elif isinstance(item, A.ModelDef):
            d = LayerDef(item, scope, is_model=True)
            scope.define(item.name, d, item.span, unique=True, what="model")
            if prog is not None:
                prog.models[item.name] = d
        elif isinstance(item, A.TrainDef):
            if prog is not None:
                prog.trains.append(item)


def _resolve_import(item: A.Import, base: Path) -> Path:
    for cand in (base / item.path, SPECS_DIR / item.path):
        if cand.is_file():
            return cand
    raise SpecError(f"cannot find the imported file `{item.path}`", item.span,
                    hint=f"paths are relative to {base} or to the bundled specs/ folder")


# ---- frames: the graph being built (nested for scan bodies) -----------------------------

class Frame:
    def __init__(self, graph: Graph, parent: "Frame | None" = None, *, length=None, axis=0):
        self.graph = graph
        self.parent = parent
        self.length = length
        self.axis = axis
        self.captures: dict = {}       # parent node id -> body input node id
        self.capture_list: list = []   # parent node ids, in capture order
        self.extra_xs: list = []       # (parent Tensor, body input node): hoisted noise

    @property
    def root(self) -> "Frame":
        f = self
        while f.parent is not None:
            f = f.parent
        return f


# ---- the evaluator ------------------------------------------------------------------------

class Evaluator:
    """Evaluates expressions and statements against scopes, building the graph."""

    def __init__(self, frame: Frame | None, *, training: bool = False):
        self.frame = frame
        self.training = training
        self.instance: Instance | None = None  # whose params a `param` declares
        self.call_stack: list[str] = []
        self.model_counters: dict = {}
        self.noise_count = 0
        self.source_names: dict = {}          # source name -> span (uniqueness)

    # -- graph access --
    @property
    def graph(self) -> Graph:
        if self.frame is None:
            raise SpecError("tensors can only be used inside a model")
        return self.frame.graph

    def lift(self, t: Tensor, frame: Frame | None = None) -> int:
        """The node standing for tensor `t` in `frame` (captured from outer frames)."""
        frame = frame or self.frame
        if t.frame is frame:
            return t.node
        if frame.parent is None:
            raise SpecError("a value from an inner scan body escaped it")
        outer = self.lift(t, frame.parent)
        if outer not in frame.captures:
            typ = frame.parent.graph.type(outer)
            n = frame.graph.add("input", (), {"name": f"capture{len(frame.capture_list)}",
                                              "dtype": typ.dtype, "shape": typ.shape})
            frame.captures[outer] = n
            frame.capture_list.append(outer)
        return frame.captures[outer]

    def add(self, op: str, args, span=None, **attrs) -> Tensor:
        nodes = [self.lift(a) for a in args]
        return Tensor(self.frame, self.graph.add(op, nodes, attrs, span=span))

    def const_like(self, value, like: Tensor, span=None) -> Tensor:
        t = like.type
        dtype = t.dtype
        if isinstance(value, float) and not t.is_float:
            dtype = "f32"
        if isinstance(value, bool):
            dtype = "bool" if t.dtype == "bool" else dtype
        return Tensor(self.frame, self.graph.add("const", (), {"value": value, "dtype": dtype,
                                                               "shape": ()}, span=span))

    def promote(self, a: Tensor, b: Tensor, span) -> tuple[Tensor, Tensor]:
        """An int meeting a float is cast explicitly, so no backend mixes dtypes."""
        da, db = a.type.dtype, b.type.dtype
        if da == db or "bool" in (da, db):
            return a, b
        if a.type.is_float and not b.type.is_float:
            return a, self.add("cast", [b], span, dtype=da)
        if b.type.is_float and not a.type.is_float:
            return self.add("cast", [a], span, dtype=db), b
        return a, b

    def to_tensor(self, v, span, like: Tensor | None = None) -> Tensor:
        if isinstance(v, Tensor):
            return v
        if isinstance(v, bool) or isinstance(v, (int, float)) and not isinstance(v, SymDim):
            if like is not None:
                return self.const_like(v, like, span)
            dtype = "bool" if isinstance(v, bool) else "f32" if isinstance(v, float) else "i64"
            return Tensor(self.frame, self.graph.add("const", (), {"value": v, "dtype": dtype,
                                                                   "shape": ()}, span=span))
        raise SpecError(f"expected a tensor, found {describe(v)}", span)

    # -- names for instances and sources --
    def auto_name(self, inst: Instance) -> str:
        counters = inst.owner.auto_counter if inst.owner is not None else self.model_counters
        base = inst.defn.name.lower()
        k = counters.get(base, 0)
        counters[base] = k + 1
        return f"{base}{k}"

    def claim_source_name(self, name: str, span):
        if name in self.source_names:
            raise NameError_(f"two tensors would both be named `{name}`", span,
                             notes=[("the other is here", self.source_names[name])])
        self.source_names[name] = span

    # ---- expressions ----------------------------------------------------------------
    def eval(self, e, scope: Scope):
        method = getattr(self, "eval_" + type(e).__name__, None)
        if method is None:
            raise SpecError(f"{type(e).__name__} cannot be used as a value here", e.span)
        return method(e, scope)

    def eval_Name(self, e: A.Name, scope):
        if e.id == "training":
            return self.training
        try:
            return scope.lookup(e.id)
        except KeyError:
            raise unknown_name(e.id, scope, e.span) from None

    def eval_Num(self, e, scope):
        return e.value

    def eval_Str(self, e, scope):
        return e.value

    def eval_Bool(self, e, scope):
        return e.value

    def eval_Tuple(self, e, scope):
        return tuple(self.eval(x, scope) for x in e.items)

    def eval_List(self, e, scope):
        return tuple(self.eval(x, scope) for x in e.items)

    def eval_Cond(self, e, scope):
        test = self.eval(e.test, scope)
        if not isinstance(test, bool):
            raise SpecError("`a if cond else b` needs a compile-time condition (a hyperparameter "
                            "or `training`); for tensors use `where(cond, a, b)`", e.test.span)
        return self.eval(e.then if test else e.orelse, scope)

    def eval_BoolOp(self, e, scope):
        left = self.eval(e.left, scope)
        if isinstance(left, bool):
            if (e.op == "and" and not left) or (e.op == "or" and left):
                return left
            right = self.eval(e.right, scope)
            if isinstance(right, bool):
                return right
            left = self.to_tensor(left, e.left.span)
        else:
            right = self.eval(e.right, scope)
        op = {"and": "logical_and", "or": "logical_or"}[e.op]
        return self.add(op, [self.to_tensor(left, e.left.span), self.to_tensor(right, e.right.span)],
                        e.span)

    def eval_UnaryOp(self, e, scope):
        v = self.eval(e.operand, scope)
        if e.op == "not":
            if isinstance(v, bool):
                return not v
            return self.add("logical_not", [self.to_tensor(v, e.span)], e.span)
        if e.op == "+":
            return v
        if isinstance(v, Tensor):
            return self.add("neg", [v], e.span)
        if isinstance(v, (int, float)) and not isinstance(v, SymDim):
            return -v
        raise SpecError(f"cannot negate {describe(v)}", e.span)

    _BIN = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul", "**": "pow"}
    _CMP = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}

    def eval_BinOp(self, e, scope):
        a, b = self.eval(e.left, scope), self.eval(e.right, scope)
        return self.binary(e.op, a, b, e)

    def binary(self, op, a, b, e):
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            if op == "%":
                raise SpecError("`%` is only defined on compile-time numbers", e.span)
            ta = self.to_tensor(a, e.left.span, like=b if isinstance(b, Tensor) else None)
            tb = self.to_tensor(b, e.right.span, like=ta)
            ta, tb = self.promote(ta, tb, e.span)
            return self.add(self._BIN[op], [ta, tb], e.span)
        if isinstance(a, SymDim) or isinstance(b, SymDim):
            return self.dim_arith(op, a, b, e)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return compile_time_arith(op, a, b, e.span)
        if isinstance(a, tuple) and isinstance(b, tuple) and op == "+":
            return a + b
        raise SpecError(f"`{op}` is not defined for {describe(a)} and {describe(b)}", e.span)

    def dim_arith(self, op, a, b, e):
        if op == "*" and isinstance(a, (int, str)) and isinstance(b, (int, str)):
            return SymDim(dim_mul(a, b)) if isinstance(dim_mul(a, b), str) else dim_mul(a, b)
        if op in "+-" and isinstance(b, int) and isinstance(a, str):
            r = dim_add(a, b if op == "+" else -b)
            return SymDim(r) if isinstance(r, str) else r
        if op == "+" and isinstance(a, int) and isinstance(b, str):
            return SymDim(dim_add(b, a))
        if op == "/" and isinstance(a, (int, str)) and isinstance(b, (int, str)):
            r = dim_div(a, b)
            if r is None:
                raise SpecError(f"dim {a} is not divisible by {b}", e.span)
            return SymDim(r) if isinstance(r, str) else r
        raise SpecError(f"`{op}` is not defined on symbolic dims {a} and {b}", e.span)

    def eval_Compare(self, e, scope):
        a, b = self.eval(e.left, scope), self.eval(e.right, scope)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            ta = self.to_tensor(a, e.left.span, like=b if isinstance(b, Tensor) else None)
            tb = self.to_tensor(b, e.right.span, like=ta)
            ta, tb = self.promote(ta, tb, e.span)
            return self.add(self._CMP[e.op], [ta, tb], e.span)
        try:
            return {"==": a == b, "!=": a != b}.get(e.op) if e.op in ("==", "!=") else \
                {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[e.op]
        except TypeError:
            raise SpecError(f"cannot compare {describe(a)} with {describe(b)}", e.span) from None

    def eval_Pipe(self, e, scope):
        v = self.eval(e.value, scope)
        f = self.eval(e.func, scope)
        return self.call(f, [v], {}, e.span, arg_spans=[e.value.span])

    def eval_Attr(self, e, scope):
        v = self.eval(e.value, scope)
        if isinstance(v, Record):
            if e.name in v.fields:
                return v.fields[e.name]
            raise NameError_(f"no result `{e.name}`; it has {', '.join(v.fields)}", e.span)
        if isinstance(v, ModuleRef):
            try:
                return v.scope.vars[e.name]
            except KeyError:
                raise unknown_name(e.name, v.scope, e.span) from None
        if isinstance(v, Instance):
            if e.name in v.sub:
                return v.sub[e.name]
            raise NameError_(f"`{v.defn.name}` instance has no member `{e.name}` (yet: members "
                             f"exist after its first call)", e.span)
        if isinstance(v, Tensor):
            if e.name == "T":
                r = v.type.rank
                if r < 2:
                    raise ShapeError(f"`.T` needs a rank >= 2 tensor, found {v.type}", e.span)
                perm = tuple(range(r - 2)) + (r - 1, r - 2)
                return self.add("transpose", [v], e.span, perm=perm)
            if e.name == "shape":
                return tuple(SymDim(d) if isinstance(d, str) else d for d in v.type.shape)
        raise SpecError(f"{describe(v)} has no attribute `{e.name}`", e.span)

    def eval_Index(self, e, scope):
        v = self.eval(e.value, scope)
        subs = [s if isinstance(s, (A.Slice, A.Ellipsis_)) else self.eval(s, scope) for s in e.subs]
        if isinstance(v, (tuple, Record)):
            items = v.as_tuple() if isinstance(v, Record) else v
            if len(subs) == 1 and isinstance(subs[0], int):
                try:
                    return items[subs[0]]
                except IndexError:
                    raise SpecError(f"index {subs[0]} out of range for a {len(items)}-tuple",
                                    e.span) from None
            raise SpecError("tuples are indexed with one integer", e.span)
        if not isinstance(v, Tensor):
            raise SpecError(f"cannot index {describe(v)}", e.span)
        from .builtins import index_tensor
        return index_tensor(self, v, subs, scope, e.span)

    def eval_Lambda(self, e, scope):
        return Closure("<fn>", e.params, e.body, scope, e.span, is_lambda=True)

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
        with self.entering(d.name, span), _call_site(f"`{d.name}`", span):
            try:
                if d.is_model:
                    return self.apply_model(inst, args, kwargs, span, scope)
                calldefs = [s for s in d.node.body.stmts if isinstance(s, A.CallDef)]
                if len(calldefs) != 1:
                    raise SpecError(f"layer `{d.name}` must have exactly one call definition "
                                    "`(inputs) -> result`", d.node.span)
                cd = calldefs[0]
                if kwargs:
                    raise SpecError(f"`{d.name}` takes its inputs by position", span)
                if len(args) != len(cd.params):
                    raise SpecError(f"`{d.name}` takes {len(cd.params)} input"
                                    f"{'s' if len(cd.params) != 1 else ''}, got {len(args)}", span)
                with _call_site(f"`{d.name}`", span, pattern=True):
                    for p, v in zip(cd.params, args):
                        self.bind_target(p, v, scope, bind_dims=True)
                self.exec_stmts([s for s in d.node.body.stmts if s is not cd], scope, mode="layer")
                out = self.eval_body(cd.body, scope, what=f"`{d.name}`", mode="call")
                inst.calls += 1
                return out
            finally:
                self.instance = saved

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

    def name_instance(self, v, name: str):
        v.name = name
        if isinstance(v, Sequential):
            for i, inst in enumerate(v.items):
                inst.name = f"{name}.{i}"

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
        from .builtins import INIT_SCOPE
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
        node = self.graph.add("input", (), {"name": s.name, "dtype": dtype, "shape": dims},
                              span=s.span, name=s.name)
        for axis, (d, src) in enumerate(zip(dims, s.type.dims)):
            if isinstance(d, SymDim) and d not in self.graph.dim_sources:
                self.graph.dim_sources[str(d)] = (node, axis)
                scope.define(str(d), d, src.span)
        scope.define(s.name, Tensor(self.frame, node), s.span, unique=True, what="input")
        return _NO_RETURN

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


_NO_RETURN = object()

_ALLOWED = {
    "fn": {"Let", "Return", "If"},
    "call": {"Let", "Return", "If", "Update"},
    "layer": {"Let", "If", "ParamDecl", "StateDecl", "Update"},
    "model": {"Let", "If", "ParamDecl", "StateDecl", "InputDecl", "ResultDecl", "Update"},
    "submodel": {"Let", "If", "ParamDecl", "StateDecl", "InputDecl", "ResultDecl", "Update"},
}
_STMT_LABEL = {"Return": "`return`", "ParamDecl": "`param`", "StateDecl": "`state`",
               "InputDecl": "`input`", "ResultDecl": "an output/loss/metric declaration",
               "Update": "an update `<-`", "CallDef": "a call definition", "Let": "a binding",
               "If": "`if`"}


MAX_COMPILE_INT = 2 ** 63


@contextmanager
def _call_site(what: str, span, *, pattern: bool = False):
    """Errors raised inside a call point at the user's code: an error inside another
    file (the standard library, an import) is moved to the call site, the library line
    becoming a note; an input that does not fit the callee's signature (`pattern`) also
    gets a note showing the call."""
    try:
        yield
    except DslError as e:
        if span is None or span.source is None:
            raise
        if e.span is None:
            raise e.with_span(span)
        if e.span.path != span.path:
            e.notes.insert(0, (f"inside {what}, here", e.span))
            e.span = span
        elif pattern and not any(n_span == span for _, n_span in e.notes):
            e.notes.append((f"{what} is called here", span))
        raise


def _check_new(scope: Scope, name: str, what: str, span) -> None:
    """A declaration (`input`, `param`, `state`) may not reuse a name of its block."""
    if name in scope.vars:
        prev = scope.spans.get(name)
        raise NameError_(f"duplicate definition of {what} `{name}`", span,
                         notes=[("first defined here", prev)] if prev else None)


def _dim_like(v) -> bool:
    """A value a dim name can stand for; other values (a layer `B`, the function `h`)
    are shadowed by a dim pattern that binds the same name."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def compile_time_arith(op: str, a, b, span):
    """`a op b` on compile-time numbers; ints stay within 64 bits, results stay real."""
    try:
        if op == "**" and isinstance(a, int) and isinstance(b, int) and b > 64 and abs(a) > 1:
            raise OverflowError("the result does not fit in 64 bits")
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            # exact integer division stays an int, so `c / groups` is a dim
            if isinstance(a, int) and isinstance(b, int) and b and a % b == 0:
                r = a // b
            else:
                r = a / b
        elif op == "**":
            r = a ** b
        elif op == "%":
            r = a % b
        else:
            raise SpecError(f"`{op}` is not defined on numbers", span)
    except (ZeroDivisionError, OverflowError) as err:
        raise SpecError(f"cannot compute `{op}` at compile time: {err}", span) from None
    if isinstance(r, complex):
        raise SpecError(f"cannot compute `{op}` at compile time: {a} ** {b} is not a real number",
                        span)
    if isinstance(r, int) and not isinstance(r, bool) and abs(r) >= MAX_COMPILE_INT:
        raise SpecError(f"cannot compute `{op}` at compile time: the result does not fit in "
                        "64 bits", span)
    return r


def _check_annot(h: A.HParam, v, what, span):
    if isinstance(h.annot, str):
        ok = {"int": lambda x: isinstance(x, int) and not isinstance(x, bool),
              "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
              "bool": lambda x: isinstance(x, bool),
              "str": lambda x: isinstance(x, str) and not isinstance(x, SymDim),
              "dim": lambda x: isinstance(x, (int, str)) and not isinstance(x, bool)}.get(h.annot)
        if ok is not None and not ok(v):
            raise SpecError(f"{what}: `{h.name}` must be {h.annot}, found {describe(v)}", span)


def _show_dim(d) -> str:
    if isinstance(d, A.Name):
        return d.id
    if isinstance(d, A.Num):
        return str(d.value)
    if isinstance(d, A.Ellipsis_):
        return "..."
    if isinstance(d, A.BinOp):
        return f"{_show_dim(d.left)}{d.op}{_show_dim(d.right)}"
    return "?"


def _show_type(te: A.TypeExpr) -> str:
    return f"{te.dtype or ''}[{', '.join(_show_dim(d) for d in te.dims)}]"


def describe(v) -> str:
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, SymDim):
        return f"the dim {v}"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, tuple):
        return f"a {len(v)}-tuple"
    if isinstance(v, Instance):
        return f"a `{v.defn.name}` instance"
    if isinstance(v, LayerDef):
        return f"the {'model' if v.is_model else 'layer'} `{v.name}`"
    if isinstance(v, Closure):
        return f"the function `{v.name}`"
    if isinstance(v, Builtin):
        return f"the builtin `{v.name}`"
    if isinstance(v, Record):
        return f"the results ({', '.join(v.fields)})"
    if isinstance(v, InitSpec):
        return f"the initializer {v.kind}"
    if isinstance(v, Sequential):
        return f"a stack of {len(v.items)} layers"
    if isinstance(v, ModuleRef):
        return f"the imported module `{Path(v.path).name}`"
    if v is None:
        return "nothing"
    return type(v).__name__


# ---- the entry point ------------------------------------------------------------------------

def elaborate(prog: Program, model: str | None = None, hparams: dict | None = None, *,
              training: bool = False, dims: dict | None = None, extra: list | None = None,
              span=None) -> Graph:
    """Build the typed graph of one model of a program.

    `hparams` override the model's hyperparameters; `dims` fix symbolic dims to
    integers (``{"B": 32}``), which then appear as static dims everywhere.
    `extra` statements (a train block's update rules `w <- ...`) run last, in the
    model's scope.
    """
    d = pick_model(prog, model)
    g = Graph(d.name)
    ev = Evaluator(Frame(g), training=training)
    scope = Scope(d.scope, kind="model")
    for k, v in ev.bind_hparams(f"model `{d.name}`", d.node.hparams, [], hparams or {},
                                span or d.node.span, d.scope).items():
        scope.define(k, v)
    for k, v in (dims or {}).items():
        scope.define(k, int(v))
    with ev.entering(d.name, d.node.span):
        ev.exec_stmts(d.node.body.stmts, scope, mode="model")
        ev.exec_stmts(list(extra or []), scope, mode="model")
    if not g.outputs:
        raise SpecError(f"model `{d.name}` declares no output, loss or metric", d.node.span)
    g.meta["hparams"] = {k: v for k, v in scope.vars.items()
                         if k in {h.name for h in d.node.hparams}}
    g.meta["training"] = training
    g.meta["instances"] = ev
    return g


def pick_model(prog: Program, model: str | None) -> LayerDef:
    if model is None:
        if len(prog.models) == 1:
            return next(iter(prog.models.values()))
        trained = {_train_model_name(t) for t in prog.trains} - {None}
        if len(trained) == 1 and next(iter(trained)) in prog.models:
            return prog.models[next(iter(trained))]  # the model the file's train block trains
        if not prog.models:
            raise SpecError(f"{prog.path} defines no model", _file_span(prog))
        raise SpecError(f"{prog.path} defines {len(prog.models)} models "
                        f"({', '.join(prog.models)}); choose one with --model", _file_span(prog))
    if model not in prog.models:
        close = difflib.get_close_matches(model, list(prog.models), n=1)
        raise SpecError(f"no model `{model}` in {prog.path}", _file_span(prog),
                        hint=f"did you mean `{close[0]}`?" if close else
                        f"models: {', '.join(prog.models) or 'none'}")
    return prog.models[model]


def _train_model_name(t: A.TrainDef):
    m = t.model.func if isinstance(t.model, A.Call) else t.model
    return m.id if isinstance(m, A.Name) else None


def _file_span(prog: Program):
    from dsl.errors import Span
    src = prog.module.span.source if prog.module is not None and prog.module.span else None
    return Span(src, 1, 1, 1, 2) if src else None
