"""Our real data sets and the 2-D generators are scikit-learn's: same arrays for the same
seed and options (compared against sklearn called directly, not against stored numbers)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn import datasets as skd

from compiler.training.datasets import DatasetError, load


@pytest.mark.parametrize("name", ["digits", "iris", "breast_cancer"])
def test_real_data_is_sklearns(name):
    ref = getattr(skd, f"load_{name}")()
    ds = load(name, **({} if name == "digits" else {"standardize": "none"}))
    scale = 16.0 if name == "digits" else 1.0  # digits: pixel counts 0..16 divided by 16
    # float32 is what dlc trains on: equal to sklearn's float64 rounded once
    np.testing.assert_array_equal(ds.x, (ref.data / scale).astype(np.float32))
    np.testing.assert_array_equal(ds.y, ref.target)
    if name != "digits":
        assert ds.meta["class_names"] == [str(s) for s in ref.target_names]


@pytest.mark.parametrize("seed", [0, 7])
def test_generators_are_sklearns(seed):
    x, y = skd.make_moons(n_samples=101, noise=0.2, random_state=seed)
    d = load("moons", seed=seed, n=101, noise=0.2)
    np.testing.assert_array_equal(d.x, x.astype(np.float32))
    np.testing.assert_array_equal(d.y, y)

    x, y = skd.make_circles(n_samples=60, noise=0.03, factor=0.4, random_state=seed)
    d = load("circles", seed=seed, n=60, noise=0.03, factor=0.4)
    np.testing.assert_array_equal(d.x, x.astype(np.float32))
    np.testing.assert_array_equal(d.y, y)

    d = load("gaussians", seed=seed, n=50, n_components=5, radius=3.0, std=0.1)
    x, y = skd.make_blobs(n_samples=50, centers=d.meta["centers"], cluster_std=0.1, random_state=seed)
    np.testing.assert_array_equal(d.x, x.astype(np.float32))
    np.testing.assert_array_equal(d.y, y)
    np.testing.assert_allclose(np.linalg.norm(d.meta["centers"], axis=1), 3.0)

    x3, t = skd.make_swiss_roll(n_samples=40, noise=0.5, random_state=seed)  # our noise 0.05 / scale 0.1
    d = load("swiss_roll", seed=seed, n=40, scale=0.1, noise=0.05)
    np.testing.assert_allclose(d.x, (0.1 * x3[:, [0, 2]]).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(d.t, (t / (1.5 * np.pi) - 1) / 2, rtol=1e-6, atol=1e-7)
    assert d.t.min() >= 0 and d.t.max() <= 1

    x, y, coef = skd.make_regression(n_samples=30, n_features=3, n_informative=2, noise=0.5, bias=1.5,
                                     coef=True, random_state=seed)
    d = load("regression", seed=seed, n=30, features=3, informative=2, noise=0.5, bias=1.5)
    np.testing.assert_array_equal(d.x, x.astype(np.float32))
    np.testing.assert_array_equal(d.y, y.astype(np.float32))
    np.testing.assert_array_equal(d.meta["w"], coef)


def test_bad_sklearn_options_are_dataset_errors():
    with pytest.raises(DatasetError, match="factor"):
        load("circles", factor=1.0)  # sklearn requires factor < 1
    with pytest.raises(DatasetError, match="2\\*\\*32"):
        load("moons", seed=2**32)


def test_cold_import_does_not_load_sklearn():
    # cold start of `dlc check`/`compile` is measured: sklearn is imported by the loaders only
    code = ("import sys, compiler.training.datasets, compiler.commands.cli; "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
