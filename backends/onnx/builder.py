"""The ONNX graph builder ``o`` handed to every primitive's ONNX lowering.

Interface (docs/internals.md, "The primitive table"):

* ``o.op(op_type, *inputs, outputs=1, domain="", **attrs)`` appends one node and
  returns its output name (a list of names when ``outputs > 1``); an input of
  ``None`` or ``""`` is an omitted optional input.
* ``o.const(array)`` an int/bool/float tensor constant (float arrays are stored in
  the run's float type); identical constants are shared.
* ``o.np_dtype(dtype)`` / ``o.elem_type(dtype)``: the run's numpy dtype / ONNX
  ``TensorProto`` enum for a dtype string (every float dtype maps to the run float).
* ``o.cast(name, dtype)``, ``o.shape_of(name)``.
* ``o.dims(shape)`` a 1-D int64 tensor of a possibly symbolic shape;
  ``o.dim_scalar(d)`` a 0-D int64 of one dim; ``o.ints(list)`` a 1-D int64 constant.
  Symbols are read at run time with ``Shape`` from the graph input named by
  ``graph.dim_sources`` (or, failing that, from any source whose type carries the
  symbol); composite dims (``"B*T"``, ``"2*B"``, ``"T-1"``) are built with Mul/Add.

In a float64 run, op types in ``f32_ops`` (see `ORT_F32_ONLY`) are wrapped in casts so
that onnxruntime, which lacks their double kernels, can run the model.

Extras for lowerings that need them: ``o.graph`` (the graph being lowered),
``o.type_of(node_id)`` (a node's `TensorType`), ``o.run_dtype``.

A builder for a subgraph (a scan body) is made with ``o.subgraph(body)``: it shares
the name space and the constants (initializers of the outermost graph, which ONNX
lets subgraphs read) with its parents, and resolves dims in the outermost scope
that knows them, so loop bodies stay small and compute nothing twice.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import proto as onnx  # the protobuf classes without `import onnx` (see proto.py)
from .proto import TensorProto, helper, numpy_helper

from compiler.core.ir import SOURCE_OPS, Graph
from compiler.core.types import FLOAT_DTYPES, TensorType, check_run_dtype, parse_dim

OPSET = 18

# Float ops onnxruntime's CPU provider implements for float32 only (no double kernel):
# `lower(..., f32_ops=ORT_F32_ONLY)` runs just these in float32 inside a float64 model.
ORT_F32_ONLY = frozenset({"Erf", "Conv", "ConvTranspose", "AveragePool"})

_ELEM = {
    "f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "f16": TensorProto.FLOAT16,
    "i64": TensorProto.INT64, "i32": TensorProto.INT32, "bool": TensorProto.BOOL,
}
_NP = {
    "f32": np.float32, "f64": np.float64, "f16": np.float16,
    "i64": np.int64, "i32": np.int32, "bool": np.bool_,
}


def ir_version() -> int:
    """The ONNX IR version to stamp: what the installed onnxruntime reads."""
    try:  # read from the package metadata: importing onnxruntime costs ~30 ms
        from importlib.metadata import version
        major, minor = (int(x) for x in version("onnxruntime").split(".")[:2])
        ort_ok = 10 if (major, minor) >= (1, 17) else 9
    except Exception:  # pragma: no cover - onnxruntime missing
        ort_ok = 9
    return min(ort_ok, onnx.IR_VERSION)


def value_info(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    """A tensor value info; symbolic dims become ``dim_param`` strings."""
    dims = [None if d is None else int(d) if isinstance(d, (int, np.integer)) else str(d)
            for d in shape]
    return helper.make_tensor_value_info(name, elem, dims)


class Names:
    """Fresh value names shared by a graph and its subgraphs (ONNX names are global)."""

    def __init__(self, reserved=()):
        self.taken = set(reserved)
        self.count = itertools.count()

    def fresh(self, hint: str = "v") -> str:
        while True:
            n = f"_{hint}{next(self.count)}"
            if n not in self.taken:
                self.taken.add(n)
                return n

    def reserve(self, name: str) -> None:
        self.taken.add(name)


class Builder:
    """Collects nodes of one ONNX graph (the main graph or a loop body)."""

    def __init__(self, graph: Graph, run_dtype: str = "f32", *, parent: "Builder | None" = None,
                 names: Names | None = None):
        check_run_dtype(run_dtype, FLOAT_DTYPES, "onnx",
                        "; onnxruntime's CPU provider has no bf16 kernels for most ops"
                        " (MatMul, Softmax, ...): run bf16 on the torch backend")
        self.graph = graph
        self.run_dtype = run_dtype
        self.parent = parent
        self.root: Builder = parent.root if parent is not None else self
        self.names: Names = parent.names if parent is not None else (names or Names())
        self.nodes: list[onnx.NodeProto] = []
        self.env: dict[int, object] = {}      # graph node id -> value name (or list)
        self._dim_cache: dict = {}            # dim / shape -> value name at this level
        # root only
        self.initializers: list[onnx.TensorProto] = []
        self._consts: dict = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.lazy_source = None               # root: fn(node id) -> value name or None
        self.memo: dict = {}                  # root: what one rule leaves for another (rnn.py)
        # The graph node being lowered: its layer path names the ONNX nodes it emits
        # (``dense0/MatMul``, made unique at the root) and ``doc`` (its spec location)
        # becomes their doc_string. Set by the lowering loop, kept across an inlined
        # composite (whose template graph has no paths of its own).
        self.path: str | None = None
        self.doc: str | None = None
        self._node_names: dict[str, int] = {}  # root: base node name -> uses so far
        self._np_dtypes: dict[str, np.dtype] = {}
        self.f32_ops: frozenset = frozenset()  # root: op types run in float32 in f64 runs
        # root: value name -> the IR type of the node it holds (args and results of
        # every lowered node), for the peephole rewrites (peephole.py) that need ranks
        self.types: dict[str, object] = {}
        self.peephole = True                   # root: run peephole.py on the built nodes

    # ---- dtypes -------------------------------------------------------------
    def np_dtype(self, dtype):
        if isinstance(dtype, str):  # memoised: every binary op's lowering asks, twice
            dt = self._np_dtypes.get(dtype)
            if dt is None:
                dt = self._np_dtypes[dtype] = np.dtype(
                    _NP[self.run_dtype] if dtype in FLOAT_DTYPES else _NP[dtype])
            return dt
        dt = np.dtype(dtype)
        return np.dtype(_NP[self.run_dtype]) if dt.kind == "f" else dt

    def elem_type(self, dtype) -> int:
        return helper.np_dtype_to_tensor_dtype(self.np_dtype(dtype))

    def tensor_elem(self, t: TensorType) -> int:
        return self.elem_type(t.dtype)

    def type_of(self, n: int):
        return self.graph.type(n)

    # ---- nodes --------------------------------------------------------------
    def op(self, op_type: str, *inputs, outputs: int = 1, domain: str = "", **attrs):
        outs = [self.names.fresh(op_type.lower()[:12]) for _ in range(outputs)]
        if (self.run_dtype == "f64" and op_type in self.root.f32_ops and not domain):
            # onnxruntime has no float64 kernel: compute this one node in float32
            f32 = TensorProto.FLOAT
            ins = [self.op("Cast", x, to=f32) if x else x for x in inputs]
            tmp = [self.names.fresh(op_type.lower()[:12]) for _ in range(outputs)]
            self._emit(op_type, ins, tmp, attrs)
            for t, out in zip(tmp, outs):
                self._emit("Cast", [t], [out], {"to": TensorProto.DOUBLE})
        else:
            self._emit(op_type, inputs, outs, attrs, domain=domain)
        return outs[0] if outputs == 1 else outs

    def _emit(self, op_type, inputs, outs, attrs, domain=""):
        ins = ["" if x is None else x for x in inputs]
        for x in ins:
            if not isinstance(x, str):
                raise TypeError(f"{op_type}: inputs must be value names, got {x!r}")
        if not attrs:  # most nodes: no attribute to convert
            self.nodes.append(helper.make_node(op_type, ins, list(outs),
                                               name=self._node_name(op_type),
                                               doc_string=self.doc, domain=domain or None))
            return
        clean = {k: _attr(v) for k, v in attrs.items() if v is not None}
        empty = [k for k, v in clean.items() if isinstance(v, list) and not v]
        node = helper.make_node(op_type, ins, list(outs), name=self._node_name(op_type),
                                doc_string=self.doc, domain=domain or None,
                                **{k: v for k, v in clean.items() if k not in empty})
        for k in empty:  # an empty list has no inferable type: ints is what ops take
            node.attribute.append(helper.make_attribute(k, [], attr_type=onnx.AttributeProto.INTS))
        self.nodes.append(node)

    def _node_name(self, op_type: str) -> str:
        """``path/OpType`` (``_2``, ``_3``... on repeats), or a fresh name off any layer."""
        if self.path is None:
            return self.names.fresh(op_type)
        base = f"{self.path}/{op_type}"
        used = self.root._node_names
        k = used.get(base, 0)
        used[base] = k + 1
        return base if k == 0 else f"{base}_{k + 1}"

    def const(self, value) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(self.np_dtype(self.run_dtype))
        elif arr.dtype.kind in "iu" and arr.dtype not in (np.int64, np.int32):
            arr = arr.astype(np.int64)
        root = self.root
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = root._consts.get(key)
        if name is None:
            name = self.names.fresh("c")
            root.initializers.append(numpy_helper.from_array(np.array(arr, order="C"), name))
            root._consts[key] = name
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray([int(v) for v in values], dtype=np.int64).reshape(-1))

    def cast(self, name: str, dtype) -> str:
        return self.op("Cast", name, to=self.elem_type(dtype))

    def shape_of(self, name: str) -> str:
        return self.op("Shape", name)

    # ---- dims ---------------------------------------------------------------
    def _levels(self):
        """This builder and its parents, outermost first."""
        chain, b = [], self
        while b is not None:
            chain.append(b)
            b = b.parent
        return chain[::-1]

    def _symbol(self, sym: str) -> tuple["Builder", str]:
        """(level, 1-D int64 [1] name) of a base symbol's run-time value."""
        levels = self._levels()
        for lv in levels:
            if ("sym", sym) in lv._dim_cache:
                return lv, lv._dim_cache[("sym", sym)]
        for lv in levels:
            src = lv._symbol_source(sym)
            if src is not None:
                name, axis = src
                v = lv.names.fresh(f"dim_{_safe(sym)}_")
                lv._emit("Shape", [name], [v], {"start": axis, "end": axis + 1})
                lv._dim_cache[("sym", sym)] = v
                return lv, v
        raise ValueError(f"cannot read the symbolic dim {sym!r} at run time: no graph input "
                         f"carries it (graph.dim_sources has {sorted(self.root.graph.dim_sources)})")

    def _symbol_source(self, sym: str):
        """(value name, axis) where this level can read ``sym``, or None."""
        g = self.graph
        cands = []
        if sym in g.dim_sources:
            cands.append(g.dim_sources[sym])
        # fallback: any source of this level whose declared shape has the symbol
        srcs = [n for n in self.env if n in g and g.data(n)["op"] in SOURCE_OPS]
        srcs += [n for n in (g.inputs + g.noises) if n not in self.env]
        for n in srcs:
            t = g.type(n)
            if isinstance(t, TensorType) and sym in t.shape:
                cands.append((n, t.shape.index(sym)))
        for nid, axis in cands:
            name = self.env.get(nid)
            if name is None and self.lazy_source is not None and nid in g:
                name = self.lazy_source(nid)
            if isinstance(name, str):
                return name, int(axis)
        return None

    def _dim1(self, d) -> tuple["Builder", str]:
        """(level, 1-D int64 [1] name) for one dim."""
        if isinstance(d, (int, np.integer)):
            return self.root, self.ints([int(d)])
        coef, syms, off = parse_dim(str(d))
        if len(syms) == 1 and coef == 1 and off == 0:
            return self._symbol(syms[0])
        levels = self._levels()
        for lv in levels:
            if ("dim", d) in lv._dim_cache:
                return lv, lv._dim_cache[("dim", d)]
        parts = [self._symbol(s) for s in syms]
        lv = max((p[0] for p in parts), key=lambda b: levels.index(b))
        cur = parts[0][1]
        for _, p in parts[1:]:
            cur = lv._op_at("Mul", cur, p)
        if coef != 1:
            cur = lv._op_at("Mul", cur, self.ints([coef]))
        if off:
            cur = lv._op_at("Add", cur, self.ints([off]))
        lv._dim_cache[("dim", d)] = cur
        return lv, cur

    def _op_at(self, op_type, *inputs, **attrs) -> str:
        out = self.names.fresh(op_type.lower())
        self._emit(op_type, inputs, [out], attrs)
        return out

    def dims(self, shape) -> str:
        shape = tuple(shape)
        if all(isinstance(d, (int, np.integer)) for d in shape):
            return self.ints(shape)
        levels = self._levels()
        for lv in levels:
            if ("shape", shape) in lv._dim_cache:
                return lv._dim_cache[("shape", shape)]
        pieces, run, lvl = [], [], self.root
        for d in shape:
            if isinstance(d, (int, np.integer)):
                run.append(int(d))
                continue
            if run:
                pieces.append(self.ints(run))
                run = []
            lv, name = self._dim1(d)
            if levels.index(lv) > levels.index(lvl):
                lvl = lv
            pieces.append(name)
        if run:
            pieces.append(self.ints(run))
        out = pieces[0] if len(pieces) == 1 else lvl._op_at("Concat", *pieces, axis=0)
        lvl._dim_cache[("shape", shape)] = out
        return out

    def dim_scalar(self, d) -> str:
        if isinstance(d, (int, np.integer)):
            return self.const(np.array(int(d), dtype=np.int64))
        levels = self._levels()
        for lv in levels:
            if ("scalar", d) in lv._dim_cache:
                return lv._dim_cache[("scalar", d)]
        lv, name = self._dim1(d)
        out = lv._op_at("Squeeze", name, self.ints([0]))
        lv._dim_cache[("scalar", d)] = out
        return out

    # ---- subgraphs ----------------------------------------------------------
    def subgraph(self, graph: Graph) -> "Builder":
        return Builder(graph, self.run_dtype, parent=self)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def _attr(v):
    """Python attribute values as onnx.helper.make_node wants them."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, tuple):
        return [_attr(x) for x in v]
    if isinstance(v, list):
        return [_attr(x) for x in v]
    if isinstance(v, np.ndarray):
        return numpy_helper.from_array(v)
    return v


__all__ = ["Builder", "Names", "OPSET", "ORT_F32_ONLY", "ir_version", "value_info"]
