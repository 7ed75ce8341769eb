"""A divergence inside an std layer names the user's own call of it (issue 15 item 6).

The first non-finite value of a diverging run is computed inside `Dense`, i.e. in
specs/std/layers.dl; the located error must also carry a note at the line of the
user's spec that called that layer, with the layer's path.
"""
from __future__ import annotations

from types import SimpleNamespace

from compiler import api
from compiler.commands.train import run_training

SPEC = """\
model Deep(features = 4) {
  input x: f32[B, features]
  input y: f32[B]
  h = x |> Dense(8, relu)
  pred = h |> Dense(1)
  loss mse = mean((pred[:, 0] - y) ** 2)
}
train Deep on linreg {
  optimizer sgd(lr = 1e30)
}
"""


def test_divergence_inside_a_std_layer_points_at_the_users_call(tmp_path, capsys):
    path = tmp_path / "spec.dl"
    path.write_text(SPEC)
    args = SimpleNamespace(seed=0, out=str(tmp_path / "run"), quiet=True, json=False,
                           backend="numpy", device="cpu", resume=False, epochs=None, steps=None)
    code = run_training(api.load(path), args)
    code = code[0] if isinstance(code, tuple) else code
    err = capsys.readouterr().err
    assert code == 1 and "training diverged" in err
    first = err.splitlines()[0]
    assert "specs/std/layers.dl:" in first  # the op itself lives in the library ...
    # ... and the note names the user's line: the `Dense` call on line 4 or 5 (lr = 1e30
    # blows up the weights of both layers at once; which matmul overflows first is
    # the forward order's business, the note must match the one reported)
    notes = [ln for ln in err.splitlines() if ": note: in layer `dense" in ln]
    assert len(notes) == 1, err
    layer = notes[0].split("`")[1]
    line = {"dense0": 4, "dense1": 5}[layer]
    assert notes[0].startswith(f"{path}:{line}:"), notes[0]
    assert SPEC.splitlines()[line - 1].strip() in err  # the user's line is shown
