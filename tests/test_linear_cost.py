"""Regression guard: every compiler phase costs work linear in the graph.

Not timed. Work is counted two ways, both deterministic:

* `Graph.ancestors` (the one graph walk of topological order and reachability)
  counts the nodes it visits; asking for the order of a chain from *every* node as a
  root must visit each node once, and autodiff with one `wrt` per layer must too.
* Python function calls (cProfile's exact call count, not time) of the whole of
  `dlc check` and of the ONNX train-step export on a deep stack of n, 2n and 4n
  layers. A fixed cost (parsing, the std library) cancels in the differences;
  linear growth gives (f(4n) - f(2n)) / (f(2n) - f(n)) = 2, quadratic gives 4.
  Measured: exactly 2.0; the per-root `nx.ancestors` walk this replaced gave 2.66 at
  these small sizes (and tends to 4), so the bound is 2.3.
"""
from __future__ import annotations

import cProfile
import pstats

import pytest

from compiler import api
from compiler.core import ir
from compiler.transform.autodiff import grad
from compiler.core.ir import Graph
from compiler.commands.summary import summarize

DEEP = """
model Deep(n = 4) {
  input x: f32[B, 64]
  input y: i64[B]
  logits = x |> repeat(n, Dense(8, relu)) |> Dense(3)
  loss ce = cross_entropy(logits, y)
}

train Deep on digits {
  batch 8
  optimizer adam(lr = 1e-3)
}
"""


def _chain(n: int) -> tuple[Graph, list[int], list[int]]:
    """x -> tanh(x * w_i) n times: one param per layer, every node a root."""
    g = Graph("chain")
    h = g.add("input", (), {"name": "x", "dtype": "f32", "shape": (4,)})
    ws = []
    for i in range(n):
        w = g.add("param", (), {"name": f"w{i}", "dtype": "f32", "shape": (4,), "init": None})
        ws.append(w)
        h = g.op("tanh", g.op("mul", h, w))
    return g, list(g.topo_order()), ws


def _visits(fn) -> int:
    before = ir.WALKS["visits"]
    fn()
    return ir.WALKS["visits"] - before


@pytest.mark.parametrize("n", [50, 200])
def test_order_from_every_root_visits_each_node_once(n):
    g, nodes, _ = _chain(n)
    visits = _visits(lambda: g.topo_order(nodes))
    assert visits == len(g)  # one walk for all roots; per-root walks would be ~len(g)**2 / 2
    assert g.topo_order(nodes) == sorted(nodes)


def test_autodiff_with_a_wrt_per_layer_is_linear():
    def work(n):
        g, _, ws = _chain(n)
        loss = g.op("sum", g.topo_order()[-1], axis=None, keepdims=False)
        return _visits(lambda: grad(g, loss, ws)), len(g)
    (v1, n1), (v4, n4) = work(50), work(200)
    assert v1 <= 2 * n1 and v4 <= 2 * n4
    assert v4 / v1 < 4.5  # 4x the graph, ~4x the walk (n**2 would be 16x)


def _calls(fn) -> int:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    return pstats.Stats(pr).total_calls


def _growth(fn, n) -> float:
    f1, f2, f4 = (_calls(lambda k=k: fn(k)) for k in (n, 2 * n, 4 * n))
    assert f1 < f2 < f4
    return (f4 - f2) / (f2 - f1)


def test_check_is_linear_in_depth(tmp_path):
    spec = tmp_path / "deep.dl"
    spec.write_text(DEEP)
    summarize(api.load(spec, hparams={"n": 2}))  # warm caches (std library, primitives)
    growth = _growth(lambda k: summarize(api.load(spec, hparams={"n": k})), 8)
    assert growth < 2.3, growth


def test_onnx_train_step_export_is_linear_in_depth(tmp_path):
    spec = tmp_path / "deep.dl"
    spec.write_text(DEEP)

    def export(k):
        m = api.load(spec, hparams={"n": k})
        m.export_onnx(tmp_path / "step.onnx", m.init_params(0), train_step=True)
    export(2)
    growth = _growth(export, 8)
    assert growth < 2.3, growth


def test_onnx_train_step_export_elaborates_the_model_once(tmp_path, monkeypatch):
    """The eval graph, the train graph and the step's own graph come from one
    elaboration when the spec never reads `training` (each one is a whole pass over
    the spec: 0.6 s at 10k nodes); a spec that reads it gets a second one, for the
    other mode, and no more."""
    from compiler.elaborate import program
    counts = []
    real = program.elaborate

    def counting(*a, **kw):
        counts.append(kw.get("training"))
        return real(*a, **kw)

    for mod in ("compiler.api", "compiler.training.step", "compiler.training.spec"):
        monkeypatch.setattr(f"{mod}.elaborate", counting, raising=False)
    spec = tmp_path / "deep.dl"
    spec.write_text(DEEP)
    m = api.load(spec, hparams={"n": 3}, train_block=True)
    m.export_onnx(tmp_path / "step.onnx", train_step=True)
    assert len(counts) == 1, counts

    counts.clear()
    spec.write_text(DEEP.replace("|> Dense(3)", "|> Dropout(0.1) |> Dense(3)"))
    m = api.load(spec, hparams={"n": 3}, train_block=True)
    m.export_onnx(tmp_path / "step.onnx", train_step=True)
    assert counts == [False, True], counts  # eval mode, then training mode: dropout differs


def test_layer_table_is_linear_in_depth(tmp_path):
    """`dlc check` prints the per-layer table: one row per instance, each row's first
    parameter found in one pass (a scan of every parameter per row was quadratic)."""
    from compiler.commands.layers import layer_table
    spec = tmp_path / "deep.dl"
    spec.write_text(DEEP)
    models = {k: api.load(spec, hparams={"n": k}) for k in (50, 100, 200)}
    growth = _growth(lambda k: layer_table(models[k]), 50)
    assert growth < 2.3, growth  # measured 2.0 (at n = 16 the names' widths still add 2.4)
