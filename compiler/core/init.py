"""Parameter initialisation from a seed, identical for every backend.

Each parameter draws from its own generator, seeded by the run's seed and a
stable hash of the parameter's name, so adding a layer does not change the
initial values of the others. Fans follow the layouts of the standard library:
a rank-2 weight is [in, out]; a rank>2 weight is a PyTorch-layout kernel
[out, in/groups, *k] (fan_in = in*k, fan_out = out*k); a vector has fan = its size.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np


def fans(shape: tuple) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = int(np.prod(shape[2:]))
    return shape[1] * rf, shape[0] * rf


def rng_for(seed: int, name: str) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, h])


def initial_value(init: tuple, shape: tuple, seed: int, name: str, dtype=np.float32) -> np.ndarray:
    kind, args = init[0], init[1:]
    shape = tuple(int(d) for d in shape)
    rng = rng_for(seed, name)
    fan_in, fan_out = fans(shape)
    if kind == "zeros":
        v = np.zeros(shape)
    elif kind == "ones":
        v = np.ones(shape)
    elif kind == "const":
        v = np.full(shape, args[0])
    elif kind == "normal":
        v = rng.normal(args[0], args[1], shape)
    elif kind == "uniform":
        v = rng.uniform(args[0], args[1], shape)
    elif kind == "glorot":  # Glorot/Xavier uniform: U(-a, a), a = gain sqrt(6 / (fan_in + fan_out))
        a = args[0] * math.sqrt(6.0 / (fan_in + fan_out))
        v = rng.uniform(-a, a, shape)
    elif kind == "glorot_normal":
        v = rng.normal(0.0, args[0] * math.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif kind == "he":  # He/Kaiming normal for ReLU: N(0, 2 / fan_in)
        v = rng.normal(0.0, args[0] * math.sqrt(2.0 / fan_in), shape)
    elif kind == "he_uniform":
        a = args[0] * math.sqrt(6.0 / fan_in)
        v = rng.uniform(-a, a, shape)
    elif kind == "lecun":
        v = rng.normal(0.0, args[0] * math.sqrt(1.0 / fan_in), shape)
    elif kind == "orthogonal":
        v = args[0] * _orthogonal(rng, shape)
    else:
        raise ValueError(f"unknown initializer {kind!r}")
    return np.asarray(v, dtype=dtype)


def _orthogonal(rng, shape):
    if len(shape) < 2:
        return rng.normal(0.0, 1.0, shape)
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # make the decomposition unique (Haar-distributed)
    if rows < cols:
        q = q.T
    return q[:rows, :cols].reshape(shape)
