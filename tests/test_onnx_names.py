"""Readable ONNX artifacts (issue 15 item 6): node names from the spec's layer paths,
doc_strings with the spec location, value_info with the inferred (symbolic) shapes.

The expected names are written from the specs' structure (which layer instance each
op belongs to), not read back from the compiler; every artifact still passes
``check_model(full_check=True)`` (which re-infers shapes and compares them with our
value_info) and computes what a NumPy forward pass with the same weights computes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import api

ROOT = Path(__file__).resolve().parents[1]

NESTED = """\
layer Block(d) {
  attn = Dense(d, relu)
  ff = Dense(d)
  (x: [B, d]) -> ff(attn(x)) + x
}

layer Encoder(d, n) {
  layers = repeat(n, Block(d))
  (x: [B, d]) -> layers(x)
}

model Nested() {
  input x: f32[B, 64]
  input y: i64[B]
  encoder = Encoder(64, 2)
  logits = encoder(x) |> Dense(10)
  output probs = softmax(logits)
  loss ce = cross_entropy(logits, y)
}

train Nested on digits {
  batch 16
  optimizer adam(lr = 1e-3)
}
"""


def export(model, tmp_path, name, **kw):
    path = tmp_path / f"{name}.onnx"
    model.export_onnx(path, **kw)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    return proto, path


def names(proto) -> list[str]:
    return [n.name for n in proto.graph.node]


def test_mlp_nodes_are_named_after_their_layers(tmp_path):
    m = api.load(ROOT / "specs" / "mlp.dl")
    proto, path = export(m, tmp_path, "mlp")
    got = names(proto)
    assert len(set(got)) == len(got)  # unique
    for k in range(3):  # three Dense instances, auto-named dense0..dense2 in order
        # x @ W + b is one Gemm (backends/onnx/peephole.py), named after its MatMul
        assert f"dense{k}/Gemm" in got and f"dense{k}/Add" not in got
    assert "dense0/Relu" in got and "dense1/Relu" in got and "dense2/Relu" not in got
    # the op types agree with the names (a name is not stuck on the wrong node)
    for n in proto.graph.node:
        if "/" in n.name:
            assert n.name.split("/")[-1].split("_")[0] == n.op_type, n.name

    # the artifact still computes the MLP: a NumPy forward pass with the same weights
    params = m.init_params()
    proto, path = export(m, tmp_path, "mlp_w", params=params)
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    h = x
    for k in range(3):
        h = h @ params[f"dense{k}.W"] + params[f"dense{k}.b"]
        h = np.maximum(h, 0) if k < 2 else h
    e = np.exp(h - h.max(-1, keepdims=True))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(["probs"], {"x": x})
    # float32 throughout; 1e-5 is a few ulps of probabilities below 1
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), atol=1e-5)


def test_doc_strings_carry_the_spec_location_and_the_users_call(tmp_path):
    m = api.load(ROOT / "specs" / "mlp.dl")
    proto, _ = export(m, tmp_path, "mlp")
    by_name = {n.name: n for n in proto.graph.node}
    lines = (ROOT / "specs" / "mlp.dl").read_text().splitlines()
    call_line = next(i for i, t in enumerate(lines, 1) if "Dense(hidden, relu)" in t)
    doc = by_name["dense0/Gemm"].doc_string
    # made inside the std library's Dense, asked for on the user's `logits = ...` line
    mm = re.fullmatch(r"std/layers\.dl:(\d+):(\d+); called at (.+):(\d+):(\d+)", doc)
    assert mm, doc
    std = (ROOT / "specs" / "std" / "layers.dl").read_text().splitlines()
    assert "@" in std[int(mm.group(1)) - 1]  # the line of the matmul in `Dense`
    assert mm.group(3).endswith("mlp.dl") and int(mm.group(4)) == call_line
    # a node made in the user's own file is located there, with no call note
    lines_probs = next(i for i, t in enumerate(lines, 1) if "output probs" in t)
    softmax = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert softmax and re.fullmatch(rf".*mlp\.dl:{lines_probs}:\d+", softmax[0].doc_string)


def test_value_info_holds_the_inferred_shapes_with_named_dims(tmp_path):
    m = api.load(ROOT / "specs" / "mlp.dl", hparams={"hidden": 32})
    proto, _ = export(m, tmp_path, "mlp")
    vi = {v.name: v for v in proto.graph.value_info}
    out_of = {n.name: n.output[0] for n in proto.graph.node}

    def dims(name):
        return [d.dim_param or d.dim_value for d in vi[name].type.tensor_type.shape.dim]

    assert dims(out_of["dense0/Gemm"]) == ["B", 32]
    assert dims(out_of["dense2/Gemm"]) == ["B", 10]
    assert vi[out_of["dense0/Relu"]].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # onnx's own shape inference agrees with every value_info entry (no conflict raised
    # by full_check above) and finds the same shapes where it can infer them
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    again = {v.name: v for v in inferred.graph.value_info}
    for name in vi:
        assert again[name].type == vi[name].type, name


def test_nested_composites_and_repeat_give_slash_paths(tmp_path):
    spec = tmp_path / "nested.dl"
    spec.write_text(NESTED)
    m = api.load(spec)
    proto, _ = export(m, tmp_path, "nested")
    got = set(names(proto))
    for i in range(2):  # Encoder `encoder` > repeat `layers` > Block i > Dense attn/ff
        for sub in ("attn", "ff"):
            assert f"encoder/layers/{i}/{sub}/Gemm" in got
        assert f"encoder/layers/{i}/attn/Relu" in got
        assert f"encoder/layers/{i}/Add" in got  # the residual `+ x` of Block itself
    assert "dense0/Gemm" in got  # the readout, at model level


def test_gradient_nodes_carry_the_layer_path(tmp_path):
    spec = tmp_path / "nested.dl"
    spec.write_text(NESTED)
    m = api.load(spec, train_block=True)
    proto, _ = export(m, tmp_path, "nested_step", train_step=True)
    got = names(proto)
    assert len(set(got)) == len(got)
    # d/dx of x @ W inside each Dense is a product with the transposed weight: a Gemm
    # with transB (the Transpose folded in, backends/onnx/peephole.py)
    for p in ("dense0", "encoder/layers/0/attn", "encoder/layers/1/ff"):
        assert any(n.startswith(f"{p}/grad/Gemm") for n in got), p
    grads = [n for n in proto.graph.node if "/grad/" in n.name]
    assert grads and all(n.doc_string for n in grads if n.op_type == "Gemm")


@pytest.mark.parametrize("spec", ["cnn", "lstm", "transformer"])
def test_zoo_artifacts_still_pass_the_full_check(tmp_path, spec):
    m = api.load(ROOT / "specs" / f"{spec}.dl")
    proto, _ = export(m, tmp_path, spec)
    got = names(proto)
    assert len(set(got)) == len(got)
    assert proto.graph.value_info  # shapes recorded
    assert {p.key for p in proto.metadata_props} >= {"dlc.version", "dlc.spec_hash", "dlc.hparams"}
