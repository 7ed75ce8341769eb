"""`backends.onnx.proto` builds the same protobuf bytes as `onnx.helper`, and a
`dlc compile --to onnx` process never imports `onnx`'s Python code or ml_dtypes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper as H
from onnx import numpy_helper as NH

from backends.onnx import proto as P

ROOT = Path(__file__).resolve().parent.parent


def test_same_classes_as_onnx():
    assert P.TensorProto is onnx.TensorProto and P.ModelProto is onnx.ModelProto
    assert P.IR_VERSION == onnx.IR_VERSION


def test_builders_match_onnx_helper_byte_for_byte():
    attrs = dict(axis=-1, alpha=0.5, mode="constant", perm=[0, 2, 1], scales=[1.0, 2.5],
                 value=NH.from_array(np.array([1.5], np.float32)))
    a = H.make_node("Op", ["x", "y"], ["z"], name="n0", **attrs)
    b = P.make_node("Op", ["x", "y"], ["z"], name="n0", **attrs)
    assert a.SerializeToString() == b.SerializeToString()
    for arr in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3, np.int64),
                np.array([True, False]), np.zeros((0, 2), np.float64), np.ones(3, np.float16)):
        assert NH.from_array(arr, "t").SerializeToString() == P.from_array(arr, "t").SerializeToString()
    for shape in ([], ["B", 3], [None, 1]):
        assert (H.make_tensor_value_info("v", onnx.TensorProto.FLOAT, shape).SerializeToString()
                == P.make_tensor_value_info("v", onnx.TensorProto.FLOAT, shape).SerializeToString())
    e1 = H.make_attribute("pads", [], attr_type=onnx.AttributeProto.INTS)
    e2 = P.make_attribute("pads", [], attr_type=onnx.AttributeProto.INTS)
    assert e1.SerializeToString() == e2.SerializeToString()
    vi = [H.make_tensor_value_info("x", 1, ["B"])]
    g1 = H.make_graph([a], "g", vi, vi, initializer=[NH.from_array(np.ones(2, np.float32), "w")],
                      doc_string="d")
    g2 = P.make_graph([b], "g", vi, vi, initializer=[P.from_array(np.ones(2, np.float32), "w")],
                      doc_string="d")
    assert g1.SerializeToString() == g2.SerializeToString()
    m1 = H.make_model(g1, opset_imports=[H.make_opsetid("", 18)], ir_version=9, producer_name="dlc")
    m2 = P.make_model(g2, opset_imports=[P.make_opsetid("", 18)], ir_version=9, producer_name="dlc")
    assert m1.SerializeToString() == m2.SerializeToString()


def test_compile_to_onnx_imports_no_onnx_python_code(tmp_path):
    out = tmp_path / "m.onnx"
    code = ("import sys, json; from compiler.commands import cli; rc = cli.main(['compile', "
            f"{str(ROOT / 'specs' / 'mlp.dl')!r}, '--to', 'onnx', '-o', {str(out)!r}]); "
            "print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'ml_dtypes', 'onnxruntime', 'torch', 'networkx'))]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path, check=True)
    rc, mods = json.loads(p.stdout.strip().splitlines()[-1])
    assert rc == 0
    assert mods == ["onnx.onnx_ml_pb2"]  # only the generated protobuf module
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)


def test_check_imports_neither_onnx_nor_networkx(tmp_path):
    code = ("import sys, json, io, contextlib; from compiler.commands import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = cli.main(['check', {str(ROOT / 'specs' / 'mlp.dl')!r}])\n"
            "print(json.dumps([rc, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'ml_dtypes', 'onnxruntime', 'torch', 'networkx'))]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path, check=True)
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [0, []]
