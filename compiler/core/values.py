"""Compile-time values the elaborator passes around.

Numbers, booleans, strings and tuples are plain Python values; everything else is
one of the classes here. Tensors are `Tensor` (a node in some graph frame), dims
are `SymDim` (a symbolic dimension, distinct from a string literal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dsl import ast as A


class SymDim(str):
    """A symbolic dimension value (``B``), as opposed to a string literal."""


@dataclass(frozen=True)
class Tensor:
    frame: Any  # elaborate.Frame owning the graph
    node: int

    @property
    def type(self):
        return self.frame.graph.type(self.node)


@dataclass
class InitSpec:
    """An initializer: a kind and its arguments (see compiler.init)."""

    kind: str
    args: tuple = ()

    def as_attr(self) -> tuple:
        return (self.kind,) + tuple(self.args)


@dataclass
class Builtin:
    name: str
    fn: Callable  # fn(ctx, args, kwargs, span) -> value
    doc: str = ""
    # Special forms receive unevaluated AST arguments (repeat, grad's wrt names).
    lazy: bool = False


@dataclass
class Closure:
    """A user `fn` (named or lambda) with the scope it was defined in."""

    name: str
    params: list      # [A.HParam] for named fns, [SigParam|SigTuple] for lambdas
    body: Any         # expr | Block
    scope: Any
    span: Any = None
    is_lambda: bool = False


@dataclass
class LayerDef:
    node: A.LayerDef | A.ModelDef
    scope: Any
    is_model: bool = False

    @property
    def name(self) -> str:
        return self.node.name


@dataclass(eq=False)
class Instance:
    """One instance of a layer (or of a model used inside another model).

    Parameters are created on the first call (their shapes may depend on the
    input's), named ``<path>.<param>``; later calls reuse them: sharing an instance
    shares its parameters.
    """

    defn: LayerDef
    hparams: dict
    owner: Any               # the Instance that created it (None at model level)
    span: Any = None
    name: str | None = None  # set by the binding `name = Layer(...)`, else automatic
    params: dict = field(default_factory=dict)   # local name -> Tensor (root frame)
    states: dict = field(default_factory=dict)
    children_named: dict = field(default_factory=dict)  # (call site, k) -> sub-instance
    site_counter: dict = field(default_factory=dict)    # instances made per site, this call
    auto_counter: dict = field(default_factory=dict)
    sub: dict = field(default_factory=dict)      # attribute access: local name -> value
    calls: int = 0

    def path(self, ctx) -> str:
        if self.name is None:
            self.name = ctx.auto_name(self)
        if self.owner is None:
            return self.name
        parent = self.owner.path(ctx)
        return f"{parent}.{self.name}" if parent else self.name


@dataclass(eq=False)
class Sequential:
    """`repeat(N, Layer(...))`: N instances applied in order, each with its own params."""

    items: list
    name: str | None = None
    owner: Any = None


@dataclass
class Record:
    """Named results of a model used as a sub-model (``enc(x).mu``)."""

    fields: dict

    def as_tuple(self) -> tuple:
        return tuple(self.fields.values())


@dataclass
class ModuleRef:
    """An `import "..." as m` namespace."""

    path: str
    scope: Any
