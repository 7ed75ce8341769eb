"""The real data sets (digits, iris, breast cancer), read from scikit-learn's bundled copies."""

from __future__ import annotations

import numpy as np

from compiler.training.datasets.dataset import DEFAULT_FRACTIONS, Dataset, DatasetError, _moments
from compiler.training.datasets.registry import DATASETS, _bool, _choice, _int, _register

# --------------------------------------------------------------------------- real data


def _sklearn_bunch(name: str):
    """scikit-learn's bundled copy of a real data set (installed with it, read offline).

    Imported here, not at module level: `dlc check`/`compile` never load data and must not
    pay sklearn's import time (cold start is measured)."""
    try:
        from sklearn import datasets as skd
    except ImportError as e:  # a dependency of dlc, but say what is missing rather than a traceback
        raise DatasetError(f"dataset '{name}' needs scikit-learn (pip install scikit-learn): {e}") from None
    return getattr(skd, f"load_{name}")()


_STD_OPTS = {
    "split_seed": _int(0, "seed of the canonical split whose train part gives the statistics", min=0),
}


def _standardized(ds: Dataset, mode: str, split_seed: int) -> Dataset:
    if mode == "none":
        return ds
    if mode == "all":
        mean, std = _moments(ds.fields["x"], 1e-8)
    else:
        train_idx = ds.split_indices(DEFAULT_FRACTIONS, seed=split_seed)[0]
        mean, std = _moments(ds.fields["x"][train_idx], 1e-8)
    out = ds._apply_standardize("x", mean, std, mode)
    if mode == "train":
        out.meta["standardize"].update(fractions=DEFAULT_FRACTIONS, split_seed=split_seed)
    return out


@_register(
    "digits",
    "8x8 handwritten digits (UCI optdigits via scikit-learn), 1797 images, 10 classes",
    {"x": "[1797,64] float32 in [0,1] (or [1797,1,8,8] with image=True)", "y": "[1797] int64 0..9"},
    {"image": _bool(False, "present x as [N,1,8,8] images instead of [N,64] vectors")},
    "real",
)
def _digits(seed: int, *, image: bool) -> Dataset:
    b = _sklearn_bunch("digits")
    x = b.data.astype(np.float32) / np.float32(16.0)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(
        {"x": x, "y": b.target.astype(np.int64)},
        description=DATASETS["digits"].description,
        classes=10,
        meta={"class_names": [str(i) for i in range(10)], "source": "sklearn.datasets.load_digits"},
    )


@_register(
    "iris",
    "Fisher's iris flowers: 150 samples, 4 measurements (cm), 3 species",
    {"x": "[150,4] float32 (sepal length/width, petal length/width)", "y": "[150] int64 0..2"},
    {"standardize": _choice("none", "feature scaling: train-split stats, whole-data stats, or raw", "train", "all", "none"), **_STD_OPTS},
    "real",
)
def _iris(seed: int, *, standardize: str, split_seed: int) -> Dataset:
    b = _sklearn_bunch("iris")
    ds = Dataset(
        {"x": b.data.astype(np.float32), "y": b.target.astype(np.int64)},
        description=DATASETS["iris"].description,
        classes=3,
        meta={"feature_names": [str(s) for s in b.feature_names], "class_names": [str(s) for s in b.target_names]},
    )
    return _standardized(ds, standardize, split_seed)


@_register(
    "breast_cancer",
    "Breast Cancer Wisconsin (Diagnostic): 569 samples, 30 features, 2 classes",
    {"x": "[569,30] float32 (standardized by default)", "y": "[569] int64 (0 malignant, 1 benign)"},
    {"standardize": _choice("train", "feature scaling: train-split stats, whole-data stats, or raw", "train", "all", "none"), **_STD_OPTS},
    "real",
)
def _breast_cancer(seed: int, *, standardize: str, split_seed: int) -> Dataset:
    b = _sklearn_bunch("breast_cancer")
    raw = b.data.astype(np.float64)
    ds = Dataset(
        {"x": raw.astype(np.float32), "y": b.target.astype(np.int64)},
        description=DATASETS["breast_cancer"].description,
        classes=2,
        meta={"feature_names": [str(s) for s in b.feature_names], "class_names": [str(s) for s in b.target_names]},
    )
    if standardize != "none":
        # statistics from the exact (float64) raw values, applied to them
        ds64 = Dataset({"x": raw, "y": ds.fields["y"]}, description=ds.description, classes=2, meta=ds.meta)
        return _standardized(ds64, standardize, split_seed)
    return ds

