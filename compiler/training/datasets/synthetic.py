"""Seeded generators of 2-D point clouds and regression data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.training.datasets.dataset import Dataset
from compiler.training.datasets.registry import DATASETS, _float, _int, _register

# --------------------------------------------------------------------------- generators


def _finish(rng: np.random.Generator, name: str, fields: dict[str, np.ndarray], classes: int | None, shuffle: bool = True, **meta: Any) -> Dataset:
    n = next(iter(fields.values())).shape[0]
    perm = rng.permutation(n) if shuffle else np.arange(n)
    out = {}
    for k, v in fields.items():
        v = v[perm]
        out[k] = v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
    return Dataset(out, description=DATASETS[name].description, classes=classes, meta=meta)


def _counts(n: int, k: int) -> np.ndarray:
    """Split n into k near-equal counts."""
    return np.array([n // k + (1 if i < n % k else 0) for i in range(k)])


_N = "number of samples"


@_register(
    "moons",
    "two interleaving half circles, 2 classes",
    {"x": "[n,2] float32", "y": "[n] int64 in {0,1}"},
    {"n": _int(500, _N, min=2), "noise": _float(0.1, "std of Gaussian noise added to the points", min=0)},
    "generator",
)
def _moons(seed: int, *, n: int, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    a_out = rng.uniform(0, np.pi, n_out)
    a_in = rng.uniform(0, np.pi, n_in)
    x = np.concatenate(
        [np.stack([np.cos(a_out), np.sin(a_out)], 1), np.stack([1 - np.cos(a_in), 0.5 - np.sin(a_in)], 1)]
    )
    x += noise * rng.standard_normal(x.shape)
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    return _finish(rng, "moons", {"x": x, "y": y}, 2)


@_register(
    "circles",
    "a small circle inside a large one, 2 classes",
    {"x": "[n,2] float32", "y": "[n] int64 (0 outer, 1 inner)"},
    {
        "n": _int(500, _N, min=2),
        "noise": _float(0.05, "std of Gaussian noise added to the points", min=0),
        "factor": _float(0.5, "inner radius relative to the outer radius 1", min=0, max=1),
    },
    "generator",
)
def _circles(seed: int, *, n: int, noise: float, factor: float) -> Dataset:
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    ang = rng.uniform(0, 2 * np.pi, n)
    r = np.concatenate([np.ones(n_out), np.full(n_in, factor)])
    x = np.stack([r * np.cos(ang), r * np.sin(ang)], 1) + noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    return _finish(rng, "circles", {"x": x, "y": y}, 2)


@_register(
    "spirals",
    "k interleaved spiral arms (default 2), one class per arm",
    {"x": "[n,2] float32 (radius <= 1 + noise)", "y": "[n] int64 arm index"},
    {
        "n": _int(600, _N, min=1),
        "arms": _int(2, "number of spiral arms (= classes)", min=1, max=64),
        "turns": _float(1.5, "number of turns of each arm", min=0),
        "noise": _float(0.02, "std of Gaussian noise added to the points", min=0),
    },
    "generator",
)
def _spirals(seed: int, *, n: int, arms: int, turns: float, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(arms), _counts(n, arms))
    t = rng.uniform(0.0, 1.0, n)
    theta = 2 * np.pi * turns * t + 2 * np.pi * y / arms
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], 1) + noise * rng.standard_normal((n, 2))
    return _finish(rng, "spirals", {"x": x, "y": y}, arms)


@_register(
    "gaussians",
    "mixture of Gaussians on a ring (WGAN-GP '8 Gaussians')",
    {"x": "[n,2] float32", "y": "[n] int64 component index"},
    {
        "n": _int(1000, _N, min=1),
        "n_components": _int(8, "number of mixture components (= classes)", min=1),
        "radius": _float(2.0, "radius of the circle carrying the centres", min=0),
        "std": _float(0.02, "standard deviation of each component", min=0),
    },
    "generator",
)
def _gaussians(seed: int, *, n: int, n_components: int, radius: float, std: float) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_components
    ang = 2 * np.pi * np.arange(n_components) / n_components
    centers = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    x = centers[y] + std * rng.standard_normal((n, 2))
    return _finish(rng, "gaussians", {"x": x, "y": y}, n_components, centers=centers)


@_register(
    "swiss_roll",
    "2-D swiss roll (the (x, z) plane of the 3-D roll), for diffusion models",
    {"x": "[n,2] float32 (roughly in [-1.5,1.5] at the default scale)", "t": "[n] float32 in [0,1], position along the roll"},
    {
        "n": _int(1000, _N, min=1),
        "scale": _float(0.1, "multiplier applied to the roll (u cos u, u sin u)", min=0),
        "noise": _float(0.05, "std of Gaussian noise, in final (scaled) units", min=0),
    },
    "generator",
)
def _swiss_roll(seed: int, *, n: int, scale: float, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, n)
    u = 1.5 * np.pi * (1 + 2 * t)
    x = scale * np.stack([u * np.cos(u), u * np.sin(u)], 1) + noise * rng.standard_normal((n, 2))
    return _finish(rng, "swiss_roll", {"x": x, "t": t}, None, shuffle=False)


@_register(
    "blobs",
    "two linearly separable classes with a guaranteed margin, labels -1/+1 (perceptron)",
    {"x": "[n,dim] float32", "y": "[n] int64 in {-1,+1}"},
    {
        "n": _int(200, _N, min=1),
        "dim": _int(2, "number of features", min=1),
        "margin": _float(0.5, "minimum distance of every point to the separating hyperplane", min=0),
        "spread": _float(1.0, "scale of the scatter around and beyond the margin", min=0),
    },
    "generator",
)
def _blobs(seed: int, *, n: int, dim: int, margin: float, spread: float) -> Dataset:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    y = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int64)
    z = spread * rng.standard_normal((n, dim))
    z -= np.outer(z @ w, w)  # component orthogonal to w
    # distance beyond the margin; a tiny pad keeps the margin after rounding to float32
    d = margin + spread * np.abs(rng.standard_normal(n)) + 1e-5 * (1.0 + margin)
    x = z + (y * d)[:, None] * w
    ds = _finish(rng, "blobs", {"x": x, "y": y}, 2)
    x32 = ds.fields["x"].astype(np.float64)
    actual = float(np.min(ds.fields["y"] * (x32 @ w))) if n else float(margin)
    radius = float(np.max(np.linalg.norm(x32, axis=1))) if n else 0.0
    ds.meta.update(
        w=w,
        margin=actual,
        requested_margin=margin,
        radius=radius,
        mistake_bound=(radius / actual) ** 2 if actual > 0 else math.inf,
        labels=(-1, 1),
    )
    return ds


@_register(
    "linreg",
    "noisy linear regression y = x.w + b + noise (least squares recovers w, b)",
    {"x": "[n,features] float32 ~ N(0,1)", "y": "[n] float32"},
    {
        "n": _int(500, _N, min=1),
        "features": _int(4, "number of input features", min=1),
        "noise": _float(0.1, "std of Gaussian noise added to y", min=0),
    },
    "generator",
)
def _linreg(seed: int, *, n: int, features: int, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.0, features)
    b = float(rng.normal(0.0, 1.0))
    x = rng.normal(0.0, 1.0, (n, features)).astype(np.float32)
    y = x.astype(np.float64) @ w + b + noise * rng.normal(0.0, 1.0, n)
    return Dataset({"x": x, "y": y.astype(np.float32)}, description=DATASETS["linreg"].description,
                   classes=None, meta={"w": w, "b": b})


@_register(
    "patterns",
    "random +-1 patterns (memories for Hopfield networks)",
    {"x": "[n,dim] float32 of -1/+1"},
    {
        "n": _int(10, "number of patterns", min=1),
        "dim": _int(100, "number of units per pattern", min=1),
        "p": _float(0.5, "probability of +1 per unit", min=0, max=1),
    },
    "generator",
)
def _patterns(seed: int, *, n: int, dim: int, p: float) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.where(rng.uniform(size=(n, dim)) < p, 1.0, -1.0)
    return Dataset({"x": x.astype(np.float32)}, description=DATASETS["patterns"].description, classes=None)

