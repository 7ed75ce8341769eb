"""Backend agreement beyond `dlc equiv`, for every example spec (globbed from specs/):

* the exported ONNX models (inference, and the train step) pass
  ``onnx.checker.check_model(full_check=True)``, and onnxruntime agrees with onnx's
  pure-Python ``ReferenceEvaluator`` on them;
* the PyTorch backend's symbolic gradients (the lowered gradient graph) agree with
  ``torch.autograd`` through the lowered forward graph, both on the torch backend.

Agreement uses `compiler.equiv`'s criterion: its float32 tolerances, widened only where
a tensor is not determined in float32 (the float64 reference moves under rounding-size
input changes, or the NumPy float32 backend is as far from it), and skipped where it
is not determined at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler import api
from compiler.commands import equiv
from compiler.commands.equiv import phases as equiv_phases
from compiler.core import noise as noise_mod
from compiler.transform.passes import optimize

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.dl"))
IDS = [p.stem for p in SPECS]
DIM = 4
F32 = equiv.Backend("onnx", "f32")
REF = equiv.Backend("numpy", "f64")
F32N = equiv.Backend("numpy", "f32")


def _assert_close(name, got, want, cond=None, phase="forward"):
    """ORT (`got`) vs the ONNX reference evaluator (`want`), with `compiler.equiv`'s
    tolerances and conditioning: `cond` = (numpy-f64 value, its value on feeds perturbed
    by one float32 rounding, the numpy-f32 value) widens the tolerance where the tensor
    is not determined in float32 (and skips it where it is not determined at all)."""
    atol, rtol = equiv.TOLERANCES["f32"][phase]
    scale = 1.0
    if cond is not None:
        base, moved, f32 = cond
        s = equiv.compare_arrays(moved, base, atol, rtol)[2]     # sensitivity
        q = equiv.compare_arrays(f32, base, atol, rtol)[2]       # float32 spread
        if equiv.FACTOR * max(s, q) > equiv.MAX_SCALE:
            return  # ill-conditioned in float32: not comparable
        scale = max(1.0, equiv.FACTOR * max(s, q))
    mx, mr, ratio, ok, idx = equiv.compare_arrays(got, want, atol * scale, rtol * scale)
    assert ok, f"{name}: max abs {mx:.3g}, max rel {mr:.3g} at {idx} (x{scale:.3g} tolerance)"


def _conditioning(prog64, prog32, feeds):
    """numpy-f64 on the feeds and on perturbed feeds, and numpy-f32, per result."""
    base = equiv.run_on(REF, prog64, feeds)
    moved = equiv.run_on(REF, prog64, equiv.perturb(feeds, equiv.ROUNDING["f32"], 0))
    f32 = equiv.run_on(F32N, prog32, feeds)
    return {k: (base[k], moved[k], f32[k]) for k in base}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_onnx_inference_model_checks_and_matches_reference_evaluator(spec, tmp_path):
    import backends.onnx as bo
    m = api.load(str(spec))
    params = equiv.perturbed_params(m, 0)
    model = m.export_onnx(tmp_path / "model.onnx", params, with_losses=True)  # every result
    onnx.checker.check_model(onnx.load(str(tmp_path / "model.onnx")), full_check=True)
    data = equiv_phases._sample_data(m, 0, DIM)
    feeds = {**data, **m.noise(data, 0)}
    got = bo.Program(model)(feeds)
    want = bo.reference(model, feeds)
    assert set(got) == set(want) == set(m.graph.outputs)
    phase = equiv.Phase("forward", m.graph, dict(m.graph.outputs))
    cond = _conditioning(phase.program(REF), phase.program(F32N), {**params, **feeds})
    for k in want:
        _assert_close(k, got[k], want[k], cond[k])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_onnx_train_step_model_checks_and_matches_reference_evaluator(spec, tmp_path):
    import backends.onnx as bo
    m = api.load(str(spec))
    model = m.export_onnx(tmp_path / "step.onnx", train_step=True)
    onnx.checker.check_model(onnx.load(str(tmp_path / "step.onnx")), full_check=True)
    setup = equiv_phases._train_setup(m, 0, DIM, 1)
    _, _, phase = setup.groups[0]
    batch = setup.batches[0]
    feeds = {**setup.start, **batch, **noise_mod.draw(phase.graph, batch, 0, 0),
             "step": np.asarray(0, np.float32)}
    got = bo.Program(model)(feeds)
    want = bo.reference(model, feeds)
    assert set(got) == set(want)
    assert any(k.startswith("new:") for k in got)
    cond = _conditioning(phase.program(REF), phase.program(F32N), feeds)
    for k in want:
        _assert_close(k, got[k], want[k], cond.get(k), phase="train")


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_torch_backend_gradients_match_torch_autograd(spec):
    torch = pytest.importorskip("torch")
    from backends import torch as tb
    m = api.load(str(spec))
    if not m.losses:
        pytest.skip(f"{m.name} declares no loss")
    params = equiv.perturbed_params(m, 0)
    data = equiv_phases._sample_data(m, 0, DIM)
    feeds = {**params, **data, **m.noise(data, 0)}
    for loss in m.losses:
        # dlc's symbolic gradients, lowered to torch (float64)
        g, res = m.gradient_results(loss)
        og, ores = optimize(g, res)
        sym = equiv.run_on(equiv.Backend("torch", "f64"), tb.lower(og, ores, dtype="f64"), feeds)
        # torch autograd through the lowered forward graph
        fg, fres = optimize(m.graph, {loss: m.graph.outputs[loss]})
        module = tb.lower(fg, fres, dtype="f64")
        held = dict(module.named_parameters())
        module.load_numpy({k: v for k, v in params.items() if k in held}, strict=False)
        out = module({k: v for k, v in feeds.items() if k not in held})
        out[loss].backward()
        assert float(out[loss].detach()) == pytest.approx(float(sym[loss]), rel=1e-12, abs=1e-12)
        for p in m.params:
            auto = held[p].grad if p in held and held[p].grad is not None else None
            auto = np.zeros(np.shape(sym["grad:" + p])) if auto is None else auto.numpy()
            mx, mr, ratio, ok, idx = equiv.compare_arrays(auto, sym["grad:" + p], 1e-10, 1e-8)
            assert ok, f"d{loss}/d{p}: autograd vs symbolic max abs {mx:.3g} at {idx}"
