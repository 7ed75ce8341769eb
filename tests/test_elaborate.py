"""Elaboration: layers, instances, parameters, dims, modes, sub-models, closures,
`grad` and `scan`, checked on the graph and (for values) by running it on NumPy."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.elaborate import elaborate, load_program
from dsl.errors import DslError, ShapeError, SpecError


def load(src, **kw):
    return api.load(text=src, **kw)


def shapes(m):
    return {k: tuple(t.shape) for k, t in m.params.items()}


def ops(g, name):
    return [n for n in g.nx.nodes if g.node(n).op == name]


# ---- parameter names -------------------------------------------------------------------------

NAMING = """
layer Block(h: int) {
  (x) -> x |> Dense(h, relu) |> Dense(h)
}
model M(hidden = 4) {
  input x: f32[B, 3]
  enc = Dense(hidden)
  a = enc(x)
  b = x |> Dense(5) |> MLP(6, 2)
  blocks = repeat(2, Dense(hidden))
  c = a |> blocks
  d = Block(7)(a)
  output y = a + enc(x)
  output z = b
  output w = c + d[..., 0:4]
}
"""


def test_parameter_names():
    m = load(NAMING)
    assert shapes(m) == {
        "enc.W": (3, 4), "enc.b": (4,),                          # a named instance
        "dense0.W": (3, 5), "dense0.b": (5,),                    # automatic: layer name + counter
        "mlp0.dense0.W": (5, 6), "mlp0.dense0.b": (6,),          # nested in a std layer
        "mlp0.dense1.W": (6, 2), "mlp0.dense1.b": (2,),
        "blocks.0.W": (4, 4), "blocks.0.b": (4,),                # repeat: one instance per copy
        "blocks.1.W": (4, 4), "blocks.1.b": (4,),
        "block0.dense0.W": (4, 7), "block0.dense0.b": (7,),      # nested in a user layer
        "block0.dense1.W": (7, 7), "block0.dense1.b": (7,),
    }


def test_param_count_is_the_sum_of_the_shapes():
    m = load(NAMING)
    assert m.param_count() == sum(int(np.prod(s)) for s in shapes(m).values())


def test_sharing_an_instance_shares_its_parameters():
    m = load("""
model M() {
  input a: f32[B, 3]
  input b: f32[B, 3]
  d = Dense(4)
  output ya = d(a)
  output yb = d(b)
}
""")
    assert list(m.params) == ["d.W", "d.b"]
    g = m.graph
    (w,) = [n for n in g.params if g.node(n).attrs["name"] == "d.W"]
    matmuls = [n for n in ops(g, "matmul") if w in g.node(n).args]
    assert len(matmuls) == 2
    # the same numbers come out for the same input
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    out = m.run({"a": x, "b": x})
    np.testing.assert_array_equal(out["ya"], out["yb"])


def test_fresh_instances_have_their_own_parameters():
    m = load("""
model M() {
  input a: f32[B, 3]
  output ya = Dense(4)(a)
  output yb = Dense(4)(a)
}
""")
    assert sorted(m.params) == ["dense0.W", "dense0.b", "dense1.W", "dense1.b"]
    p = m.init_params(seed=0)
    assert not np.array_equal(p["dense0.W"], p["dense1.W"])


# ---- dims --------------------------------------------------------------------------------------

def test_parameter_shapes_are_inferred_from_inputs():
    m = load("""
layer Proj(out: int) {
  param W: [d, out] ~ glorot
  (x: [..., d]) -> x @ W
}
model M() {
  input x: f32[B, T, 8]
  output y = Proj(5)(x)
}
""")
    assert shapes(m) == {"proj0.W": (8, 5)}
    assert m.outputs["y"][1].shape == ("B", "T", 5)


def test_symbolic_dims_unify_across_inputs():
    src = """
layer Gate() {
  (x: [n, d], g: [n]) -> x * expand_dims(g, -1)
}
model M() {
  input x: f32[B, 3]
  input g: f32[DIM]
  output y = Gate()(x, g)
}
"""
    m = load(src.replace("DIM", "B"))
    assert m.outputs["y"][1].shape == ("B", 3)
    with pytest.raises(ShapeError) as info:
        load(src.replace("DIM", "C"))
    assert "dim `n` is B but the tensor has C there" in info.value.message


def test_symbolic_dims_broadcast_only_with_themselves():
    load("model M() {\n  input x: f32[B, 3]\n  input y: f32[B, 1]\n  output z = x + y\n}\n")
    with pytest.raises(ShapeError):
        load("model M() {\n  input x: f32[B, 3]\n  input y: f32[C, 3]\n  output z = x + y\n}\n")


def test_dims_can_be_bound_to_numbers():
    m = load("model M() {\n  input x: f32[B, T, 3]\n  output y = reshape(x, [B * T, 3])\n}\n",
             dims={"B": 8, "T": 5})
    assert m.inputs["x"].shape == (8, 5, 3)
    assert m.outputs["y"][1].shape == (40, 3)


def test_symbolic_dim_products_type_check():
    m = load("model M() {\n  input x: f32[B, T, 3]\n  output y = reshape(x, [B * T, 3])\n}\n")
    assert m.outputs["y"][1].shape == ("B*T", 3)


def test_dim_and_shape_give_compile_time_dims():
    m = load("""
model M() {
  input x: f32[B, 6]
  n = dim(x, -1)
  output y = reshape(x, [x.shape[0], n / 2, 2])
}
""")
    assert m.outputs["y"][1].shape == ("B", 3, 2)


def test_a_dim_name_may_shadow_a_layer_name():
    m = load("layer B() {\n  (x) -> x\n}\nmodel M() {\n  input x: f32[B, 4]\n  output y = x\n}\n")
    assert m.inputs["x"].shape == ("B", 4)


# ---- hyperparameters -----------------------------------------------------------------------------

HP = """
model M(hidden = 4, act = relu, deep: bool = false) {
  input x: f32[B, 3]
  h = x |> Dense(hidden, act)
  h = (h |> Dense(hidden)) if deep else h
  output y = h
}
"""


def test_hyperparameter_defaults_and_overrides():
    assert shapes(load(HP)) == {"dense0.W": (3, 4), "dense0.b": (4,)}
    assert shapes(load(HP, hparams={"hidden": 16})) == {"dense0.W": (3, 16), "dense0.b": (16,)}
    assert shapes(load(HP, hparams={"deep": True})) == {
        "dense0.W": (3, 4), "dense0.b": (4,), "dense1.W": (4, 4), "dense1.b": (4,)}


def test_bad_hyperparameter_overrides():
    with pytest.raises(SpecError) as info:
        load(HP, hparams={"hiden": 16})
    assert "has no parameter `hiden`" in info.value.message and "hidden" in info.value.hint
    with pytest.raises(SpecError) as info:
        load(HP, hparams={"deep": 3})
    assert "`deep` must be bool" in info.value.message


def test_layer_hyperparameter_annotations_are_checked():
    with pytest.raises(SpecError) as info:
        load("model M() {\n  input x: f32[B, 3]\n  output y = Dense(2.5)(x)\n}\n")
    assert "`out` must be int, found the number 2.5" in info.value.message


def test_consts_and_compile_time_arithmetic():
    m = load("""
const WIDTH = 2 * 8
const HALF = WIDTH / 2
model M() {
  input x: f32[B, 3]
  output y = x |> Dense(WIDTH) |> Dense(HALF)
}
""")
    assert shapes(m)["dense1.W"] == (16, 8)


# ---- train / eval modes ----------------------------------------------------------------------------

def test_if_training_selects_at_compile_time():
    prog = load_program(text="""
model M() {
  input x: f32[B, 3]
  if training {
    y = dropout(x, 0.5)
  } else {
    y = 2 * x
  }
  output out = y
}
""")
    ev = elaborate(prog, training=False)
    tr = elaborate(prog, training=True)
    assert ev.noises == [] and len(tr.noises) == 1
    assert ops(ev, "mul") and not ops(ev, "where")
    assert ops(tr, "where")


def test_batch_norm_updates_running_statistics_only_in_training():
    src = "model M() {\n  input x: f32[B, 3]\n  output y = BatchNorm()(x)\n}\n"
    m = load(src)
    assert set(m.states) == {"batchnorm0.running_mean", "batchnorm0.running_var"}
    assert m.graph.updates == {}
    tr = m.train_graph
    assert {tr.node(n).attrs["name"] for n in tr.updates} == set(m.states)


# ---- sub-models -----------------------------------------------------------------------------------

VAE = """
model Encoder(z: int = 2) {
  input x: f32[B, 8]
  h = x |> Dense(4, relu)
  output mu = h |> Dense(z)
  output logvar = h |> Dense(z)
}
model Decoder() {
  input z: f32[B, 2]
  output x = z |> Dense(8)
}
model VAE() {
  input x: f32[B, 8]
  enc = Encoder()
  e = enc(x)
  mu, logvar = e
  z = mu + exp(0.5 * logvar) * normal(mu.shape)
  output recon = Decoder()(z).x
  output mean = enc(x).mu
  loss elbo = mse(recon, x) + kl_normal(mu, logvar)
}
"""


def test_sub_models_return_records():
    m = load(VAE, model="VAE")
    assert sorted(m.params) == sorted([
        "enc.dense0.W", "enc.dense0.b", "enc.dense1.W", "enc.dense1.b",
        "enc.dense2.W", "enc.dense2.b", "decoder0.dense0.W", "decoder0.dense0.b"])
    assert m.outputs["recon"][1].shape == ("B", 8)
    assert m.outputs["mean"][1].shape == ("B", 2)
    assert m.outputs["elbo"][0] == "loss"
    # calling the same sub-model instance twice shares its parameters
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    out = m.run({"x": x})
    assert out["mean"].shape == (3, 2)


def test_a_sub_model_is_also_a_model_on_its_own():
    m = load(VAE, model="Encoder", hparams={"z": 3})
    assert set(m.outputs) == {"mu", "logvar"} and m.outputs["mu"][1].shape == ("B", 3)


# ---- functions, lambdas, closures -------------------------------------------------------------------

def test_lambdas_and_closures():
    m = load("""
fn scale_by(k) = fn(a) -> a * k
fn apply_twice(f, v) = f(f(v))
model M(k = 3.0) {
  input x: f32[B, 2]
  triple = scale_by(k)
  pair = fn(a, (b, c)) -> a + b * c
  output y = apply_twice(triple, x)
  output z = pair(x, (x, 2.0))
}
""")
    x = np.array([[1.0, -2.0]], dtype=np.float32)
    out = m.run({"x": x})
    np.testing.assert_allclose(out["y"], 9 * x)
    np.testing.assert_allclose(out["z"], 3 * x)


def test_typed_function_arguments_bind_dims():
    m = load("""
fn flat(a: [n, d]) = reshape(a, [n * d])
model M() {
  input x: f32[B, 3]
  output y = flat(x)
}
""")
    assert m.outputs["y"][1].shape == ("3*B",)


def test_block_functions_return():
    m = load("""
fn norm2(v) {
  s = sum(v * v, axis = -1, keepdims = true)
  return v / sqrt(s)
}
model M() {
  input x: f32[B, 2]
  output y = norm2(x)
}
""")
    out = m.run({"x": np.array([[3.0, 4.0]], np.float32)})
    np.testing.assert_allclose(out["y"], [[0.6, 0.8]], rtol=1e-6)


# ---- grad --------------------------------------------------------------------------------------------

def test_grad_of_grad_is_the_second_derivative():
    m = load("""
model M() {
  input x: f32[5]
  output g1 = grad(sum(x * x * x), x)
  output g2 = grad(sum(grad(sum(x * x * x), x)), x)
}
""")
    x = np.linspace(-2, 2, 5)
    out = m.run({"x": x}, dtype="f64")
    np.testing.assert_allclose(out["g1"], 3 * x ** 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["g2"], 6 * x, rtol=1e-12, atol=1e-12)


def test_third_order_and_tuples_of_wrt():
    m = load("""
model M() {
  input x: f32[4]
  input w: f32[4]
  f = sum(sin(x) * w)
  gx, gw = grad(f, (x, w))
  output d1 = gx
  output d2 = gw
  output d3 = grad(sum(grad(sum(grad(f, x)), x)), x)
}
""")
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=4), rng.normal(size=4)
    out = m.run({"x": x, "w": w}, dtype="f64")
    np.testing.assert_allclose(out["d1"], np.cos(x) * w, rtol=1e-12)
    np.testing.assert_allclose(out["d2"], np.sin(x), rtol=1e-12)
    np.testing.assert_allclose(out["d3"], -np.cos(x) * w, rtol=1e-12)


def test_grad_with_respect_to_a_parameter_and_stop_gradient():
    m = load("""
model M() {
  input x: f32[3]
  param W: [3] ~ ones
  output gw = grad(sum(W * x), W)
  output gs = grad(sum(stop_gradient(x) * x), x)
}
""")
    x = np.array([1.0, 2.0, -1.0])
    out = m.run({"x": x}, dtype="f64")
    np.testing.assert_allclose(out["gw"], x)
    np.testing.assert_allclose(out["gs"], x)


# ---- scan --------------------------------------------------------------------------------------------

RNN = """
model M() {
  input xs: f32[T, B, 3]
  cell = Dense(4, tanh)
  h0 = zeros([4])
  hT, hs = scan(fn(h, x) {
    h2 = cell(concat([x, broadcast_to(h, [dim(x, 0), 4])], axis = -1))
    return (mean(h2, axis = 0), h2)
  }, xs, init = h0)
  output last = hT
  output all = hs
  loss l = mean(hs * hs)
}
"""


def test_scan_elaborates_into_a_nested_graph():
    m = load(RNN)
    g = m.graph
    (s,) = ops(g, "scan")
    body = g.node(s).attrs["body"]
    assert g.node(s).attrs["n_carry"] == 1 and g.node(s).attrs["length"] == "T"
    assert ops(body, "matmul")               # the cell runs inside the body
    assert not ops(g, "matmul")              # ... and not in the outer graph
    assert m.outputs["all"][1].shape == ("T", "B", 4)
    assert shapes(m) == {"cell.W": (7, 4), "cell.b": (4,)}   # params live outside, captured


@pytest.mark.parametrize("T", [2, 50])
def test_scan_graph_size_does_not_grow_with_the_sequence(T):
    small = load(RNN, dims={"T": 1})
    big = load(RNN, dims={"T": T})
    assert len(big.graph) == len(small.graph)
    (s1,), (s2,) = ops(small.graph, "scan"), ops(big.graph, "scan")
    assert len(small.graph.node(s1).attrs["body"]) == len(big.graph.node(s2).attrs["body"])


def test_scan_runs_like_a_loop():
    m = load("""
model M() {
  input xs: f32[T, 2]
  total, partial = scan(fn(c, x) -> (c + x, c + x), xs, init = zeros([2]))
  output s = total
  output p = partial
}
""")
    xs = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = m.run({"xs": xs})
    np.testing.assert_allclose(out["s"], xs.sum(0))
    np.testing.assert_allclose(out["p"], np.cumsum(xs, 0))


def test_noise_in_a_scan_body_is_drawn_outside_the_loop():
    m = load("""
model M() {
  input xs: f32[T, 3]
  _, ys = scan(fn(c, x) -> (c, x + normal([3])), xs, init = 0.0)
  output y = ys
}
""")
    g = m.graph
    (noise,) = g.noises
    assert g.type(noise).shape == ("T", 3)     # one slice per step, fed to the loop
    (s,) = ops(g, "scan")
    assert not ops(g.node(s).attrs["body"], "noise")


# ---- every spec in the zoo elaborates in both modes ---------------------------------------------------

@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).resolve()
                                        .parent.parent.joinpath("specs").glob("*.dl")),
                         ids=lambda p: p.stem)
def test_zoo_elaborates(path):
    prog = load_program(path)
    for name in prog.models:
        for training in (False, True):
            try:
                g = elaborate(prog, name, training=training)
            except DslError as e:                 # a sub-model needing hyperparameters
                assert e.span is not None
                continue
            assert g.outputs


# ---- the language reference's examples -----------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def _doc_examples():
    blocks = re.findall(r"^```dl\n(.*?)^```", DOC.read_text(), re.M | re.S)
    return blocks


def test_the_reference_has_examples():
    assert len(_doc_examples()) >= 15


@pytest.mark.parametrize("i", range(len(_doc_examples())))
def test_language_reference_example(i):
    """Every ```dl block of docs/language.md parses, every model in it elaborates in both
    modes, and every train block validates against its model."""
    from compiler.training.spec import _model_name, parse_train
    text = _doc_examples()[i]
    prog = load_program(text=text)
    for name in prog.models:
        for training in (False, True):
            g = elaborate(prog, name, training=training)
            assert g.outputs
    for t in prog.trains:
        m = api.Model(prog, _model_name(t.model))
        cfg = parse_train(m, t)
        assert cfg.groups


def _documented(name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", DOC.read_text()) is not None


def test_every_builtin_and_initializer_is_documented():
    from compiler.elaborate.builtins import BUILTINS, INIT_SCOPE
    missing = [n for n in list(BUILTINS) + list(INIT_SCOPE) if not _documented(n)]
    assert missing == []


def test_the_standard_library_is_documented():
    std = Path(__file__).resolve().parent.parent / "specs" / "std"
    names = [n for f in std.glob("*.dl")
             for n in re.findall(r"^(?:layer|fn) (\w+)", f.read_text(), re.M)]
    assert names and [n for n in names if not _documented(n)] == []


def test_train_options_optimizers_and_schedules_are_documented():
    from compiler.training.optim import OPTIMIZERS
    from compiler.training.schedules import SCHEDULES
    from compiler.training.spec import PLAYER_OPTIONS, TOP_OPTIONS
    from compiler.training.datasets import DATASETS
    names = list(OPTIMIZERS) + list(SCHEDULES) + list(TOP_OPTIONS) + list(PLAYER_OPTIONS) + \
        list(DATASETS)
    assert [n for n in names if not _documented(n)] == []
