"""Calling one instance twice shares its parameters, also for composite layers
whose bodies create sub-layers (their sub-instances are made once per call site)."""
from __future__ import annotations

import numpy as np

from compiler import api

SPEC = """
layer Twice(h: int) {
  (x: [B, d]) -> x |> MLP(h, d, 2)
}
model M() {
  input x: f32[B, 4]
  net = Twice(8)
  y = net(net(x))
  output y
}
"""


def test_composite_layer_called_twice_shares_its_sub_layers():
    m = api.load(text=SPEC)
    assert sorted(m.params) == sorted(f"net.mlp0.dense{i}.{p}" for i in range(3) for p in "Wb")
    params = m.init_params(0)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    got = m.run({"x": x}, params)["y"]

    def mlp(v):  # the same MLP, applied twice by hand
        for i in range(3):
            v = v @ params[f"net.mlp0.dense{i}.W"] + params[f"net.mlp0.dense{i}.b"]
            v = np.maximum(v, 0) if i < 2 else v
        return v
    np.testing.assert_allclose(got, mlp(mlp(x)), rtol=1e-5, atol=1e-6)
