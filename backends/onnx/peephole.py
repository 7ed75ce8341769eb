"""Peephole rewrites of a built ONNX node list (the main graph or a loop body).

`fuse_gemm`: a 2-D ``MatMul`` whose product feeds only an ``Add`` of a bias becomes one
``Gemm(A, B, C)``, and a ``Transpose(perm=[1, 0])`` feeding either operand becomes
``transA`` / ``transB``. It is what `torch.onnx.export` emits for ``nn.Linear``: one
node instead of two or three, whatever the runtime (onnxruntime re-fuses MatMul + Add
itself, but only when it knows the shapes; other runtimes and the gradient's
``Xᵀ dY`` products get the fused form only from the exporter). Gemm computes
``A' B' + C`` exactly as MatMul then Add do, up to float rounding.

`sum_into_layer_norm`: an ``Add`` read only by a ``LayerNormalization`` (the residual
``LN(x + f(x))`` of a post-norm transformer block) is written ``Sum``, the same
addition. onnxruntime (1.32, CPU) fuses Add -> LayerNormalization into its contrib
``SkipLayerNormalization`` whenever it knows the shapes (and dlc's models carry them
all as ``value_info``), and that kernel is 3.5-6x slower than the pair it replaces
([32, 40, 32]: 297 us vs 83 us; [32, 40, 256]: 2.6 ms vs 0.44 ms; 1 thread, docs/
ort_bugs.md). ``Sum`` is not matched, costs what ``Add`` costs, and is standard ONNX.

`drop_noops`: a ``Reshape`` to a constant shape the value already has, or a ``Cast``
to the type it already has (composites flatten [B, C] logits to [-1, C] and cast i64
labels to i64 whatever they are given), is dropped and its readers read its input.

`rewrite` runs them all; `lower` applies it to the main graph and every loop body.
"""
from __future__ import annotations

import numpy as np

from compiler.core.types import FLOAT_DTYPES, TensorType

from .proto import TensorProto, helper


def _uses(nodes, keep) -> dict[str, int]:
    """How many times each value is read: node inputs here and in every subgraph
    (a loop body reads outer values by name), plus once per name in ``keep``."""
    n: dict[str, int] = {}
    stack = [nodes]
    while stack:
        for node in stack.pop():
            for x in node.input:
                if x:
                    n[x] = n.get(x, 0) + 1
            for a in node.attribute:
                if a.HasField("g"):
                    stack.append(a.g.node)
                stack.extend(g.node for g in a.graphs)
    for x in keep:
        n[x] = n.get(x, 0) + 1
    return n


def _float_rank(types, name, rank=None):
    """The rank of a float value of known type, else None."""
    t = types.get(name)
    if not isinstance(t, TensorType) or t.dtype not in FLOAT_DTYPES:
        return None
    return t.rank if rank is None or t.rank == rank else None


def _perm(node):
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return None


def fuse_gemm(nodes: list, types: dict, keep=()) -> tuple[list, set]:
    """``nodes`` with 2-D MatMul (+ bias Add) (+ operand transposes) as Gemm.

    ``types``: value name -> `TensorType` (what the lowering knows; a value missing is
    left alone). ``keep``: names read from outside ``nodes`` (graph outputs). Returns
    the new list and the value names that no longer exist (for ``value_info``).
    """
    if not any(n.op_type == "MatMul" for n in nodes):
        return nodes, set()
    uses = _uses(nodes, keep)
    made = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            consumer.setdefault(x, i)
    out = list(nodes)
    gone: set[str] = set()
    names = {n.name for n in nodes}
    for i, mm in enumerate(nodes):
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        a, b = mm.input
        if _float_rank(types, a, 2) is None or _float_rank(types, b, 2) is None:
            continue
        ins, attrs = [a, b], {}
        for k, flag in ((0, "transA"), (1, "transB")):
            j = made.get(ins[k])
            if j is not None and out[j] is not None and out[j].op_type == "Transpose" \
                    and _perm(out[j]) in (None, [1, 0]):
                src = out[j].input[0]
                uses[ins[k]] -= 1
                uses[src] = uses.get(src, 0) + 1
                ins[k] = src
                attrs[flag] = 1
        m, at, c, y = mm.output[0], i, None, mm.output[0]
        j = consumer.get(m)
        # (out[j] is nodes[j]: that Add is not already another MatMul's Gemm)
        if uses.get(m) == 1 and j is not None and out[j] is nodes[j] \
                and nodes[j].op_type == "Add" and nodes[j].domain in ("", "ai.onnx"):
            add = nodes[j]
            other = add.input[1] if add.input[0] == m else add.input[0]
            tm, ty = types.get(m), types.get(add.output[0])
            # C must broadcast to [M, N] one way: the sum having the product's shape
            # (the IR checked the broadcast) and C of rank <= 2 says exactly that
            if other != m and _float_rank(types, other) is not None \
                    and _float_rank(types, other) <= 2 and isinstance(tm, TensorType) \
                    and isinstance(ty, TensorType) and tuple(tm.shape) == tuple(ty.shape) \
                    and tm.dtype == ty.dtype:
                c, y, at = other, add.output[0], j
        if c is None and not attrs:
            continue  # a bare MatMul: Gemm would gain nothing
        if c is not None:
            ins.append(c)
            out[at] = None  # the Add; the Gemm takes its place (C is made before it)
            gone.add(m)
        gemm = helper.make_node("Gemm", ins, [y], name=_rename(mm.name, names),
                                doc_string=mm.doc_string or None, **attrs)
        out[i] = None
        out[at] = gemm
    # transposes read by nothing any more (every reader folded them in)
    for j, n in enumerate(out):
        if n is not None and n.op_type == "Transpose" and uses.get(n.output[0], 0) == 0:
            out[j] = None
            gone.add(n.output[0])
    return [n for n in out if n is not None], gone


def sum_into_layer_norm(nodes: list, keep=()) -> list:
    """``nodes`` with each Add whose only reader is a LayerNormalization's X as Sum."""
    if not any(n.op_type == "LayerNormalization" for n in nodes):
        return nodes
    uses = _uses(nodes, keep)
    ln_x = {n.input[0] for n in nodes
            if n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx")}
    out = []
    for n in nodes:
        y = n.output[0] if len(n.output) == 1 else None
        if n.op_type == "Add" and n.domain in ("", "ai.onnx") and y in ln_x \
                and uses.get(y) == 1:
            n = helper.make_node("Sum", list(n.input), [y], name=_rename(n.name, set(), "Add", "Sum"),
                                 doc_string=n.doc_string or None)
        out.append(n)
    return out


def _same_shape(t, target) -> bool:
    """Whether Reshape(value of type ``t``, ``target``) is the identity."""
    if not isinstance(t, TensorType) or len(target) != t.rank or list(target).count(-1) > 1:
        return False
    # every entry the known dim itself, or one -1 (then it is the one dim left over)
    return all(v == -1 or (isinstance(d, int) and v == d > 0) for v, d in zip(target, t.shape))


def drop_noops(nodes: list, types: dict, keep=(), consts=None, elem_of=None) -> tuple[list, set]:
    """``nodes`` without identity Reshapes (to a constant shape, ``consts``: name ->
    int64 array) and Casts to the type a value has (``elem_of(dtype)``: the ONNX
    element type the run gives an IR dtype); their readers read the input instead."""
    consts = consts or {}
    alias: dict[str, str] = {}
    gone: set[str] = set()
    keep = set(keep)
    out = []
    for n in nodes:
        for k, x in enumerate(n.input):
            if x in alias:
                n.input[k] = alias[x]
        y = n.output[0] if len(n.output) == 1 else None
        if y is not None and y not in keep and n.domain in ("", "ai.onnx"):
            t = types.get(n.input[0]) if n.input else None
            noop = False
            if n.op_type == "Reshape" and n.input[1] in consts:
                noop = _same_shape(t, consts[n.input[1]].tolist())
            elif n.op_type == "Cast" and elem_of is not None and isinstance(t, TensorType):
                to = next((a.i for a in n.attribute if a.name == "to"), None)
                noop = to is not None and to == elem_of(t.dtype)
            if noop:
                alias[y] = n.input[0]
                gone.add(y)
                continue
        out.append(n)
    if alias:  # loop bodies read outer values by name
        stack = [a for n in out for a in n.attribute]
        while stack:
            a = stack.pop()
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for n in g.node:
                    for k, x in enumerate(n.input):
                        if x in alias:
                            n.input[k] = alias[x]
                    stack.extend(n.attribute)
    return out, gone


def int_consts(initializers) -> dict:
    """name -> value of the 1-D int64 initializers (candidate Reshape targets)."""
    return {t.name: np.frombuffer(t.raw_data, dtype="<i8") for t in initializers
            if t.data_type == TensorProto.INT64 and len(t.dims) == 1 and t.raw_data}


def rewrite(nodes: list, types: dict, keep=(), consts=None, elem_of=None) -> tuple[list, set]:
    """Every rewrite of this module: (new nodes, value names that vanished)."""
    nodes, gone = drop_noops(nodes, types, keep, consts, elem_of)
    nodes, more = fuse_gemm(nodes, types, keep)
    return sum_into_layer_norm(nodes, keep), gone | more


def _rename(name: str, taken: set, old: str = "MatMul", new_op: str = "Gemm") -> str:
    """``dense0/MatMul_2`` -> ``dense0/Gemm_2`` (unique among ``taken``)."""
    if not name:
        return name
    head, _, last = name.rpartition("/")
    new = (head + "/" if head else "") + last.replace(old, new_op, 1)
    base, k = new, 2
    while new in taken and new != name:
        new = f"{base}_{k}"
        k += 1
    taken.add(new)
    return new


__all__ = ["drop_noops", "fuse_gemm", "int_consts", "rewrite", "sum_into_layer_norm"]
