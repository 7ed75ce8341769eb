"""The ONNX protobuf classes and the few `onnx.helper` builders the lowering uses,
without `import onnx`.

`import onnx` runs `onnx/__init__.py`, which imports `onnx.helper` -> `onnx._mapping`
-> `ml_dtypes` (0.5-0.7 s on the bench machine: most of a cold `dlc compile --to
onnx`). Building a ModelProto needs only the generated protobuf module
`onnx/onnx_ml_pb2.py`, which imports nothing but `google.protobuf`. So it is loaded
from onnx's package directory under its own name, `onnx.onnx_ml_pb2`, and
registered in `sys.modules`: a later `import onnx` (the checker, the reference
evaluator, onnxruntime runs) finds it there and uses the very same classes, so
messages built here and there mix freely. When onnx is already imported, its
module is used as is.

The builders mirror `onnx.helper` / `onnx.numpy_helper` for the values the
lowering produces (ints, floats, strings, int lists, tensors, graphs), byte for
byte; `tests/test_onnx_proto.py` compares them with onnx's own.
"""
from __future__ import annotations

import importlib.util
import numbers
import sys
from pathlib import Path

import numpy as np


def _pb2():
    name = "onnx.onnx_ml_pb2"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    spec = importlib.util.find_spec("onnx")  # locates the package without running it
    if spec is None or spec.origin is None:
        raise ImportError("the onnx package is not installed")
    path = Path(spec.origin).parent / "onnx_ml_pb2.py"
    if not path.is_file():  # another onnx layout: pay for the full import instead
        import onnx
        return onnx.onnx_ml_pb2
    s = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(s)
    sys.modules[name] = mod
    try:
        s.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


pb = _pb2()
TensorProto = pb.TensorProto
AttributeProto = pb.AttributeProto
GraphProto = pb.GraphProto
ModelProto = pb.ModelProto
NodeProto = pb.NodeProto
ValueInfoProto = pb.ValueInfoProto
IR_VERSION = pb.IR_VERSION

_NP_TO_ELEM = {
    np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint16): TensorProto.UINT16,
    np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL,
    np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.uint32): TensorProto.UINT32, np.dtype(np.uint64): TensorProto.UINT64,
}


def np_dtype_to_tensor_dtype(dt) -> int:
    return _NP_TO_ELEM[np.dtype(dt)]


def from_array(array: np.ndarray, name: str | None = None):
    """`onnx.numpy_helper.from_array` for numeric and bool arrays."""
    t = TensorProto()
    t.dims.extend(array.shape)
    if name:
        t.name = name
    a = np.asarray(array)
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    t.raw_data = a.tobytes()
    t.data_type = np_dtype_to_tensor_dtype(array.dtype)
    return t


def make_attribute(key: str, value, attr_type: int | None = None):
    a = AttributeProto()
    a.name = key
    if isinstance(value, numbers.Integral):
        a.i, a.type = int(value), AttributeProto.INT
    elif isinstance(value, numbers.Real):
        a.f, a.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, (str, bytes)):
        a.s, a.type = (value.encode() if isinstance(value, str) else value), AttributeProto.STRING
    elif isinstance(value, TensorProto):
        a.t.CopyFrom(value)
        a.type = AttributeProto.TENSOR
    elif isinstance(value, GraphProto):
        a.g.CopyFrom(value)
        a.type = AttributeProto.GRAPH
    else:
        vals = list(value)
        if not vals:
            if attr_type is None:
                raise ValueError(f"attribute {key!r}: an empty list needs attr_type")
            a.type = attr_type
        elif all(isinstance(v, numbers.Integral) for v in vals):
            a.ints.extend(int(v) for v in vals)
            a.type = AttributeProto.INTS
        elif all(isinstance(v, numbers.Real) for v in vals):
            a.floats.extend(float(v) for v in vals)
            a.type = AttributeProto.FLOATS
        elif all(isinstance(v, (str, bytes)) for v in vals):
            a.strings.extend(v.encode() if isinstance(v, str) else v for v in vals)
            a.type = AttributeProto.STRINGS
        elif all(isinstance(v, TensorProto) for v in vals):
            a.tensors.extend(vals)
            a.type = AttributeProto.TENSORS
        elif all(isinstance(v, GraphProto) for v in vals):
            a.graphs.extend(vals)
            a.type = AttributeProto.GRAPHS
        else:
            raise ValueError(f"attribute {key!r}: unsupported value {value!r}")
    if attr_type is not None and a.type != attr_type:
        raise TypeError(f"attribute {key!r}: inferred type {a.type} is not {attr_type}")
    return a


def make_node(op_type: str, inputs, outputs, name: str | None = None,
              doc_string: str | None = None, domain: str | None = None, **kwargs):
    node = NodeProto()
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    if doc_string:
        node.doc_string = doc_string
    if domain is not None:
        node.domain = domain
    if kwargs:  # most nodes have none: an empty extend costs as much as the node
        node.attribute.extend(make_attribute(k, v) for k, v in sorted(kwargs.items())
                              if v is not None)
    return node


def make_tensor_value_info(name: str, elem_type: int, shape):
    vi = ValueInfoProto()
    vi.name = name
    tt = vi.type.tensor_type
    tt.elem_type = elem_type
    if shape is not None:
        tt.shape.SetInParent()  # an empty shape (a scalar) is a present, empty field
        for d in shape:
            dim = tt.shape.dim.add()
            if d is None:
                continue
            if isinstance(d, numbers.Integral):
                dim.dim_value = int(d)
            elif isinstance(d, str):
                dim.dim_param = d
            else:
                raise ValueError(f"invalid dim {d!r}")
    return vi


def make_graph(nodes, name: str, inputs, outputs, initializer=None, doc_string=None,
               value_info=()):
    g = GraphProto()
    g.node.extend(nodes)
    g.name = name
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.initializer.extend(initializer or [])
    g.value_info.extend(value_info)
    if doc_string:
        g.doc_string = doc_string
    return g


def make_opsetid(domain: str, version: int):
    op = pb.OperatorSetIdProto()
    op.domain = domain
    op.version = version
    return op


def make_model(graph, *, opset_imports=(), **fields):
    m = ModelProto()
    m.ir_version = IR_VERSION
    m.graph.CopyFrom(graph)
    m.opset_import.extend(opset_imports)
    for k, v in fields.items():
        setattr(m, k, v)
    return m


def save(model, path) -> None:
    """`onnx.save` of a model under protobuf's 2 GiB limit."""
    Path(path).write_bytes(model.SerializeToString())


class helper:  # noqa: N801 - stands in for `onnx.helper` at the call sites
    make_node = staticmethod(make_node)
    make_attribute = staticmethod(make_attribute)
    make_tensor_value_info = staticmethod(make_tensor_value_info)
    make_graph = staticmethod(make_graph)
    make_model = staticmethod(make_model)
    make_opsetid = staticmethod(make_opsetid)
    np_dtype_to_tensor_dtype = staticmethod(np_dtype_to_tensor_dtype)


class numpy_helper:  # noqa: N801 - stands in for `onnx.numpy_helper`
    from_array = staticmethod(from_array)
