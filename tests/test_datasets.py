"""Tests for compiler.datasets: embedded data, generators, files, split and batching."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

from compiler.training import datasets as D
from compiler.training.datasets import Dataset, DatasetError, load

ROOT = Path(__file__).resolve().parents[1]

GENERATORS = [name for name, info in D.DATASETS.items() if info.kind != "real"]
SMALL = {"n": 64}


# --------------------------------------------------------------------------- real data


def test_digits_facts():
    ds = load("digits")
    assert ds.n == len(ds) == 1797
    assert ds.classes == 10
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert set(np.unique(ds.y)) == set(range(10))
    assert np.bincount(ds.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # checksum of the raw 0..16 pixel counts (a fact about the UCI data, recorded when dlc
    # shipped its own copy; sklearn's bundled copy must still give it)
    assert int(np.rint(ds.x * 16).astype(np.int64).sum()) == 561718


def test_digits_image_view():
    flat = load("digits")
    img = load("digits", image=True)
    assert img.x.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(img.x.reshape(1797, 64), flat.x)
    np.testing.assert_array_equal(img.y, flat.y)


def test_iris_facts():
    ds = load("iris")
    assert ds.x.shape == (150, 4) and ds.x.dtype == np.float32
    assert ds.classes == 3
    assert np.bincount(ds.y).tolist() == [50, 50, 50]
    assert int(np.rint(ds.x * 10).sum()) == 20787
    assert ds.meta["class_names"] == ["setosa", "versicolor", "virginica"]


def test_breast_cancer_facts_and_standardization():
    raw = load("breast_cancer", standardize="none")
    assert raw.x.shape == (569, 30) and raw.classes == 2
    assert np.bincount(raw.y).tolist() == [212, 357]
    assert abs(float(raw.x.astype(np.float64).sum()) - 1056474.4596) < 1.0

    ds = load("breast_cancer")  # default: train-split statistics
    assert ds.meta["standardize"]["mode"] == "train"
    train, val, test = ds.split()
    np.testing.assert_allclose(train.x.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.x.std(0), 1.0, atol=1e-4)
    # the held-out parts were not used for the statistics
    assert np.abs(test.x.mean(0)).max() > 0.05
    # equivalent to standardizing by hand with the raw train part
    rtrain, rval, rtest = raw.split()
    np.testing.assert_allclose(rtest.standardize(using=rtrain).x, test.x, atol=1e-4)

    whole = load("breast_cancer", standardize="all")
    np.testing.assert_allclose(whole.x.mean(0), 0.0, atol=1e-5)


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_deterministic_and_seeded(name):
    a = load(name, seed=1, **SMALL)
    b = load(name, seed=1, **SMALL)
    c = load(name, seed=2, **SMALL)
    assert a.fields.keys() == b.fields.keys() == c.fields.keys()
    for k in a.fields:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a.fields)
    assert a.n == 64
    for k, v in a.fields.items():
        assert v.shape[0] == 64
        # bool: masks and 0/1 adjacencies (the sbm graphs), fed to bool inputs
        assert v.dtype in (np.float32, np.int64, np.bool_), (k, v.dtype)
        if v.dtype == np.float32:
            assert np.all(np.isfinite(v))
    if a.classes is not None and a.label is not None and name != "blobs":
        assert a[a.label].min() >= 0 and a[a.label].max() < a.classes


def test_shapes_of_generators():
    assert load("spirals", n=90, arms=3).classes == 3
    assert np.bincount(load("spirals", n=90, arms=3).y).tolist() == [30, 30, 30]
    g = load("gaussians", n=80, n_components=8, radius=2.0, std=0.0)
    np.testing.assert_allclose(np.linalg.norm(g.x, axis=1), 2.0, rtol=1e-5)
    assert np.bincount(g.y).tolist() == [10] * 8
    sr = load("swiss_roll", n=50)
    assert sr.x.shape == (50, 2) and sr.t.shape == (50,) and sr.classes is None
    p = load("patterns", n=5, dim=30)
    assert p.x.shape == (5, 30) and set(np.unique(p.x)) <= {-1.0, 1.0}
    c = load("circles", n=100, noise=0.0, factor=0.3)
    r = np.linalg.norm(c.x, axis=1)
    np.testing.assert_allclose(r[c.y == 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(r[c.y == 1], 0.3, rtol=1e-5)


def test_sequences():
    s = load("sine", n=4, length=20)
    assert s.x.shape == s.y.shape == (4, 20, 1)
    np.testing.assert_array_equal(s.x[:, 1:], s.y[:, :-1])  # y is x one step ahead

    p = load("parity", n=32, length=6)
    assert p.x.shape == (32, 6, 1) and p.y.shape == (32,) and p.classes == 2
    np.testing.assert_array_equal(p.y, p.x[:, :, 0].sum(1).astype(np.int64) % 2)
    pr = load("parity", n=32, length=6, running=True)
    assert pr.y.shape == (32, 6)
    np.testing.assert_array_equal(pr.y[:, -1], pr.x[:, :, 0].sum(1).astype(np.int64) % 2)

    a = load("adding", n=16, length=30)
    assert a.x.shape == (16, 30, 2) and a.y.shape == (16, 1)
    assert np.all(a.x[:, :, 1].sum(1) == 2)
    assert np.all(a.x[:, :15, 1].sum(1) == 1)
    np.testing.assert_allclose(a.y[:, 0], (a.x[:, :, 0] * a.x[:, :, 1]).sum(1), rtol=1e-6)

    c = load("copy", n=8, length=5, delay=7, symbols=4)
    assert c.x.shape == c.y.shape == (8, 17) and c.classes == 6
    np.testing.assert_array_equal(c.y[:, 12:], c.x[:, :5])
    assert np.all(c.x[:, 11] == 5) and np.all(c.y[:, :12] == 0)
    assert c.x[:, :5].min() >= 1 and c.x[:, :5].max() <= 4


@pytest.mark.parametrize("margin,dim,seed", [(0.5, 2, 0), (0.1, 5, 3), (1.0, 10, 7), (0.0, 3, 1)])
def test_blobs_separable_with_margin(margin, dim, seed):
    ds = load("blobs", seed=seed, n=300, dim=dim, margin=margin)
    assert set(np.unique(ds.y)) == {-1, 1}
    w = ds.meta["w"]
    assert abs(np.linalg.norm(w) - 1) < 1e-12
    scores = ds.y * (ds.x.astype(np.float64) @ w)
    assert scores.min() >= margin
    assert ds.meta["margin"] >= margin
    # Novikoff: a perceptron converges within (R/gamma)^2 mistakes
    if margin > 0:
        wt = np.zeros(dim)
        mistakes = 0
        for _ in range(1000):
            changed = False
            for xi, yi in zip(ds.x.astype(np.float64), ds.y):
                if yi * (wt @ xi) <= 0:
                    wt += yi * xi
                    mistakes += 1
                    changed = True
            if not changed:
                break
        assert not changed
        assert mistakes <= ds.meta["mistake_bound"]


# --------------------------------------------------------------------------- split / batches


def _toy(n=103):
    rng = np.random.default_rng(0)
    return Dataset({"x": np.arange(n, dtype=np.float32)[:, None], "y": rng.integers(0, 3, n)}, classes=3)


@pytest.mark.parametrize("stratify", [False, True])
def test_split_disjoint_cover_deterministic(stratify):
    ds = _toy()
    parts = ds.split((0.8, 0.1, 0.1), seed=5, stratify=stratify)
    assert len(parts) == 3
    ids = [p.x[:, 0].astype(int) for p in parts]
    allids = np.concatenate(ids)
    assert sorted(allids.tolist()) == list(range(ds.n))  # disjoint and covering
    assert sum(len(p) for p in parts) == ds.n
    assert abs(len(parts[0]) - 0.8 * ds.n) <= 3
    again = ds.split((0.8, 0.1, 0.1), seed=5, stratify=stratify)
    for a, b in zip(parts, again):
        np.testing.assert_array_equal(a.x, b.x)
    other = ds.split((0.8, 0.1, 0.1), seed=6, stratify=stratify)
    assert not np.array_equal(parts[0].x, other[0].x)
    for a in parts:  # labels stay attached to their samples
        np.testing.assert_array_equal(a.y, ds.y[a.x[:, 0].astype(int)])
    if stratify:
        full = np.bincount(ds.y, minlength=3) / ds.n
        tr = np.bincount(parts[0].y, minlength=3) / len(parts[0])
        assert np.abs(full - tr).max() < 0.02


def test_split_two_way_and_errors():
    ds = _toy(10)
    a, b = ds.split((0.7, 0.3))
    assert (len(a), len(b)) == (7, 3)
    with pytest.raises(DatasetError, match="sum to 1"):
        ds.split((0.5, 0.2))
    with pytest.raises(DatasetError):
        ds.split((1.2, -0.2))
    with pytest.raises(DatasetError, match="label"):
        Dataset({"x": np.zeros((4, 2))}).split(stratify=True)


def test_batches_deterministic_and_cover():
    ds = _toy(103)
    run1 = list(ds.batches(10, seed=3, epoch=2))
    run2 = list(ds.batches(10, seed=3, epoch=2))
    assert len(run1) == ds.num_batches(10) == 11
    for a, b in zip(run1, run2):
        assert a.keys() == {"x", "y"}
        np.testing.assert_array_equal(a["x"], b["x"])
    seen = np.concatenate([b["x"][:, 0] for b in run1]).astype(int)
    assert sorted(seen.tolist()) == list(range(103))  # each sample exactly once
    epoch3 = np.concatenate([b["x"][:, 0] for b in ds.batches(10, seed=3, epoch=3)])
    assert not np.array_equal(seen, epoch3)
    # resumable: starting at batch 4 gives the same tail
    tail = list(ds.batches(10, seed=3, epoch=2, start=4))
    assert len(tail) == 7
    for a, b in zip(run1[4:], tail):
        np.testing.assert_array_equal(a["x"], b["x"])
    # drop_last and no shuffle
    dl = list(ds.batches(10, seed=3, epoch=2, drop_last=True))
    assert len(dl) == 10 and all(len(b["x"]) == 10 for b in dl)
    seq = np.concatenate([b["x"][:, 0] for b in ds.batches(10, shuffle=False)])
    np.testing.assert_array_equal(seq, np.arange(103))
    with pytest.raises(DatasetError):
        list(ds.batches(0))


# --------------------------------------------------------------------------- errors


def test_unknown_name_did_you_mean():
    with pytest.raises(DatasetError, match="did you mean 'digits'"):
        load("digit")
    with pytest.raises(DatasetError, match="did you mean 'spirals'"):
        load("spiral")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load("qqqqq")
    # names are case-insensitive and accept '-'
    assert load("Breast-Cancer").n == 569


def test_bad_options():
    with pytest.raises(DatasetError) as e:
        load("moons", nosie=0.1)
    msg = str(e.value)
    assert "'nosie'" in msg and "did you mean 'noise'" in msg and "n, noise" in msg
    with pytest.raises(DatasetError, match="'n'"):
        load("moons", n=-3)
    with pytest.raises(DatasetError, match="'noise'"):
        load("moons", noise="lots")
    with pytest.raises(DatasetError, match="'image'"):
        load("digits", image=1)
    with pytest.raises(DatasetError, match="'standardize'"):
        load("iris", standardize="yes")
    with pytest.raises(DatasetError, match="seed"):
        load("moons", seed=-1)


# --------------------------------------------------------------------------- files


def test_npz_round_trip(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 3))
    y = np.arange(20) % 4
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y, w=np.ones((20, 2), bool))
    ds = load(str(path))
    assert ds.fields.keys() == {"x", "y", "w"}
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64 and ds.w.dtype == np.float32
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == 4 and ds.label == "y"
    assert load("mine.npz", base_dir=tmp_path).n == 20
    assert load(path, label="none").label is None

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DatasetError, match="leading length"):
        load(str(bad))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="cannot read"):
        load(str(junk))
    with pytest.raises(DatasetError, match="no such file"):
        load(str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetError, match="valid options: label"):
        load(str(path), column=1)


def test_csv_round_trip(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("a,b,label,c\n1.5,2,0,3\n-1,0.25,2,1e-3\n4,5,1,6\n")
    ds = load(str(path))
    assert ds.x.shape == (3, 3) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x, [[1.5, 2, 3], [-1, 0.25, 1e-3], [4, 5, 6]], rtol=1e-6)
    np.testing.assert_array_equal(ds.y, [0, 2, 1])
    assert ds.y.dtype == np.int64 and ds.classes == 3
    assert ds.meta["columns"] == ["a", "b", "c"]

    by_name = load(str(path), label="c")  # float-valued label -> regression
    assert by_name.y.dtype == np.float32 and by_name.classes is None
    np.testing.assert_allclose(by_name.y, [3, 1e-3, 6], rtol=1e-6)
    by_index = load(str(path), label=0)
    assert by_index.meta["label_column"] == "a"
    assert load(str(path), label="none").x.shape == (3, 4)

    semi = tmp_path / "semi.csv"
    semi.write_text("u;v;y\n1;2;1\n3;4;0\n")
    assert load(str(semi), delimiter=";").classes == 2

    with pytest.raises(DatasetError, match="no column 'lable'.*did you mean 'label'"):
        load(str(path), label="lable")
    text = tmp_path / "text.csv"
    text.write_text("a,b\n1,cat\n")
    with pytest.raises(DatasetError, match="not numeric"):
        load(str(text))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DatasetError, match="columns"):
        load(str(ragged))
    with pytest.raises(DatasetError, match="unsupported file type"):
        load(str(tmp_path / "x.json"))


# --------------------------------------------------------------------------- hygiene


def test_registry_documented():
    for name, info in D.DATASETS.items():
        assert info.description and "\n" not in info.description
        assert info.fields
        assert name in D.describe()
        assert info.description in D.describe(name)
