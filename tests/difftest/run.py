"""The differential tester: every backend, f32 and f64, against an independent torch
evaluation (autograd, first and second order) and finite differences.

    python -m tests.difftest.run                 # the CI sample (seeds 0..199)
    python -m tests.difftest.run --many 5000     # thousands
    python -m tests.difftest.run --seed 123      # one case, printed

Tolerances: f32 results against the float64 torch reference use NNSmith's
(rtol 1e-2, atol 1e-3); f64 results rtol 1e-6, atol 1e-8 (only rounding differs),
except ONNX f64 with a convolution, rtol 1e-5, atol 1e-6 (those nodes run in f32);
the f64 symbolic gradient against a central difference of the torch loss (h = 1e-6)
rtol 1e-4, atol 1e-6. A failing case is shrunk to its smallest failing subtree and
printed as a spec.
"""
from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch

from compiler import api
from tests.difftest.gen import B, Case, generate, subtrees

BACKENDS = ("numpy", "torch", "onnx")
DTYPES = ("f32", "f64")
TOL = {"f32": (1e-2, 1e-3), "f64": (1e-6, 1e-8)}
FD_TOL = (1e-4, 1e-6)
# onnxruntime has no float64 Conv/AveragePool kernels: in an f64 model dlc runs those
# nodes in float32 (backends/onnx/builder.py, ORT_F32_ONLY), so an f64 ONNX result of a
# spec with a convolution carries f32 rounding (eps 1.2e-7, times a few ops' growth).
ONNX_F64_WITH_F32_NODES = (1e-5, 1e-6)
PARAMS = {"W": (4, 4), "v": (4,), "u": (4,), "p11": (1, 1), "K": (1, 1, 2, 2), "mix.A": (4, 4)}


def _values(seed):
    rng = np.random.default_rng(seed + 10_000)
    x = rng.uniform(-1, 1, (B, 4))
    params = {k: rng.uniform(-0.8, 0.8, s) for k, s in PARAMS.items()}
    return x, params


def torch_reference(case: Case, x, params):
    env = {"x": torch.tensor(x, requires_grad=True)}
    env.update({k: torch.tensor(v, requires_grad=True) for k, v in params.items()})
    loss = case.torch_loss(env)
    grads = torch.autograd.grad(loss, [env[k] for k in PARAMS], allow_unused=True)
    return loss.item(), {k: (np.zeros(PARAMS[k]) if g is None else g.detach().numpy())
                         for k, g in zip(PARAMS, grads)}


def finite_differences(case: Case, x, params, names=tuple(PARAMS), h=1e-6):
    def f(p):
        env = {"x": torch.tensor(x, requires_grad=True)}
        env.update({k: torch.tensor(v) for k, v in p.items()})
        return case.torch_loss(env).item()
    out = {}
    for k in names:
        g = np.zeros(PARAMS[k])
        for i in np.ndindex(*PARAMS[k]):
            hi = {n: v.copy() for n, v in params.items()}
            lo = {n: v.copy() for n, v in params.items()}
            hi[k][i] += h
            lo[k][i] -= h
            g[i] = (f(hi) - f(lo)) / (2 * h)
        out[k] = g
    return out


def _close(got, want, rtol, atol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol + rtol * np.abs(want)))


def check(case: Case, backends=BACKENDS, dtypes=DTYPES, fd=True) -> list[str]:
    """Every mismatch of `case`, as lines (empty when it passes)."""
    x, params = _values(case.seed)
    try:
        ref_loss, ref_grads = torch_reference(case, x, params)
    except Exception as e:  # the generator's own fault, not dlc's
        return [f"torch reference failed: {e}"]
    if not np.isfinite(ref_loss) or not all(np.isfinite(g).all() for g in ref_grads.values()):
        return []  # overflowed in float64: nothing to compare
    try:
        m = api.load(text=case.text)
    except Exception as e:
        return [f"dlc rejected a valid spec: {str(e).splitlines()[0]}"]
    # `mix.A` exists only when the spec calls the sub-layer
    names = [k for k in PARAMS if k in m.params]
    feeds = {k: params[k] for k in names}
    bad = []
    f64_numpy = None
    for be in backends:
        for dt in dtypes:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = m.gradients("L", {"x": x}, feeds, backend=be, dtype=dt)
            except Exception as e:
                bad.append(f"{be}/{dt}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            rtol, atol = TOL[dt]
            if be == "onnx" and dt == "f64" and "conv2d(" in case.text:
                rtol, atol = ONNX_F64_WITH_F32_NODES
            if not _close(got["L"], ref_loss, rtol, atol):
                bad.append(f"{be}/{dt}: loss {float(got['L']):.8g} vs torch {ref_loss:.8g}")
            for k in names:
                if not _close(got[k], ref_grads[k], rtol, atol):
                    err = np.max(np.abs(np.asarray(got[k], np.float64) - ref_grads[k]))
                    bad.append(f"{be}/{dt}: d L/d {k} differs from torch autograd (max abs err {err:.3g})")
            if be == "numpy" and dt == "f64":
                f64_numpy = got
    if fd and f64_numpy is not None and "stop_gradient" not in case.text:
        num = finite_differences(case, x, params, names)
        for k in names:
            if not _close(f64_numpy[k], num[k], *FD_TOL):
                err = np.max(np.abs(f64_numpy[k] - num[k]))
                bad.append(f"numpy/f64: d L/d {k} differs from finite differences (max abs err {err:.3g})")
    return bad


def shrink(case: Case, **kw) -> tuple[Case, list[str]]:
    """The smallest subtree of `case` (as a root) that still fails."""
    best, why = case, check(case, **kw)
    improved = True
    while improved:
        improved = False
        for sub in subtrees(best.root):
            cand = Case(best.seed, sub, best.loss_kind, best.static)
            got = check(cand, **kw)
            if got and not got[0].startswith("torch reference"):
                best, why, improved = cand, got, True
                break
    return best, why


def run(seeds, *, fd_every=4, out=sys.stdout, **kw) -> list[tuple[Case, list[str]]]:
    failures = []
    for s in seeds:
        case = generate(s)
        why = check(case, fd=(s % fd_every == 0), **kw)
        if why:
            small, small_why = shrink(case, fd=(s % fd_every == 0), **kw)
            failures.append((small, small_why))
            print(f"seed {s}: FAIL\n{small.text}" + "".join(f"  {w}\n" for w in small_why), file=out)
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.difftest.run")
    p.add_argument("--many", type=int, default=None, help="run this many seeds")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="one case, printed with its result")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.seed is not None:
        case = generate(a.seed)
        print(case.text)
        why = check(case)
        print("\n".join(why) or "ok")
        return 1 if why else 0
    n = a.many or 200
    fails = run(range(a.start, a.start + n))
    print(f"{n} specs, {len(fails)} failing")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
