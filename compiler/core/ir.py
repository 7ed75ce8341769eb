"""The graph IR: a NetworkX multigraph of primitive applications.

Each node is one primitive applied to earlier nodes. Node data:
``op`` (primitive name), ``args`` (ordered tuple of node ids), ``attrs`` (static
parameters; hashable values only, except a scan's ``body`` graph), ``type`` (a
`TensorType`, or a tuple of them for multi-result ops such as ``scan``), ``span``
(where in the user's spec it came from), ``name`` (a user-facing name or None),
``path`` (the layer path of the instance whose call made it, ``dense0`` or
``encoder/layer1/attn``; gradient nodes ``dense0/grad``; None at model level) and
``site`` (the outermost call site in the user's own file on the elaborator's call
stack: where a node made inside an std layer was asked for; None when unknown).
Builders set ``g.scope`` / ``g.site`` and every node added meanwhile carries them
(and ``g.default_span``, the span of a node added without one: a gradient node is
located at the node it differentiates).
Edges ``u -> v`` with key ``i`` mean "u is argument i of v"; they exist so that
NetworkX can inspect the graph, while ``args`` keeps argument order.

The compiler's own walks (topological order, reachability) read ``args`` from the
node store directly: ids grow as nodes are added, so id order is a topological
order and no phase needs a graph algorithm. The NetworkX graph (``g.nx``) is built
on first use and kept in step from then on, sharing the node attribute dicts, so a
command that never asks for it never imports NetworkX (about 0.1-0.2 s of start-up).

Types are inferred the moment a node is added, so every builder (the elaborator,
autodiff, optimizers, passes) works on a fully typed graph and a shape mistake is
reported where it is made.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from dsl.errors import ShapeError, SpecError

from compiler.core.limits import describe, limit
from compiler.core.types import TensorType, TypeMismatch
from compiler.primitives import get_primitive

# Ops whose values come from outside the graph rather than from other nodes.
SOURCE_OPS = ("input", "param", "state", "noise")

# Work counters of `Graph.ancestors` (calls, nodes visited), read by the regression
# test that keeps every phase linear in the graph; two integer additions per walk.
WALKS = {"calls": 0, "visits": 0}


class Node(NamedTuple):  # a read-only record; a NamedTuple is cheap to build (hot path)
    id: int
    op: str
    args: tuple[int, ...]
    attrs: dict
    type: Any  # TensorType | tuple[TensorType, ...]
    span: Any
    name: str | None


class Graph:
    """A typed computation graph. Named results live in ``outputs``.

    ``outputs`` maps a name to a node id; ``output_kinds`` says whether each is an
    ``output``, a ``loss`` or a ``metric``. ``dim_sources`` maps each base symbolic
    dim to ``(input node, axis)`` so backends can read its value at run time.
    ``updates`` maps a param/state node to the node computing its next value (batch
    norm running statistics, Hebbian and perceptron rules).
    """

    def __init__(self, name: str = ""):
        self.name = name
        self._data: dict[int, dict] = {}  # node id -> attribute dict, in id order
        self._nx = None  # the NetworkX view, built by the `nx` property when first asked for
        self._next = 0
        self.inputs: list[int] = []
        self.params: list[int] = []
        self.states: list[int] = []
        self.noises: list[int] = []
        self.outputs: dict[str, int] = {}
        self.output_kinds: dict[str, str] = {}
        self.dim_sources: dict[str, tuple[int, int]] = {}
        self.updates: dict[int, int] = {}
        self.meta: dict[str, Any] = {}
        self._source_names: dict[str, int] = {}  # attrs name -> first source node with it
        # what `add` stamps on each node as ``path`` / ``site`` (see the module docstring)
        self.scope: str | None = None
        self.site = None
        self.default_span = None  # the span of a node added without one (autodiff: the primal's)
        # The static limits, read once per graph: reading the environment per node was a
        # third of the cost of `add` on a 200k-node train step.
        self._limits = (limit("DLC_MAX_GRAPH_NODES"), limit("DLC_MAX_TENSOR_ELEMENTS"),
                        limit("DLC_MAX_PARAM_BYTES"))

    # ---- building -----------------------------------------------------------
    def add(self, op: str, args=(), attrs: dict | None = None, *, span=None, name=None,
            type: Any = None) -> int:
        """Append ``op(*args)`` and return its id; the type comes from the op's rule."""
        prim = get_primitive(op)
        if span is None:
            span = self.default_span
        args = tuple(map(int, args))
        attrs = dict(attrs or {})
        data = self._data
        for a in args:
            if a not in data:
                raise KeyError(f"{op}: argument {a} is not a node of this graph")
        if prim.arity is not None and len(args) != prim.arity:
            raise TypeError(f"primitive {op!r} takes {prim.arity} arguments, got {len(args)}")
        if type is None:
            try:
                type = prim.infer([data[a]["type"] for a in args], attrs)
            except TypeMismatch as e:
                raise ShapeError(f"{_op_label(op)}: {e}", span) from None
        _check_limits(self, op, type, span)
        nid = self._next
        self._next += 1
        d = data[nid] = {"op": op, "args": args, "attrs": attrs, "type": type, "span": span,
                         "name": name, "path": self.scope, "site": self.site}
        if self._nx is not None:
            _nx_add(self._nx, nid, d)
        if op in SOURCE_OPS and "name" in attrs:
            self._source_names.setdefault(attrs["name"], nid)
        if op == "input":
            self.inputs.append(nid)
        elif op == "param":
            self.params.append(nid)
        elif op == "state":
            self.states.append(nid)
        elif op == "noise":
            self.noises.append(nid)
        return nid

    def op(self, op: str, *args: int, span=None, **attrs) -> int:
        """Shorthand used by VJP rules and optimizers: ``g.op("mul", x, y)``."""
        return self.add(op, args, attrs, span=span)

    def const(self, value, dtype: str = "f32", shape=()) -> int:
        """A constant filled with ``value`` (a Python scalar) of a static shape."""
        return self.add("const", (), {"value": value, "dtype": dtype, "shape": tuple(shape)})

    def scalar_like(self, value, node: int) -> int:
        """A scalar constant of ``node``'s dtype (broadcasts against it)."""
        return self.const(value, self.type(node).dtype)

    def unbroadcast(self, ct: int, target: int) -> int:
        """Sum cotangent ``ct`` down to ``target``'s shape: the VJP of broadcasting."""
        return self.sum_to_shape(ct, self.type(target).shape)

    def sum_to_shape(self, ct: int, shape) -> int:
        """Sum cotangent ``ct`` down to a shape it was broadcast from."""
        ts, cs = tuple(shape), tuple(self.type(ct).shape)
        if ts == cs:
            return ct
        lead = len(cs) - len(ts)
        if lead:
            ct = self.op("sum", ct, axis=tuple(range(lead)), keepdims=False)
        kept = tuple(i for i, d in enumerate(ts) if d == 1 and cs[lead + i] != 1)
        if kept:
            ct = self.op("sum", ct, axis=kept, keepdims=True)
        return ct

    def copy(self) -> "Graph":
        """An independent copy, for a builder that adds to a graph it was handed (the
        train step) without elaborating the model again. Node dicts and their attrs
        dicts are copied (autodiff records a scan's stored carries in its attrs); types,
        spans and scan bodies are shared (nothing changes those in place)."""
        h = Graph(self.name)
        h._data = {n: {**d, "attrs": dict(d["attrs"])} for n, d in self._data.items()}
        h._next = self._next
        h.inputs, h.params, h.states, h.noises = (list(self.inputs), list(self.params),
                                                  list(self.states), list(self.noises))
        h.outputs, h.output_kinds = dict(self.outputs), dict(self.output_kinds)
        h.dim_sources, h.updates = dict(self.dim_sources), dict(self.updates)
        h.meta = dict(self.meta)
        h._source_names = dict(self._source_names)
        h._limits = self._limits
        return h  # scope, site and default_span start empty: they belong to a builder

    # ---- reading ------------------------------------------------------------
    def node(self, n: int) -> Node:
        d = self._data[n]
        return Node(n, d["op"], d["args"], d["attrs"], d["type"], d["span"], d["name"])

    def type(self, n: int) -> Any:
        return self._data[n]["type"]

    def data(self, n: int) -> dict:
        """Node ``n``'s attribute dict (the same dict as ``g.nx.nodes[n]``); mutable."""
        return self._data[n]

    def __contains__(self, n) -> bool:
        return n in self._data

    @property
    def nx(self):
        """The graph as a ``networkx.MultiDiGraph`` (built on first use, then kept in step)."""
        if self._nx is None:
            import networkx
            G = networkx.MultiDiGraph()
            for n, d in self._data.items():
                _nx_add(G, n, d)
            self._nx = G
        return self._nx

    def topo_order(self, roots=None) -> list[int]:
        """Nodes in dependency order (ties broken by id, so output is stable).

        With ``roots``, only the nodes those roots depend on. Ids grow as nodes are
        added and `add` only accepts existing arguments, so increasing id order is a
        topological order (and is the lexicographic one): no sort of the graph is
        needed, only one walk back from all the roots together.
        """
        if roots is None:
            return list(self._data)  # insertion order is id order
        return sorted(self.ancestors(roots))

    def ancestors(self, roots) -> set[int]:
        """The roots and every node they depend on: one reverse walk for all roots."""
        nodes = self._data
        seen: set[int] = set()
        stack = [int(r) for r in roots]
        for r in stack:
            if r not in nodes:
                raise KeyError(f"node {r} is not in this graph")
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            stack.extend(a for a in nodes[n]["args"] if a not in seen)
        WALKS["calls"] += 1
        WALKS["visits"] += len(seen)
        return seen

    def between(self, roots, sources) -> list[int]:
        """Nodes on some path from a node of ``sources`` to a root, in topological order.

        One reverse walk from the roots, then one forward sweep over that set in id
        order (a node is reached from ``sources`` if it is one or an argument is).
        """
        src = set(sources)
        nodes = self._data
        fwd: set[int] = set()
        order = []
        for n in self.topo_order(roots):
            if n in src or any(a in fwd for a in nodes[n]["args"]):
                fwd.add(n)
                order.append(n)
        return order

    def users(self, n: int) -> list[int]:
        return sorted(set(self.nx.successors(n)))

    def __len__(self) -> int:
        return len(self._data)

    def result_nodes(self) -> list[int]:
        return list(self.outputs.values()) + list(self.updates.values())

    def source_named(self, name: str) -> int | None:
        """The first source node (input, param, state, noise) named ``name``, or None."""
        return self._source_names.get(name)

    def by_name(self, kind: str) -> dict[str, int]:
        """Source nodes of one kind keyed by their name attribute."""
        ids = {"input": self.inputs, "param": self.params, "state": self.states,
               "noise": self.noises}[kind]
        return {self.node(n).attrs["name"]: n for n in ids}

    def dump(self, roots=None) -> str:
        """A readable listing, one node a line (for debugging and --verbose)."""
        lines = []
        for n in self.topo_order(roots):
            d = self.node(n)
            attrs = {k: v for k, v in d.attrs.items() if k != "body"}
            a = ", ".join(f"%{x}" for x in d.args)
            extra = f" {attrs}" if attrs else ""
            t = d.type if isinstance(d.type, TensorType) else "(" + ", ".join(map(str, d.type)) + ")"
            lines.append(f"%{n}: {t} = {d.op}({a}){extra}")
        for k, v in self.outputs.items():
            lines.append(f"{self.output_kinds.get(k, 'output')} {k} = %{v}")
        return "\n".join(lines)


def _nx_add(G, n: int, d: dict) -> None:
    """Add node ``n`` and its argument edges to NetworkX graph ``G``, sharing ``d``."""
    G.add_node(n)
    G._node[n] = d  # the same dict, so an attribute set either way is seen both ways
    for i, a in enumerate(d["args"]):
        G.add_edge(a, n, key=i)


def _op_label(op: str) -> str:
    return f"`{op}`"


def _check_limits(g: "Graph", op: str, t, span) -> None:
    """Static resource limits (compiler.core.limits): located errors, never a MemoryError."""
    # len(g), not len(g.nx): the NetworkX view is built on first use and costs an import
    max_nodes, max_elems, max_bytes = g._limits
    if len(g) >= max_nodes:
        raise SpecError(f"the graph has more than {describe('DLC_MAX_GRAPH_NODES')} nodes", span)
    for tt in (t if isinstance(t, tuple) else (t,)):
        n = 1
        for d in tt.shape:
            if isinstance(d, int):
                n *= d
        if n > max_elems:
            raise SpecError(f"a tensor of shape [{', '.join(map(str, tt.shape))}] has {n:,} elements, "
                            f"over the limit of {describe('DLC_MAX_TENSOR_ELEMENTS')}", span)
        if op in ("param", "state"):
            total = g.meta.get("_param_bytes", 0) + 4 * n
            g.meta["_param_bytes"] = total
            if total > max_bytes:
                raise SpecError(f"the parameters take {total:,} bytes, over the limit of "
                                f"{describe('DLC_MAX_PARAM_BYTES')}", span)
