"""AST node types. Every node carries the `Span` of the text it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import Span


@dataclass
class Node:
    span: Optional[Span] = field(default=None, repr=False, compare=False, kw_only=True)


# ---- expressions --------------------------------------------------------------
@dataclass
class Name(Node):
    id: str


@dataclass
class Num(Node):
    value: Any  # int | float


@dataclass
class Str(Node):
    value: str


@dataclass
class Bool(Node):
    value: bool


@dataclass
class Tuple(Node):
    items: list


@dataclass
class List(Node):
    items: list


@dataclass
class BinOp(Node):
    op: str  # + - * / @ % **
    left: Any
    right: Any


@dataclass
class UnaryOp(Node):
    op: str  # - + not
    operand: Any


@dataclass
class Compare(Node):
    op: str
    left: Any
    right: Any


@dataclass
class BoolOp(Node):
    op: str  # and | or
    left: Any
    right: Any


@dataclass
class Cond(Node):
    then: Any
    test: Any
    orelse: Any


@dataclass
class Pipe(Node):
    value: Any
    func: Any


@dataclass
class Kwarg(Node):
    name: str
    value: Any


@dataclass
class Call(Node):
    func: Any
    args: list
    kwargs: list  # [Kwarg]


@dataclass
class Attr(Node):
    value: Any
    name: str


@dataclass
class Slice(Node):
    start: Any
    stop: Any
    step: Any


@dataclass
class Ellipsis_(Node):
    pass


@dataclass
class Index(Node):
    value: Any
    subs: list  # expr | Slice | Ellipsis_


@dataclass
class Lambda(Node):
    params: list  # [SigParam | SigTuple]
    body: Any     # expr | Block


# ---- types ---------------------------------------------------------------------
@dataclass
class TypeExpr(Node):
    dtype: Optional[str]
    dims: list  # expr | Ellipsis_


@dataclass
class SigParam(Node):
    name: str
    type: Optional[TypeExpr]
    default: Any = None   # an expression: an optional input of a layer's call definition


@dataclass
class SigTuple(Node):
    items: list  # [SigParam | SigTuple]


# ---- statements ----------------------------------------------------------------
@dataclass
class Block(Node):
    stmts: list


@dataclass
class Let(Node):
    targets: list  # [SigParam | SigTuple] (a single target is a one-element list)
    value: Any


@dataclass
class Return(Node):
    value: Any


@dataclass
class If(Node):
    test: Any
    then: Block
    orelse: Any  # Block | If | None


@dataclass
class ParamDecl(Node):
    name: str
    type: TypeExpr
    init: Any  # expr | None


@dataclass
class StateDecl(Node):
    name: str
    type: TypeExpr
    init: Any


@dataclass
class InputDecl(Node):
    name: str
    type: TypeExpr
    domain: Any = None  # `in DOMAIN`: a Name or a Call (`range(0, 10)`), or None


@dataclass
class ResultDecl(Node):
    kind: str  # output | loss | metric
    name: str
    value: Any  # expr | None (publish an existing name)


@dataclass
class Update(Node):
    target: list  # dotted name parts
    value: Any


@dataclass
class CallDef(Node):
    params: list  # [SigParam | SigTuple]
    body: Any     # expr | Block


@dataclass
class Option(Node):
    name: str
    args: list


@dataclass
class Player(Node):
    name: str
    body: list


# ---- top level -----------------------------------------------------------------
@dataclass
class HParam(Node):
    name: str
    annot: Any    # TypeExpr | str | None
    default: Any  # expr | None


@dataclass
class Import(Node):
    path: str
    alias: Optional[str]


@dataclass
class ConstDef(Node):
    name: str
    value: Any


@dataclass
class LayerDef(Node):
    name: str
    hparams: list
    body: Block


@dataclass
class FnDef(Node):
    name: str
    hparams: list
    body: Any  # expr | Block


@dataclass
class ModelDef(Node):
    name: str
    hparams: list
    body: Block


@dataclass
class TrainDef(Node):
    model: Any  # Name | Call
    data: Any   # Name | Str | Call
    body: list  # [Option | Player | Update]


@dataclass
class Module(Node):
    items: list
    path: str = ""
