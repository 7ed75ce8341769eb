"""What the evaluator's parts share: how values are described in messages, the
statement rules per block, compile-time arithmetic, and errors moved to the call site."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from compiler.core.values import (
    Builtin,
    Closure,
    InitSpec,
    Instance,
    LayerDef,
    ModuleRef,
    Record,
    Sequential,
    SymDim,
    Tensor,
)
from compiler.elaborate.scope import Scope
from dsl import ast as A
from dsl.errors import DslError, NameError_, SpecError

_DTYPE_NAMES = {"f32", "f64", "f16", "i64", "i32", "bool"}
MAX_CALL_DEPTH = 64

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
