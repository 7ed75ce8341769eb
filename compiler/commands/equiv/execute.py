"""Running a graph on one backend, and perturbing its inputs (for sensitivity)."""
from __future__ import annotations

import contextlib

import numpy as np

from compiler.api import to_numpy
from compiler.commands.equiv.compare import Backend
from compiler.core import backend_registry
from compiler.core.ir import Graph

# ---- running a graph on a backend ----------------------------------------------------------

def lower_on(b: Backend, g: Graph, results: dict[str, int]):
    """Lower ``results`` of an (already optimised) graph on one backend."""
    mod = backend_registry.load(b.kind)
    if b.kind == "torch":
        return mod.lower(g, results, dtype=b.dtype, device=b.device)
    if b.kind == "onnx":
        return mod.lower_program(g, results, dtype=b.dtype)
    return mod.lower(g, results, dtype=b.dtype)


def run_on(b: Backend, prog, feeds: dict) -> dict[str, np.ndarray]:
    ctx = contextlib.nullcontext()
    if b.kind == "torch":
        import torch
        ctx = torch.no_grad()
    with ctx:
        return to_numpy(prog(feeds))


def perturb(feeds: dict, eps: float, seed: int) -> dict:
    """Every float feed (except the step counter) times ``1 + u*eps``, u ~ U[-1, 1]."""
    rng = np.random.default_rng([seed, 31337])
    out = {}
    for k in sorted(feeds):
        a = np.asarray(feeds[k])
        if a.dtype.kind == "f" and k != "step":
            a = a.astype(np.float64) * (1.0 + eps * rng.uniform(-1.0, 1.0, a.shape))
        out[k] = a
    return out


@contextlib.contextmanager
def _exact_cuda():
    """No TF32 while comparing: it is not float32 arithmetic."""
    import torch
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


