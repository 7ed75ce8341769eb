"""CTC (notes 9.3.1): std `ctc_loss` / `ctc_nll` / `ctc_greedy` (specs/std/ctc.dl) and the
spec specs/ctc.dl, against torch.nn.functional.ctc_loss and a plain-Python best-path
decoder.

Losses and gradients are compared in float64 with respect to the *logits* z, with
log_probs = log_softmax(z) on both sides: torch's CTC backward returns a gradient for
log_probs that is only correct after a log_softmax (it folds the softmax Jacobian in),
so dL/dz is the quantity both must agree on.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from dsl.errors import DslError

torch = pytest.importorskip("torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"
# float64 on both sides; the forward recursions differ only in summation order over
# <= 20 steps, so agreement is at rounding level (measured ~1e-15).
TOL = 1e-10

PROBE = """
model Probe(zi = false, blank = 0, reduction = "mean") {
  input z: f32[B, T, C]
  input labels: i64[B, S]
  input il: i64[B]
  input ll: i64[B]
  lp = log_softmax(z)
  output nll = ctc_nll(lp, labels, il, ll, blank = blank, zero_infinity = zi)
  loss L = ctc_loss(lp, labels, il, ll, blank = blank, zero_infinity = zi, reduction = reduction)
}
"""


def _batch(blank=0, C=6, T=12, S=4, seed=0):
    """Variable input and label lengths (padded), a repeated label (needs a blank between
    its copies), an empty label, and one infeasible sample (3 labels in 2 frames)."""
    rng = np.random.default_rng(seed)
    symbols = [k for k in range(C) if k != blank]
    B = 6
    labels = rng.choice(symbols, (B, S))
    labels[0, 1] = labels[0, 0]                       # repeated label "a a"
    labels[1, :] = labels[1, 0]                       # "a a a a": needs >= 7 frames
    il = np.array([T, 9, T - 3, 5, 2, T])
    ll = np.array([4, 4, 2, 0, 3, 1])                # sample 4: 3 labels in 2 frames
    z = rng.standard_normal((B, T, C)) * 2.0
    return {"z": z, "labels": labels, "il": il, "ll": ll}


def _torch(f, blank=0, zero_infinity=False, reduction="mean"):
    z = torch.tensor(f["z"], requires_grad=True)
    lp = torch.log_softmax(z, -1).transpose(0, 1)     # torch wants [T, B, C]
    loss = torch.nn.functional.ctc_loss(
        lp, torch.tensor(f["labels"]), torch.tensor(f["il"]), torch.tensor(f["ll"]),
        blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    return loss, z


@pytest.mark.parametrize("blank", [0, 5])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ctc_loss_and_gradient_match_torch_zero_infinity(blank, reduction):
    m = api.load(text=PROBE, hparams={"zi": True, "blank": blank, "reduction": reduction})
    f = _batch(blank=blank)
    g = m.gradients("L", f, {}, wrt=["z"], dtype="f64")
    loss, z = _torch(f, blank=blank, zero_infinity=True, reduction=reduction)
    loss.backward()
    assert abs(float(g["L"]) - loss.item()) < TOL
    assert np.max(np.abs(g["z"] - z.grad.numpy())) < TOL
    # the infeasible sample contributes neither loss nor gradient
    assert np.all(g["z"][4] == 0.0)
    # per-sample values, feasible ones, vs torch's reduction="none"
    out = m.run(f, {}, dtype="f64")
    ref, _ = _torch(f, blank=blank, zero_infinity=True, reduction="none")
    np.testing.assert_allclose(out["nll"], ref.detach().numpy(), rtol=0, atol=TOL)
    assert out["nll"][4] == 0.0 and out["nll"][3] > 0   # empty label: all-blank path


def test_infeasible_sample_is_inf_without_zero_infinity():
    m = api.load(text=PROBE, hparams={"reduction": "sum"})
    f = _batch()
    out = m.run(f, {}, dtype="f64")
    ref, _ = _torch(f, reduction="none")
    ref = ref.detach().numpy()
    assert np.isinf(ref[4]) and np.isinf(out["nll"][4])
    np.testing.assert_allclose(out["nll"][:4], ref[:4], rtol=0, atol=TOL)
    # and the gradient of the feasible samples stays finite and equal to torch's
    keep = {k: v[[0, 1, 2, 3, 5]] for k, v in f.items()}
    g = m.gradients("L", keep, {}, wrt=["z"], dtype="f64")
    loss, z = _torch(keep, reduction="sum")
    loss.backward()
    assert np.all(np.isfinite(g["z"]))
    assert np.max(np.abs(g["z"] - z.grad.numpy())) < TOL


def test_ctc_loss_torch_and_onnx_backends_agree_f32():
    """The scan and masks lower to torch and ONNX too (float32: 1e-4 relative covers
    logsumexp rounding over 12 steps)."""
    m = api.load(text=PROBE, hparams={"zi": True})
    f = _batch()
    ref = m.run(f, {}, dtype="f64")["nll"]
    for backend in ("torch", "onnx"):
        out = m.run(f, {}, backend=backend)["nll"]
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def _best_path(lp, length, blank=0):
    path = np.argmax(lp[:length], axis=-1)
    return [int(k) for k, _ in itertools.groupby(path) if k != blank]


def test_greedy_decoding_matches_python_collapse():
    m = api.load(text="""
model Greedy() {
  input z: f32[B, T, 5]
  input il: i64[B]
  input labels: i64[B, S]
  input ll: i64[B]
  path, keep = ctc_greedy(log_softmax(z), il)
  output path
  output keep
  output correct = ctc_greedy_correct(log_softmax(z), il, labels, ll)
}""")
    rng = np.random.default_rng(3)
    B, T = 40, 10
    # low-entropy logits make repeats and blanks frequent
    z = 3.0 * rng.standard_normal((B, T, 5))
    il = rng.integers(1, T + 1, B)
    decoded = [_best_path(z[b], il[b]) for b in range(B)]
    # labels: the decoding itself for half the rows, a corrupted copy for the others
    S = T
    labels = np.zeros((B, S), np.int64)
    ll = np.zeros(B, np.int64)
    truth = []
    for b, d in enumerate(decoded):
        lab = list(d)
        if b % 2 and lab:
            lab[rng.integers(len(lab))] = (lab[0] % 4) + 1 if len(set(lab)) == 1 else lab[0]
        if b % 4 == 3:
            lab = lab + [1]                               # one label too many
        labels[b, :len(lab)] = lab
        ll[b] = len(lab)
        truth.append(lab == d)
    out = m.run({"z": z, "il": il, "labels": labels, "ll": ll}, dtype="f64")
    for b in range(B):
        assert [int(k) for k in out["path"][b][out["keep"][b]]] == decoded[b]
    assert list(out["correct"]) == truth
    assert 0 < sum(truth) < B                            # both outcomes are exercised


def test_bad_reduction_is_a_located_error():
    with pytest.raises(DslError) as e:
        api.load(text=PROBE, hparams={"reduction": "avg"})
    text = str(e.value)
    assert "reduction must be" in text and "ctc.dl" in text


def test_spec_loss_is_torch_ctc_on_its_own_outputs():
    """specs/ctc.dl on a batch of its data set: its loss is torch's CTCLoss of its own
    log-probabilities, and every sample of the data set has an alignment."""
    from compiler.training.datasets import load as load_dataset
    m = api.load(SPECS / "ctc.dl")
    ds = load_dataset("ctc_frames", n=64)
    f = {k: ds.fields[k] for k in ("x", "labels", "x_len", "y_len")}
    params = {k: v.astype(np.float64) for k, v in m.init_params(0).items()}
    out = m.run(f, params, dtype="f64")
    lp = torch.tensor(out["log_probs"]).transpose(0, 1)
    args = (torch.tensor(f["labels"]), torch.tensor(f["x_len"]), torch.tensor(f["y_len"]))
    assert torch.isfinite(torch.nn.functional.ctc_loss(lp, *args, reduction="none")).all()
    ref = torch.nn.functional.ctc_loss(lp, *args, zero_infinity=True).item()
    assert abs(float(out["ctc"]) - ref) < TOL
    assert 0.0 <= float(out["seq_acc"]) <= 1.0


def test_gradcheck_is_meaningful_with_random_and_infeasible_labels():
    """Issue 15: finite differences on CTC with random labels used to give huge relative
    errors from unalignable samples (their loss sat at a huge finite value whose
    derivative was not zero). Now an infeasible sample contributes exactly 0 under
    zero_infinity, so finite differences and the symbolic gradient agree, on random
    labels (as the globbed gradcheck draws them) and on a batch with repeats, an empty
    label and an infeasible sample."""
    from compiler.commands.gradcheck import gradcheck
    m = api.load(text=PROBE, hparams={"zi": True})
    for feeds in (None, _batch()):
        checks = gradcheck(m, seed=0, max_entries=48, feeds=feeds)
        assert checks and all(c.ok for c in checks), [
            (c.tensor, c.max_abs, c.max_rel) for c in checks if not c.ok]
        assert max(c.max_abs for c in checks) < 1e-6
    # the random draw really holds infeasible samples (inputs shorter than labels):
    # +inf without zero_infinity, exactly 0 with it
    from compiler.commands.gradcheck import sample_inputs
    f = sample_inputs(m.graph, np.random.default_rng(0))
    raw = api.load(text=PROBE).run(f, {}, dtype="f64")["nll"]
    zeroed = m.run(f, {}, dtype="f64")["nll"]
    assert np.isinf(raw).any() and np.all(zeroed[np.isinf(raw)] == 0.0)
