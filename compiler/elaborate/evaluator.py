"""The evaluator: expressions, statements and calls, evaluated against scopes while
the graph is built.

The rooms it is made of: `expressions`, `statements`, `calls` (see the package's
docstring for what elaboration does).
"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.core.values import Instance, SymDim, Tensor
from compiler.elaborate.calls import Calls
from compiler.elaborate.checks import describe
from compiler.elaborate.expressions import Expressions
from compiler.elaborate.scope import Frame
from compiler.elaborate.statements import Statements
from dsl.errors import NameError_, SpecError


class Evaluator(Expressions, Calls, Statements):
    """Evaluates expressions and statements against scopes, building the graph."""

    def __init__(self, frame: Frame | None, *, training: bool = False):
        self.frame = frame
        self.training = training
        self.read_training = False  # set when the spec reads `training`
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
