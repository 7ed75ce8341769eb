"""One host transfer per train step: the finite check and the logged scalars.

Checking each result with ``bool(isfinite(v).all())`` costs one device sync (and two
kernels) per tensor: 21 per MLP step. Here every float result's 2-norm goes through
one fused ``torch._foreach_norm`` (a NaN or inf entry makes its norm NaN or inf), and
the largest is stacked with the logged scalars into a single tensor read back once.
The 2-norm, not the max-abs (``ord=inf``): on the CPU torch's inf-norm takes its
slow path, 2.4 ms for the MLP's 21 tensors against 0.14 ms (it was 45% of a
`dlc train` round). A 2-norm can overflow for finite entries past ~1e19 (f32), so a
non-finite norm is confirmed entry by entry before it counts: exact either way, and
the slow path runs only when a run is diverging. NumPy/onnxruntime results are host
arrays already.
"""
from __future__ import annotations

import math

import numpy as np


def finite_and_scalars(out: dict, keys, full: bool = True) -> tuple[bool, list[float]]:
    """(every float result is finite, [float(out[k]) for k in keys]); with `full` off,
    only the scalars read are checked (the loss: the Trainer's every-step check)."""
    keys = list(keys)
    if not full:
        vals = [out[k] for k in keys]
        if len(vals) > 1 and any(getattr(v, "is_cuda", False) for v in vals):
            import torch  # one transfer, not a sync per scalar
            host = torch.stack([v.detach().reshape(()).to(torch.float64) for v in vals]).tolist()
        else:
            host = [float(v) for v in vals]
        return all(map(math.isfinite, host)), host
    vals = list(out.values())
    if vals and all(hasattr(v, "detach") for v in vals):
        return _torch(out, vals, keys)
    ok = all(np.asarray(v).dtype.kind != "f" or bool(np.isfinite(v).all()) for v in vals)
    return ok, [float(np.asarray(out[k])) for k in keys]


def _torch(out, vals, keys):
    import torch
    floats = [v for v in vals if v.is_floating_point() and v.numel()]
    parts = []
    if floats:
        norms = torch._foreach_norm(floats, ord=2)
        if len({n.dtype for n in norms}) > 1:
            norms = [n.to(torch.float64) for n in norms]
        parts.append(torch.stack(norms).amax().to(torch.float64).reshape(1))
    parts += [out[k].detach().reshape(1).to(torch.float64) for k in keys]
    if not parts:
        return True, []
    host = torch.cat(parts).tolist() if len(parts) > 1 else parts[0].tolist()
    if floats:
        # an overflowing norm of finite entries is not a divergence (see above)
        ok = math.isfinite(host[0]) or all(bool(torch.isfinite(v).all()) for v in floats)
        return ok, host[1:]
    return True, host
