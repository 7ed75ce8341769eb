"""Lowering a `Graph` to an ONNX model (opset 18), and the `scan` -> `Loop` rule.

``lower(graph, results, dtype)`` walks only the nodes the results need, in
topological order, calling each primitive's ONNX rule ``fn(o, node, *arg_names)``
with the builder ``o`` (see `backends.onnx.builder`). Sources become graph inputs
named by their ``attrs["name"]`` (symbolic dims as ``dim_param``), or initializers
for parameters/states of an inference model (``params_as="initializers"``).
"""
from __future__ import annotations

import numpy as np

from . import proto as onnx  # the protobuf classes without `import onnx` (see proto.py)
from .proto import TensorProto, helper, numpy_helper

from compiler.core.ir import SOURCE_OPS, Graph
from compiler.primitives import get_primitive
from compiler.core.types import TensorType, dim_add, norm_axis

from .builder import OPSET, ORT_F32_ONLY, Builder, Names, ir_version, value_info
from .peephole import int_consts, rewrite

PARAMS_AS = ("inputs", "initializers")


def lower(graph: Graph, results: dict[str, int], dtype: str = "f32", *, name: str = "dlc",
          params_as: str | None = None, param_values: dict | None = None,
          f32_ops=(), doc: str | None = None, peephole: bool = True) -> onnx.ModelProto:
    """The ONNX model computing ``results`` (name -> node id) of ``graph``.

    ``dtype`` is the run float (``"f32"`` or ``"f64"``): every float node runs in it.
    ``params_as``: ``"inputs"`` (train-step and gradient programs: params and states
    are fed) or ``"initializers"`` (inference: their values come from
    ``param_values[name]``); the default is initializers when ``param_values`` is
    given. Inputs and noises are always graph inputs. ``f32_ops``: ONNX op types to
    compute in float32 (with casts) in a float64 model; pass ``True`` for
    `ORT_F32_ONLY`, the ops onnxruntime has no double kernel for. ``peephole``: rewrite
    the built nodes (2-D MatMul + bias Add -> Gemm, Add -> LayerNormalization as Sum,
    identity Reshape/Cast dropped: backends/onnx/peephole.py); off
    gives the node-per-primitive graph. Raises `MissingRule` when a primitive on the
    way has no ONNX rule.
    """
    results = dict(results)
    if params_as is None:
        params_as = "initializers" if param_values else "inputs"
    if params_as not in PARAMS_AS:
        raise ValueError(f"params_as must be one of {PARAMS_AS}, got {params_as!r}")
    param_values = dict(param_values or {})

    source_ids = [n for n in graph.topo_order() if graph.data(n)["op"] in SOURCE_OPS]
    source_names: dict[str, int] = {}
    for n in sorted(source_ids):
        nm = graph.data(n)["attrs"]["name"]
        if nm in source_names:
            raise ValueError(f"two graph sources are named {nm!r}")
        source_names[nm] = n

    o = Builder(graph, dtype, names=Names(list(source_names) + list(results)))
    o.f32_ops = frozenset(ORT_F32_ONLY if f32_ops is True else (f32_ops or ()))
    o.peephole = peephole
    fed: dict[str, int] = {}        # graph input name -> node id (for ordering)

    def source(nid: int) -> str | None:
        node = graph.node(nid)
        if node.op not in SOURCE_OPS:
            return None
        if nid in o.env:
            return o.env[nid]
        nm, t = node.attrs["name"], node.type
        if node.op in ("param", "state") and params_as == "initializers":
            if nm not in param_values:
                raise KeyError(f"no value for {node.op} {nm!r} (params_as='initializers')")
            arr = np.asarray(param_values[nm]).astype(o.np_dtype(t.dtype))
            want = tuple(t.shape)
            if len(want) != arr.ndim or any(isinstance(d, int) and d != s
                                             for d, s in zip(want, arr.shape)):
                raise ValueError(f"{node.op} {nm!r}: value of shape {arr.shape} does not match "
                                 f"its type {t}")
            o.initializers.append(numpy_helper.from_array(np.array(arr, order="C"), nm))
        else:
            fed[nm] = nid
            o.inputs.append(value_info(nm, o.elem_type(t.dtype), t.shape))
        o.env[nid] = nm
        return nm

    o.lazy_source = source
    roots = list(dict.fromkeys(results.values()))
    where = _Where()
    typed: list[tuple[str, object]] = []  # (value name, type) of each lowered node
    result_of: dict[int, str] = {}        # node id -> the first result name it is
    for rname, nid in results.items():
        if rname not in source_names:
            result_of.setdefault(nid, rname)
    for nid in graph.topo_order(roots):
        if nid in o.env:
            continue
        d = graph.data(nid)
        if d["op"] in SOURCE_OPS:
            source(nid)
        else:
            o.path, o.doc = d.get("path"), where(d)
            n_before = len(o.nodes)
            lower_node(o, nid)
            v = o.env[nid]
            if isinstance(v, str):
                if nid in result_of and len(o.nodes) > n_before:
                    v = o.env[nid] = _name_result(o, v, result_of[nid])
                    o.types[v] = d["type"]
                typed.append((v, d["type"]))
    o.path = o.doc = None

    outputs = []
    bound = set(fed) | {t.name for t in o.initializers}
    for rname, nid in results.items():
        v, t = o.env[nid], graph.type(nid)
        if not isinstance(v, str) or not isinstance(t, TensorType):
            raise TypeError(f"result {rname!r} is a multi-result node; project it with tuple_get")
        if v != rname:
            if rname in bound:
                raise ValueError(f"result name {rname!r} is also the name of a graph source")
            o._emit("Identity", [v], [rname], {})
        outputs.append(value_info(rname, o.elem_type(t.dtype), t.shape))

    inputs = sorted(o.inputs, key=lambda vi: fed[vi.name])
    gone = ()
    if peephole:
        o.nodes, gone = rewrite(o.nodes, o.types, keep=[vi.name for vi in outputs],
                                consts=int_consts(o.initializers), elem_of=o.elem_type)
    if gone:
        typed = [(v, t) for v, t in typed if v not in gone]
        # constants only the dropped nodes read (a Reshape's target shape)
        read = _reads(o.nodes) | {vi.name for vi in outputs}
        made = set(o._consts.values())
        o.initializers = [t for t in o.initializers if t.name in read or t.name not in made]
    g = helper.make_graph(o.nodes, name, inputs, outputs, initializer=o.initializers,
                          doc_string=doc, value_info=_value_infos(o, typed, inputs, outputs))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=ir_version(), producer_name="dlc")
    return model


def lower_node(o: Builder, nid: int) -> None:
    """Lower one non-source node of ``o.graph`` into ``o`` (its args already lowered)."""
    node = o.graph.node(nid)
    prim = get_primitive(node.op)
    if prim.decomposition is not None and not prim.native("onnx"):
        o.env[nid] = _inline(o, prim, node)
        return
    rule = prim.lowering("onnx")
    if not callable(rule):
        raise TypeError(f"ONNX lowering of `{node.op}` must be a function, got {rule!r}")
    args = [o.env[a] for a in node.args]
    types = o.root.types
    for a, v in zip(node.args, args):
        if isinstance(v, str):
            types[v] = o.graph.type(a)
    out = rule(o, node, *args)
    if isinstance(out, tuple):
        out = list(out)
    ok = isinstance(out, str) or (isinstance(out, list) and all(isinstance(x, str) for x in out))
    if not ok:
        raise TypeError(f"ONNX lowering of `{node.op}` returned {out!r}, not a value name")
    o.env[nid] = out
    if isinstance(out, str):
        types[out] = node.type


def inline_decomposition(o: Builder, node):
    """A composite's decomposition lowered in place of the node: for a native rule that
    does not apply to this run (`lstm`'s ONNX LSTM op in a float64 model, say)."""
    return _inline(o, get_primitive(node.op), node)


def _inline(o: Builder, prim, node) -> str:
    """A composite without an ONNX rule: its decomposition's nodes, in place. Its
    graph is lowered with the builder pointed at it (symbolic dims are then read off
    the arguments' shapes) and pointed back after."""
    from compiler.transform.decompose import expand
    sub, ins, out = expand(prim, [o.graph.type(a) for a in node.args], node.attrs)
    graph, env = o.graph, o.env
    o.graph, o.env = sub, {i: env[a] for i, a in zip(ins, node.args)}
    try:
        for m in sub.meta["order"]:
            if m not in o.env:
                lower_node(o, m)
        return o.env[out]
    finally:
        o.graph, o.env = graph, env


# ---- scan -> Loop ------------------------------------------------------------

def lower_scan(o: Builder, node, *args):
    """``scan`` as an ONNX ``Loop`` whose body is the scan body's subgraph.

    Trip count = ``length``; carries are loop-carried values; each x is read with
    ``Gather(x, i, axis)`` (``i = length-1-iter`` when reversed) from the outer
    scope, consts are outer-scope references; ys are Loop scan outputs (stacked on
    axis 0 in iteration order), flipped back when reversed and moved to ``axis``.
    """
    a = node.attrs
    body: Graph = a["body"]
    nc, nx_, nk = a["n_carry"], a["n_x"], a["n_const"]
    reverse, length = bool(a.get("reverse", False)), a["length"]
    if len(args) != nc + nx_ + nk:
        raise TypeError(f"scan: {len(args)} arguments for n_carry={nc}, n_x={nx_}, n_const={nk}")
    carries, xs, consts = args[:nc], args[nc:nc + nx_], args[nc + nx_:]
    b_in = list(body.inputs)
    if len(b_in) != nc + nx_ + nk:
        raise TypeError(f"scan body has {len(b_in)} inputs, expected {nc + nx_ + nk}")
    res = list(body.meta["results"])
    ny = len(res) - nc
    out_types = node.type if isinstance(node.type, tuple) else (node.type,)

    b = o.subgraph(body)
    it, cin = b.names.fresh("iter"), b.names.fresh("cond")
    g_inputs = [helper.make_tensor_value_info(it, TensorProto.INT64, []),
                helper.make_tensor_value_info(cin, TensorProto.BOOL, [])]
    for cid in b_in[:nc]:
        nm = b.names.fresh("carry")
        t = body.type(cid)
        g_inputs.append(value_info(nm, b.elem_type(t.dtype), t.shape))
        b.env[cid] = nm
    if nx_:
        idx = it
        if reverse:
            idx = b.op("Sub", o.dim_scalar(dim_add(length, -1)), it)
        for i, (xid, xname) in enumerate(zip(b_in[nc:nc + nx_], xs)):
            xt = o.type_of(node.args[nc + i])
            b.env[xid] = b.op("Gather", xname, idx, axis=norm_axis(a["axis"], xt.rank))
    for kid, kname in zip(b_in[nc + nx_:], consts):
        b.env[kid] = kname

    where = _Where()
    for nid in body.topo_order(res):
        if nid in b.env:
            continue
        d = body.data(nid)
        if d["op"] in SOURCE_OPS:
            raise ValueError(f"scan body source %{nid} ({body.data(nid)['op']}) is not one "
                             f"of the body's inputs")
        b.path, b.doc = d.get("path") or o.path, where(d) or o.doc
        lower_node(b, nid)

    cond_out = b.names.fresh("cond_out")
    b._emit("Identity", [cin], [cond_out], {})
    g_outputs = [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, [])]
    for r in res:
        v, t = b.env[r], body.type(r)
        if not isinstance(v, str):
            raise TypeError("scan body results must be single tensors")
        nm = b.names.fresh("out")
        if len(g_outputs) <= nc:
            b._emit("Identity", [v], [nm], {})
            g_outputs.append(value_info(nm, b.elem_type(t.dtype), t.shape))
        else:
            # Per-step ys leave the body flattened: runtimes disagree on whether scan
            # outputs are stacked (onnxruntime) or concatenated (onnx's reference
            # evaluator); for 1-D values both give [steps, n]. Reshaped back below.
            b._emit("Reshape", [v, b.ints([-1])], [nm], {})
            g_outputs.append(value_info(nm, b.elem_type(t.dtype), [_flat(t.shape)]))
    if o.root.peephole:
        b.nodes, _ = rewrite(b.nodes, o.root.types, keep=[vi.name for vi in g_outputs],
                             consts=int_consts(o.root.initializers), elem_of=o.elem_type)
    gp = helper.make_graph(b.nodes, o.names.fresh("scan_body"), g_inputs, g_outputs)

    outs = o.op("Loop", o.dim_scalar(length), o.const(np.array(True)), *carries,
                outputs=nc + ny, body=gp)
    outs = [outs] if isinstance(outs, str) else list(outs)
    final = outs[:nc]
    for j, y in enumerate(outs[nc:]):
        rank = out_types[nc + j].rank
        ax = norm_axis(a["axis"], rank)
        step_shape = tuple(body.type(res[nc + j]).shape)
        y = o.op("Reshape", y, o.dims((length,) + step_shape))
        if reverse:
            y = o.op("Slice", y, o.ints([-1]), o.ints([np.iinfo(np.int64).min]), o.ints([0]),
                     o.ints([-1]))
        if ax != 0:
            perm = list(range(1, ax + 1)) + [0] + list(range(ax + 1, rank))
            y = o.op("Transpose", y, perm=perm)
        final.append(y)
    return final


def _name_result(o: Builder, v: str, rname: str) -> str:
    """Give a result's value its result name at the node that makes it, instead of an
    ``Identity`` at the end (a train step has one result per parameter and slot: 12k
    Identity nodes at 4k parameters). Only when the node was just emitted (nothing has
    read ``v`` yet) and no dim/shape cache holds ``v`` for later reuse."""
    last = o.nodes[-1]
    if len(last.output) != 1 or last.output[0] != v or v in o._dim_cache.values():
        return v
    last.output[0] = rname
    return rname


class _Where:
    """A node's spec location as ``file:line:col`` (plus ``; called at file:line:col``,
    the user's call site, for a node made inside an std layer), memoised per span:
    the nodes of one layer call share spans."""

    def __init__(self):
        self.memo: dict = {}

    def __call__(self, d) -> str | None:
        span, site = d["span"], d.get("site")
        if span is None:
            return None
        key = (id(span), id(site))
        text = self.memo.get(key)
        if text is None:
            text = f"{_short(span.path)}:{span.line}:{span.col}"
            if site is not None and site.source is not span.source:
                text += f"; called at {_short(site.path)}:{site.line}:{site.col}"
            self.memo[key] = text
        return text


def _short(path: str) -> str:
    """The bundled std library by its place in the package (``std/layers.dl``), not by
    where this installation lives; the user's files as they were named."""
    i = path.replace("\\", "/").rfind("/specs/std/")
    return path[i + len("/specs/"):] if i >= 0 else path


def _value_infos(o: Builder, typed, inputs, outputs) -> list:
    """``value_info`` of every intermediate value: the inferred shapes, symbolic dims
    by name (``B``). One TypeProto per distinct type, copied: ~1 µs a value."""
    skip = {vi.name for vi in inputs} | {vi.name for vi in outputs}
    skip.update(t.name for t in o.initializers)
    types: dict = {}
    out = []
    for v, t in typed:
        if v in skip or not isinstance(t, TensorType):
            continue
        skip.add(v)
        key = (t.dtype, tuple(t.shape))  # plain tuples hash in C, TensorType in Python
        proto = types.get(key)
        if proto is None:
            proto = types[key] = value_info("", o.elem_type(t.dtype), t.shape).type
        out.append(onnx.ValueInfoProto(name=v, type=proto))
    return out


def _reads(nodes) -> set:
    """Every value name the nodes (and their subgraphs) read."""
    out, stack = set(), [nodes]
    while stack:
        for n in stack.pop():
            out.update(n.input)
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g.node)
                stack.extend(g.node for g in a.graphs)
    return out


def _flat(shape):
    """The element count of a shape as one dim (int, symbol product, or None)."""
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def register_scan() -> bool:
    """Attach `lower_scan` to the `scan` primitive (once it is declared)."""
    from compiler.primitives import MissingRule
    try:
        p = get_primitive("scan")
    except MissingRule:
        return False
    p.onnx(lower_scan)
    return True
