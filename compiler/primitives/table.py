"""The primitive table: one entry per op, holding everything that knows about it.

A primitive is declared once with `defprim` (name, one-line maths, arity, shape
rule) and then, next to the declaration, gets its VJP rule and one lowering per
backend::

    add = defprim("add", "x + y (broadcasting)", 2, binary_arith)

    @add.vjp
    def _(g, node, ct):                 # one cotangent (node id or None) per input
        x, y = node.args
        return [g.unbroadcast(ct, x), g.unbroadcast(ct, y)]

    add.numpy("np.add({0}, {1})")       # a template over argument sources ...
    add.torch("torch.add({0}, {1})")
    add.onnx(lambda o, n, x, y: o.op("Add", x, y))  # ... or a function

Lowering contracts (the backends call these; nothing here imports a backend):

* numpy / torch: a ``str.format`` template over argument sources ``{0} {1} ...``
  and attrs ``{axis}``, or ``fn(cg, node, *arg_srcs) -> str`` returning a Python
  expression. ``cg`` is the backend's code generator: ``cg.dim(d)`` gives the
  source of a (maybe symbolic) dim, ``cg.shape(dims)`` of a shape tuple,
  ``cg.helper(name)`` makes a runtime helper from the backend's prelude available,
  ``cg.dtype(t)`` the backend's dtype object source for a dtype string.
* onnx: ``fn(o, node, *arg_names) -> str | list[str]`` emitting nodes through the
  ONNX builder ``o`` (``o.op(op_type, *inputs, **attrs)``, ``o.const(array)``,
  ``o.shape_of(name)``, ``o.dims(shape)``, ``o.elem_type(dtype)``) and returning the
  output value name(s).

A backend lacking a lowering raises `MissingRule`, whose text names the rule kind
and the primitive (``no ONNX lowering for `conv2d```).

Composite ops (`compiler.primitives.composite`) also carry a *decomposition*,
``fn(g, args, attrs) -> node id`` building their meaning from other ops. It is the
fallback lowering of every backend without a native rule
(`compiler.transform.decompose.expand` builds it into a small graph the backend
inlines) and, unless the op declares its own, its VJP (`compiler.transform.autodiff.vjp_rule`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

_TABLE: dict[str, "Primitive"] = {}

BACKENDS = ("numpy", "torch", "onnx")
_BACKEND_LABEL = {"numpy": "NumPy", "torch": "PyTorch", "onnx": "ONNX"}


class MissingRule(Exception):
    """A primitive lacks a rule some phase needs; the message names both."""

    def __init__(self, kind: str, prim: str):
        self.rule_kind, self.prim = kind, prim
        super().__init__(f"no {kind} for `{prim}`")


@dataclass
class Primitive:
    name: str
    doc: str
    arity: int | None
    infer: Callable[[list, dict], Any]
    # Why this op has no VJP (its output is integer/boolean, or it is a source).
    nondiff: str | None = None
    # Indices of arguments that never receive a cotangent (indices, `like` shapes).
    static_args: tuple[int, ...] = ()
    # False when the VJP uses an op without its own VJP (second order undefined).
    second_order: bool = True
    vjp_rule: Callable | None = None
    lowerings: dict[str, Any] = field(default_factory=dict)
    # Composite ops: builds the op from other ops (its meaning, and the fallback).
    decomposition: Callable | None = None

    # ---- registration, used right under each declaration -------------------
    def vjp(self, fn: Callable) -> Callable:
        self.vjp_rule = fn
        return fn

    def numpy(self, rule):
        self.lowerings["numpy"] = rule
        return rule

    def torch(self, rule):
        self.lowerings["torch"] = rule
        return rule

    def onnx(self, rule):
        self.lowerings["onnx"] = rule
        return rule

    def decompose(self, fn: Callable) -> Callable:
        """Declare the op composite: ``fn(g, args, attrs)`` builds it in `g`."""
        self.decomposition = fn
        return fn

    # ---- queries --------------------------------------------------------------
    def lowering(self, backend: str):
        try:
            return self.lowerings[backend]
        except KeyError:
            raise MissingRule(f"{_BACKEND_LABEL.get(backend, backend)} lowering", self.name) from None

    def native(self, backend: str) -> bool:
        """Whether `backend` lowers this op itself (else a composite is inlined)."""
        return backend in self.lowerings

    def get_vjp(self) -> Callable:
        if self.vjp_rule is None and self.decomposition is not None:
            # differentiating the decomposition needs autodiff, a later layer: see
            # `compiler.transform.autodiff.vjp_rule`, which autodiff uses for every op
            raise MissingRule("VJP rule (its decomposition's: use "
                              "compiler.transform.autodiff.vjp_rule)", self.name)
        if self.vjp_rule is None:
            raise MissingRule("VJP rule" + (f" ({self.nondiff})" if self.nondiff else ""), self.name)
        return self.vjp_rule

    @property
    def differentiable(self) -> bool:
        return self.nondiff is None


def defprim(name: str, doc: str, arity: int | None, infer: Callable, **kw) -> Primitive:
    if name in _TABLE:
        raise ValueError(f"primitive {name!r} declared twice")
    p = Primitive(name, doc, arity, infer, **kw)
    _TABLE[name] = p
    return p


def get_primitive(name: str) -> Primitive:
    try:
        return _TABLE[name]
    except KeyError:
        raise MissingRule("primitive declaration", name) from None


def all_primitives() -> dict[str, Primitive]:
    return dict(_TABLE)


def render_template(rule, args: list[str], attrs: dict) -> str:
    """Expand a string lowering template: ``{0}`` are argument sources, names are attrs."""
    return rule.format(*args, **{k: v for k, v in attrs.items() if k != "body"})
