"""Seeded generators of 2-D point clouds and regression data.

moons, circles, gaussians (make_blobs), swiss_roll and regression are scikit-learn's own
``make_*`` generators with ``random_state=seed``, so a seed gives the arrays users know
from scikit-learn; the rest (spirals, margin blobs, linreg, patterns) are ours."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.training.datasets.dataset import Dataset, DatasetError
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


def _sklearn(name: str, seed: int, **kwargs: Any):
    """Call ``sklearn.datasets.<name>(random_state=seed, **kwargs)``.

    Imported lazily: `dlc check`/`compile` never generate data and must not pay sklearn's
    import time.  sklearn's RandomState takes seeds below 2**32."""
    try:
        from sklearn import datasets as skd
    except ImportError as e:
        raise DatasetError(f"this dataset needs scikit-learn (pip install scikit-learn): {e}") from None
    if seed >= 2**32:
        raise DatasetError(f"seed must be < 2**32 for scikit-learn's generators, got {seed}")
    return getattr(skd, name)(random_state=seed, **kwargs)


def _cast(name: str, fields: dict[str, np.ndarray], classes: int | None, **meta: Any) -> Dataset:
    out = {k: v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32) for k, v in fields.items()}
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
    x, y = _sklearn("make_moons", seed, n_samples=n, noise=noise, shuffle=True)
    return _cast("moons", {"x": x, "y": y}, 2, source="sklearn.datasets.make_moons")


@_register(
    "circles",
    "a small circle inside a large one, 2 classes",
    {"x": "[n,2] float32", "y": "[n] int64 (0 outer, 1 inner)"},
    {
        "n": _int(500, _N, min=2),
        "noise": _float(0.05, "std of Gaussian noise added to the points", min=0),
        "factor": _float(0.5, "inner radius relative to the outer radius 1 (below 1)", min=0, max=0.999999),
    },
    "generator",
)
def _circles(seed: int, *, n: int, noise: float, factor: float) -> Dataset:
    x, y = _sklearn("make_circles", seed, n_samples=n, noise=noise, factor=factor, shuffle=True)
    return _cast("circles", {"x": x, "y": y}, 2, source="sklearn.datasets.make_circles")


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
    ang = 2 * np.pi * np.arange(n_components) / n_components
    centers = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    # make_blobs with explicit centres: n // k points each (the first n % k one more), shuffled
    x, y = _sklearn("make_blobs", seed, n_samples=n, centers=centers, cluster_std=std, shuffle=True)
    return _cast("gaussians", {"x": x, "y": y}, n_components, centers=centers, source="sklearn.datasets.make_blobs")


@_register(
    "swiss_roll",
    "2-D swiss roll (the (x, z) plane of the 3-D roll), for diffusion models",
    {"x": "[n,2] float32 (roughly in [-1.5,1.5] at the default scale)", "t": "[n] float32 in [0,1], position along the roll"},
    {
        "n": _int(1000, _N, min=1),
        "scale": _float(0.1, "multiplier applied to the roll (u cos u, u sin u)", min=1e-12),
        "noise": _float(0.05, "std of Gaussian noise, in final (scaled) units", min=0),
    },
    "generator",
)
def _swiss_roll(seed: int, *, n: int, scale: float, noise: float) -> Dataset:
    # sklearn's 3-D roll (u cos u, 21 v, u sin u) + noise, u = 1.5 pi (1 + 2t); its noise is in
    # unscaled units, so divide ours (final units) by the scale
    x3, u = _sklearn("make_swiss_roll", seed, n_samples=n, noise=noise / scale, hole=False)
    t = (u / (1.5 * np.pi) - 1.0) / 2.0
    return _cast("swiss_roll", {"x": scale * x3[:, [0, 2]], "t": t}, None, source="sklearn.datasets.make_swiss_roll")


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



@_register(
    "regression",
    "scikit-learn's make_regression: y = x.coef + bias + noise, coef ~ 100 U(0,1) on the informative features",
    {"x": "[n,features] float32 ~ N(0,1)", "y": "[n] float32"},
    {
        "n": _int(500, _N, min=1),
        "features": _int(4, "number of input features", min=1),
        "informative": _int(4, "number of features with a non-zero coefficient (at most features)", min=1),
        "noise": _float(0.1, "std of Gaussian noise added to y", min=0),
        "bias": _float(0.0, "the intercept", ),
    },
    "generator",
)
def _regression(seed: int, *, n: int, features: int, informative: int, noise: float, bias: float) -> Dataset:
    x, y, coef = _sklearn("make_regression", seed, n_samples=n, n_features=features,
                          n_informative=min(informative, features), noise=noise, bias=bias, coef=True)
    return _cast("regression", {"x": x, "y": y}, None, w=coef, b=bias, source="sklearn.datasets.make_regression")
