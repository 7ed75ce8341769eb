"""The model's typed graph as a TensorBoard GraphDef (`dlc train --tensorboard`).

Our IR, not a torch trace: the backend may be NumPy or onnxruntime, and the graph users
wrote is the one to see. One GraphDef node per IR node (and one per declared output),
named ``<layer path>/<op>_<id>`` so TensorBoard folds each layer instance into a box
(``encoder/0/self_attn``), with the op as the node's op, the dtype and the output shape
in ``_output_shapes`` (symbolic dims as -1, TensorBoard's unknown size)."""
from __future__ import annotations

from compiler.commands.layers import _owner

_DTYPES = {"f16": 19, "f32": 1, "f64": 2, "i32": 3, "i64": 9, "bool": 10}  # tensorflow DataType


def _shape_proto(t):
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    shape = getattr(t, "shape", None)
    if shape is None:
        return TensorShapeProto(unknown_rank=True)
    return TensorShapeProto(dim=[TensorShapeProto.Dim(size=d if isinstance(d, int) else -1,
                                                      name="" if isinstance(d, int) else str(d))
                                 for d in shape])


def graph_def(g):
    """A `tensorboard.compat.proto.graph_pb2.GraphDef` of graph `g` (every node the
    outputs depend on)."""
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef
    param_path = {n: (g.node(n).name or "").rsplit(".", 1)[0] if "." in (g.node(n).name or "")
                  else "" for n in g.params}
    names: dict[int, str] = {}
    nodes = []
    for nid in g.topo_order(list(g.outputs.values())):
        node = g.node(nid)
        path = param_path.get(nid) if node.op == "param" else _owner(g, nid, param_path)
        scope = path.replace(".", "/") + "/" if path else ""
        leaf = (node.name.rsplit(".", 1)[-1] if node.op in ("input", "param", "state") and node.name
                else f"{node.op}_{nid}")
        names[nid] = scope + leaf
        t = g.type(nid)
        attr = {"_output_shapes": AttrValue(list=AttrValue.ListValue(
            shape=[_shape_proto(x) for x in (t if isinstance(t, tuple) else (t,))]))}
        dtype = getattr(t, "dtype", None)
        if dtype in _DTYPES:
            attr["dtype"] = AttrValue(type=_DTYPES[dtype])
        nodes.append(NodeDef(name=names[nid], op=node.op, input=[names[a] for a in node.args],
                             attr=attr))
    for name, nid in g.outputs.items():
        kind = g.output_kinds.get(name, "output")
        nodes.append(NodeDef(name=f"{kind}s/{name}", op=kind, input=[names[nid]],
                             attr={"_output_shapes": AttrValue(list=AttrValue.ListValue(
                                 shape=[_shape_proto(g.type(nid))]))}))
    return GraphDef(node=nodes)
