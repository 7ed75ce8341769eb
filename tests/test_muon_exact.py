"""Muon with the notes' exact direction ``U V^T`` (3.4), `muon(exact = true)`.

The exact orthogonalisation is checked against numpy's SVD, Newton–Schulz against it
(how closely the quintic iteration approximates ``U V^T``), and a Muon step against
``torch.optim.Muon`` where the installed torch has it.
"""
from __future__ import annotations

import numpy as np
import pytest

from backends import numpy as npb
from compiler.core.ir import Graph
from compiler.training.optim import make_optimizer, newton_schulz5, orthogonalize_exact

from tests.test_optim import _grads, iterate

torch = pytest.importorskip("torch")

SHAPES = [(8, 4), (3, 6), (5, 5)]


def _orth(shape, fn, G):
    g = Graph("orth")
    x = g.add("input", (), {"name": "x", "dtype": "f32", "shape": shape})
    return npb.lower(g, {"y": fn(g, x)}, dtype="f64")({"x": G})["y"]


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_is_uvt(shape):
    G = np.random.default_rng(0).normal(size=shape)
    y = _orth(shape, orthogonalize_exact, G)
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    # float64 SVD of a well-conditioned Gaussian matrix: round-off only
    np.testing.assert_allclose(y, U @ Vt, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(y, compute_uv=False), 1.0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_approximates_uvt(shape):
    G = np.random.default_rng(1).normal(size=shape)
    exact = _orth(shape, orthogonalize_exact, G)
    ns = _orth(shape, newton_schulz5, G)
    # Five quintic steps leave the singular values in about [0.7, 1.2] (not 1): the
    # same singular vectors, so the relative Frobenius error is at most ~0.3 and the
    # directions agree closely (cosine > 0.95).
    rel = np.linalg.norm(ns - exact) / np.linalg.norm(exact)
    cos = np.sum(ns * exact) / (np.linalg.norm(ns) * np.linalg.norm(exact))
    assert rel < 0.3, rel
    assert cos > 0.95, cos
    # and it is not exact: the option changes the result
    assert rel > 1e-3, rel


@pytest.mark.parametrize("shape,nesterov", [((8, 4), True), ((3, 6), False), ((4,), True)])
def test_exact_muon_trajectory(shape, nesterov):
    n, mu, lr = 20, 0.95, 0.02
    grads = _grads(shape, n)
    p0 = np.random.default_rng(4).normal(size=shape)
    opt = make_optimizer("muon", {"lr": lr, "nesterov": nesterov, "exact": True})
    ours = iterate(opt, shape, grads, [lr] * n, p0)
    p, b, ref = p0, np.zeros(shape), []
    for gr in grads:
        b = mu * b + gr
        u = gr + mu * b if nesterov else b
        if len(shape) == 2:
            U, _, Vt = np.linalg.svd(u, full_matrices=False)
            u = U @ Vt * max(1, shape[0] / shape[1]) ** 0.5
        p = p - lr * u
        ref.append(p)
    np.testing.assert_allclose(ours, np.array(ref), rtol=1e-10, atol=1e-10)


def test_exact_option_is_validated():
    with pytest.raises(ValueError, match="exact"):
        make_optimizer("muon", {"exact": 2.5})


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no torch.optim.Muon")
@pytest.mark.parametrize("shape", [(8, 4), (3, 6)])
def test_against_torch_muon(shape):
    """torch's Muon runs Newton–Schulz in bfloat16 and keeps an EMA momentum buffer (a
    (1-mu) multiple of ours, which orthogonalisation does not see). Its step should match
    our Newton–Schulz Muon to bfloat16 accuracy, and our exact Muon to the NS gap."""
    n, lr = 5, 0.02
    grads = _grads(shape, n)
    p0 = np.random.default_rng(4).normal(size=shape)
    w = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    topt = torch.optim.Muon([w], lr=lr, weight_decay=0.0, momentum=0.95, nesterov=True)
    theirs = []
    for gr in grads:
        w.grad = torch.tensor(gr, dtype=torch.float32)
        topt.step()
        theirs.append(w.detach().numpy().astype(np.float64).copy())
    theirs = np.array(theirs)
    ns = iterate(make_optimizer("muon", {"lr": lr}), shape, grads, [lr] * n, p0)
    ex = iterate(make_optimizer("muon", {"lr": lr, "exact": True}), shape, grads, [lr] * n, p0)
    dt, dns, dex = theirs - p0, ns - p0, ex - p0
    scale = np.linalg.norm(dt[-1])
    # bfloat16 has an 8-bit mantissa: ~1% per step on the update
    assert np.linalg.norm(dns[-1] - dt[-1]) / scale < 0.03
    # the exact direction differs from NS by the singular-value spread, < 0.3
    assert np.linalg.norm(dex[-1] - dt[-1]) / scale < 0.3
