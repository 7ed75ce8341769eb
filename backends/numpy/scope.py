"""A generated NumPy function's body, with two liveness-driven savings:

* in place: an elementwise node writes its result into an argument's array
  (``add5 = np.add(matmul4, b, out=matmul4)``) when that array is a temporary of
  the node's type that nothing reads afterwards. It must be *owned*: made by a node
  whose lowering always returns a new array (never a feed, a constant, a view, or
  a result); and *dead*: this node is its last reader and every reader makes a new
  array (no view of it can outlive the write). A NumPy ufunc may write over an
  input it reads elementwise, so ``out=`` an argument is exact;
* inlined views: a transpose read by one node is written into that node's line
  (``relu11.T @ d``) instead of a statement of its own. Its argument is then never
  written in place (a transpose is not a reader that makes a new array).

Both keep every value bit for bit: the same ufuncs run on the same operands.
"""
from __future__ import annotations

from compiler.core.ir import Graph
from compiler.core.types import TensorType
from compiler.primitives import get_primitive

from ..pysource import Scope, node_hint, type_comment

# op -> its NumPy lowering with an ``out=`` array (the ufunc that lowering calls).
INPLACE = {
    "add": "np.add({0}, {1}, out={out})", "sub": "np.subtract({0}, {1}, out={out})",
    "mul": "np.multiply({0}, {1}, out={out})", "div": "np.divide({0}, {1}, out={out})",
    "maximum": "np.maximum({0}, {1}, out={out})", "minimum": "np.minimum({0}, {1}, out={out})",
    "neg": "np.negative({0}, out={out})", "exp": "np.exp({0}, out={out})",
    "log": "np.log({0}, out={out})", "sqrt": "np.sqrt({0}, out={out})",
    "tanh": "np.tanh({0}, out={out})", "abs": "np.abs({0}, out={out})",
    "sin": "np.sin({0}, out={out})", "cos": "np.cos({0}, out={out})",
    "relu": "np.maximum({0}, 0, out={out})",
}

# Ops whose NumPy lowering returns a new array, never an argument or a view of one
# (a rank-0 result may be a NumPy scalar: not writable, so never owned).
FRESH = frozenset(INPLACE) | {"matmul", "relu_grad", "softmax_cross_entropy_grad", "softmax"}


class NumpyScope(Scope):
    def plan(self, graph: Graph, order: list[int], keep: set[int]) -> None:
        self.planned = graph
        self.keep = set(keep)
        self.pos = {n: i for i, n in enumerate(order)}
        self.users: dict[int, list[int]] = {}
        for n in order:
            for a in dict.fromkeys(graph.node(n).args):
                self.users.setdefault(a, []).append(n)
        self.owned: set[int] = set()

    def lower_node(self, graph: Graph, n: int) -> str:
        if graph is not getattr(self, "planned", None):  # an inlined decomposition
            return super().lower_node(graph, n)
        node = graph.node(n)
        prim = get_primitive(node.op)
        native = prim.native(self.mod.backend)
        if native and node.op == "transpose" and self._inline_view(n):
            return self.bind(n, self._view(node))
        if native and node.op in INPLACE:
            out = self._dead_arg(graph, node)
            if out is not None:
                args = [self.env[a] for a in node.args]
                var = self.bind(n, self.fresh(node_hint(node)))
                self.emit(f"{var} = {INPLACE[node.op].format(*args, out=out)}"
                          f"  # {type_comment(node.type)}")
                self.owned.add(n)
                return var
        var = super().lower_node(graph, n)
        t = node.type
        if native and node.op in FRESH and isinstance(t, TensorType) and t.rank >= 1:
            self.owned.add(n)
        return var

    def _inline_view(self, n: int) -> bool:
        return n not in self.keep and len(self.users.get(n, ())) == 1

    def _view(self, node) -> str:
        x = self.env[node.args[0]]
        rank = len(node.type.shape)
        perm = node.attrs.get("perm")
        if perm is None or tuple(p % rank for p in perm) == tuple(reversed(range(rank))):
            return f"{x}.T"
        return f"{x}.transpose({tuple(p % rank for p in perm)})"

    def _dead_arg(self, graph: Graph, node) -> str | None:
        """The variable of an argument this node may overwrite with its result, or None."""
        t = node.type
        if not isinstance(t, TensorType) or not t.is_float:
            return None
        if any(graph.type(a).dtype != t.dtype for a in node.args):
            return None  # a mixed-dtype op casts: left to its own lowering
        for a in node.args:
            if (a in self.owned and a not in self.keep and node.args.count(a) == 1
                    and graph.type(a) == t and self._last_reader(a, node.id)):
                return self.env[a]
        return None

    def _last_reader(self, a: int, n: int) -> bool:
        readers = self.users.get(a, ())
        return (max(readers, key=self.pos.__getitem__) == n
                and all(self.planned.node(u).op in FRESH for u in readers))

