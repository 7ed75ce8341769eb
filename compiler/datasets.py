"""Datasets for training without a network: embedded real data, seeded generators, user files.

Everything here needs only NumPy (and the Python standard library).  The three real
datasets are shipped as small compressed ``.npz`` files in ``compiler/data/`` (see
``compiler/data/README.md`` for provenance and licences); the rest are generated
deterministically from ``np.random.default_rng(seed)``.

Entry points
------------
``load(name_or_path, *, seed=0, **options) -> Dataset``
    A registered name (see ``DATASETS``; case-insensitive, ``-`` may replace ``_``)
    or a path to a ``.npz`` / ``.csv`` file.  Raises ``DatasetError`` for unknown
    names (with a did-you-mean suggestion), bad options (naming the option and
    listing the valid ones) and unreadable files.
``Dataset``
    ``fields`` (dict of arrays sharing their leading length ``n``), ``description``,
    ``classes`` (number of classes of the label field, or ``None``), ``label`` (name
    of the label field, usually ``"y"``, or ``None``), ``meta`` (extra facts that are
    not per-sample, e.g. class names or the true separating direction of ``blobs``).
    ``split(fractions, seed=, stratify=)`` and ``batches(batch_size, seed=, epoch=)``
    are deterministic, so training can be resumed at any (epoch, batch).
``DATASETS``
    Registry ``name -> DatasetInfo`` with a one-line ``description``, the ``fields``
    produced and the accepted ``options`` (with defaults).  ``describe()`` renders it.

Conventions: real-valued arrays are float32, class labels (and token ids) int64.

Real data (embedded)
--------------------
digits         x [1797,64] float32 in [0,1] (pixels 0..16 divided by 16), y [1797] int64 0..9.
               Options: image=False (True: x is [1797,1,8,8]).  classes=10.
iris           x [150,4] float32 (cm), y [150] int64 0..2.  classes=3.
               Options: standardize="none" ("train" | "all" | "none"), split_seed=0.
breast_cancer  x [569,30] float32, y [569] int64 (0 malignant, 1 benign).  classes=2.
               Options: standardize="train" ("train" | "all" | "none"), split_seed=0.

``standardize="train"`` rescales every feature to zero mean / unit variance using the
statistics of the *training part only* of the canonical split
``Dataset.split((0.8, 0.1, 0.1), seed=split_seed)`` (non-stratified); the statistics
are recorded in ``meta["standardize"]``.  Splitting the loaded dataset again with the
default fractions and ``seed=split_seed`` therefore gives a train part whose
statistics are exactly those used, and validation/test parts that never leaked into
them.  If you split differently, load with ``standardize="none"`` and call
``val.standardize(using=train)`` etc. yourself.  ``"all"`` uses the whole dataset.

Generators (2-D point clouds; ``n`` = number of points)
-------------------------------------------------------
moons      x [n,2], y [n] in {0,1}.  n=500, noise=0.1.
circles    x [n,2], y [n] (0 outer circle radius 1, 1 inner).  n=500, noise=0.05, factor=0.5.
spirals    x [n,2], y [n] arm index.  n=600, arms=2, turns=1.5, noise=0.02.  classes=arms.
gaussians  x [n,2], y [n] component.  Mixture of ``n_components`` Gaussians with centres
           evenly spaced on a circle (the WGAN-GP "8 Gaussians").  n=1000,
           n_components=8, radius=2.0, std=0.02.  Components are balanced.
swiss_roll x [n,2], t [n] in [0,1] (position along the roll).  The (x, z) plane of the 3-D
           swiss roll, x = scale*(u cos u, u sin u) + noise*N(0,1), u = 1.5*pi*(1+2t).
           n=1000, scale=0.1, noise=0.05 (final units).  classes=None.
blobs      x [n,dim], y [n] in {-1,+1} (int64; note: *not* 0/1).  Linearly separable
           through the origin: y * (w . x) >= margin for a unit vector w.
           n=200, dim=2, margin=0.5, spread=1.0.  meta: w (float64 unit vector),
           margin (the actual minimum, >= requested), radius R = max ||x||,
           mistake_bound = (R/margin)^2 (Novikoff).
patterns   x [n,dim] float32 of +-1 (random Hopfield memories, P(+1)=p).  n=10, dim=100, p=0.5.
linreg     x [n,features] float32 ~ N(0,1), y [n] float32 = x.w + b + noise*N(0,1) with w, b ~ N(0,1)
           (meta: w, b).  n=500, features=4, noise=0.1.  classes=None.

Toy sequences (``n`` sequences of ``length`` steps, batch-first)
-----------------------------------------------------------------
sine     x [n,length,1], y [n,length,1] = x shifted one step ahead (next-step prediction)
         of sin(w*dt*t + phi) + noise with w ~ U(0.5, 2.0), phi ~ U(0, 2pi).
         n=512, length=50, dt=0.2, noise=0.0.  classes=None.
parity   x [n,length,1] float32 random bits, y [n] int64 parity (XOR) of the bits, or with
         running=True y [n,length] the parity of each prefix.  n=512, length=8.  classes=2.
adding   Hochreiter & Schmidhuber adding problem: x [n,length,2] (channel 0 values U(0,1),
         channel 1 exactly two markers, one in each half), y [n,1] float32 = sum of the two
         marked values.  n=512, length=50.  classes=None.
copy     Copy-memory task: x, y int64 tokens [n, 2*length+delay].  Input: ``length`` random
         symbols 1..symbols, delay-1 blanks (0), the delimiter (symbols+1), ``length``
         blanks.  Target: length+delay blanks, then the symbols.  n=512, length=10,
         delay=20, symbols=8.  classes=symbols+2.

User files
----------
``*.npz``  every array becomes a field (all must share their leading length).  Floating and
           boolean arrays become float32, integer arrays int64.  Option ``label``: name of
           the label field ("auto": "y" if present); ``classes`` = max+1 of an integer label.
``*.csv``  header row, then numeric rows (comma-separated; option ``delimiter``).  Option
           ``label``: column name or 0-based index ("auto": a column named y / label /
           target / class if there is one; "none": no label).  Fields: x [N, columns-1]
           float32 and y [N] (int64 if all label values are integers >= 0, else float32).
           ``meta["columns"]`` lists the feature column names.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import zipfile
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "Option",
    "describe",
    "load",
    "DEFAULT_FRACTIONS",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

# Tags that decorrelate the split / batch streams from a generator using the same seed.
_SPLIT_TAG = 0x5B117
_BATCH_TAG = 0xBA7C4


class DatasetError(Exception):
    """A dataset could not be produced; ``str(err)`` is a complete, user-facing message."""


# --------------------------------------------------------------------------- Dataset


class Dataset:
    """A collection of named arrays sharing their leading (sample) dimension.

    Attributes:
        fields: ``dict[str, np.ndarray]``; fields are also readable as attributes (``ds.x``).
        n: number of samples (also ``len(ds)``).
        description: one-line human description.
        classes: number of classes of the label field, or ``None`` (regression/unlabelled).
        label: name of the label field (``"y"`` by default when present) or ``None``.
        meta: extra, non-per-sample information (class names, generator facts, ...).
    """

    def __init__(
        self,
        fields: Mapping[str, np.ndarray],
        *,
        description: str = "",
        classes: int | None = None,
        label: str | None = "auto",
        meta: Mapping[str, Any] | None = None,
    ):
        if not fields:
            raise DatasetError("a dataset needs at least one field")
        arrays: dict[str, np.ndarray] = {}
        n = None
        for key, value in fields.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                raise DatasetError(f"field '{key}' is a scalar; every field needs a leading sample dimension")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                lens = ", ".join(f"{k}: {np.shape(v)[0] if np.ndim(v) else 'scalar'}" for k, v in fields.items())
                raise DatasetError(f"fields must share their leading length ({lens})")
            arrays[str(key)] = arr
        self.fields: dict[str, np.ndarray] = arrays
        self.n: int = int(n)
        self.description = description
        self.classes = classes
        if label == "auto":
            label = "y" if "y" in arrays else None
        if label is not None and label not in arrays:
            raise DatasetError(f"label field '{label}' is not one of the fields ({', '.join(arrays)})")
        self.label = label
        self.meta: dict[str, Any] = dict(meta or {})

    # -- basic protocol
    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: str) -> np.ndarray:
        return self.fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def __getattr__(self, name: str) -> np.ndarray:
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.fields.items())
        cls = f", classes={self.classes}" if self.classes is not None else ""
        return f"Dataset(n={self.n}, {parts}{cls})"

    def _derive(self, fields: Mapping[str, np.ndarray], **meta_updates: Any) -> "Dataset":
        meta = dict(self.meta)
        meta.update(meta_updates)
        return Dataset(fields, description=self.description, classes=self.classes, label=self.label, meta=meta)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Dataset":
        """The samples at ``indices`` (in that order), same metadata."""
        idx = np.asarray(indices, dtype=np.int64)
        return self._derive({k: v[idx] for k, v in self.fields.items()})

    # -- splitting
    def split(
        self,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        *,
        seed: int = 0,
        stratify: bool = False,
    ) -> tuple["Dataset", ...]:
        """Shuffle (seeded) and cut into ``len(fractions)`` disjoint parts covering every sample.

        ``fractions`` are non-negative and sum to 1; part sizes are rounded by largest
        remainder so they add up to ``n`` exactly.  With ``stratify=True`` each class of
        the (integer) label field is split in the same proportions.  The result depends
        only on ``(n, fractions, seed)`` (and the labels when stratified).
        """
        parts = self.split_indices(fractions, seed=seed, stratify=stratify)
        return tuple(self.subset(p) for p in parts)

    def split_indices(
        self, fractions: Sequence[float] = DEFAULT_FRACTIONS, *, seed: int = 0, stratify: bool = False
    ) -> list[np.ndarray]:
        """The sample indices of each part that :meth:`split` would return."""
        fr = _check_fractions(fractions)
        rng = np.random.default_rng([_check_seed(seed), _SPLIT_TAG])
        if not stratify:
            perm = rng.permutation(self.n)
            sizes = _apportion(self.n, fr)
            bounds = np.cumsum([0] + sizes)
            return [perm[bounds[i] : bounds[i + 1]] for i in range(len(fr))]
        if self.label is None:
            raise DatasetError("stratify=True needs a label field, and this dataset has none")
        y = self.fields[self.label]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(f"stratify=True needs integer class labels of shape [N]; '{self.label}' is {y.dtype}{list(y.shape)}")
        chunks: list[list[np.ndarray]] = [[] for _ in fr]
        for cls in np.unique(y):
            members = np.flatnonzero(y == cls)
            members = members[rng.permutation(len(members))]
            bounds = np.cumsum([0] + _apportion(len(members), fr))
            for i in range(len(fr)):
                chunks[i].append(members[bounds[i] : bounds[i + 1]])
        out = []
        for parts in chunks:
            idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            out.append(idx[rng.permutation(len(idx))])
        return out

    # -- batching
    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        """Number of batches per epoch."""
        batch_size = _check_batch_size(batch_size)
        return self.n // batch_size if drop_last else -(-self.n // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        start: int = 0,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{field: array[batch]}`` dicts covering every sample once per epoch.

        The order is a permutation drawn from ``default_rng([seed, epoch, tag])``, so it is a
        pure function of ``(seed, epoch)``: to resume, call again with the same arguments
        and ``start=`` the index of the next batch.  ``shuffle=False`` keeps dataset order.
        ``drop_last=True`` drops a final partial batch.
        """
        batch_size = _check_batch_size(batch_size)
        seed = _check_seed(seed)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise DatasetError(f"epoch must be an integer >= 0, got {epoch!r}")
        order = (
            np.random.default_rng([seed, int(epoch), _BATCH_TAG]).permutation(self.n)
            if shuffle
            else np.arange(self.n)
        )
        count = self.num_batches(batch_size, drop_last=drop_last)
        for b in range(max(0, int(start)), count):
            idx = order[b * batch_size : (b + 1) * batch_size]
            yield {k: v[idx] for k, v in self.fields.items()}

    # -- preprocessing
    def standardize(self, field: str = "x", *, using: "Dataset | None" = None, eps: float = 1e-8) -> "Dataset":
        """Zero-mean / unit-variance ``field`` using the statistics of ``using`` (default: self).

        Statistics are per feature (over the sample axis); constant features get std 1.
        Typical use: ``val = val.standardize(using=train); train = train.standardize()``.
        """
        src = self if using is None else using
        if field not in self.fields or field not in src.fields:
            raise DatasetError(f"cannot standardize: no field '{field}'")
        mean, std = _moments(src.fields[field], eps)
        return self._apply_standardize(field, mean, std, "custom")

    def _apply_standardize(self, field: str, mean: np.ndarray, std: np.ndarray, how: str) -> "Dataset":
        arr = self.fields[field]
        out = dict(self.fields)
        out[field] = ((arr.astype(np.float64) - mean) / std).astype(np.float32)
        return self._derive(out, standardize={"field": field, "mode": how, "mean": mean, "std": std})


def _moments(arr: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape[0] == 0:
        raise DatasetError("cannot standardize with statistics of an empty dataset")
    mean = a.mean(axis=0)
    std = a.std(axis=0)
    std = np.where(std > eps, std, 1.0)
    return mean, std


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise DatasetError(f"split fractions must be a sequence of numbers, got {fractions!r}") from None
    if not fr or any(not math.isfinite(f) or f < 0 for f in fr):
        raise DatasetError(f"split fractions must be non-negative numbers, got {tuple(fractions)}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must sum to 1, got {tuple(fractions)} (sum {sum(fr):g})")
    return fr


def _apportion(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``n * fractions`` to integers summing to ``n``."""
    raw = [n * f for f in fractions]
    sizes = [int(math.floor(r)) for r in raw]
    rest = n - sum(sizes)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[:rest]:
        sizes[i] += 1
    return sizes


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DatasetError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Option:
    """One accepted option: default value, kind ("int" | "float" | "bool" | "choice" | "label" | "str"), bounds."""

    default: Any
    doc: str
    kind: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry: ``loader(rng_seed, **validated_options) -> Dataset``."""

    name: str
    description: str
    fields: dict[str, str]
    options: dict[str, Option]
    loader: Callable[..., Dataset] = dc_field(repr=False)
    kind: str = "generator"  # "real" | "generator" | "sequence"


DATASETS: dict[str, DatasetInfo] = {}


def _register(name: str, description: str, fields: dict[str, str], options: dict[str, Option], kind: str):
    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = DatasetInfo(name, description, fields, options, fn, kind)
        return fn

    return deco


def _int(default: int, doc: str, min: int | None = None, max: int | None = None) -> Option:
    return Option(default, doc, "int", min, max)


def _float(default: float, doc: str, min: float | None = None, max: float | None = None) -> Option:
    return Option(default, doc, "float", min, max)


def _bool(default: bool, doc: str) -> Option:
    return Option(default, doc, "bool")


def _choice(default: str, doc: str, *choices: str) -> Option:
    return Option(default, doc, "choice", choices=choices)


def _bound_text(opt: Option) -> str:
    if opt.min is not None and opt.max is not None:
        return f" in [{opt.min:g}, {opt.max:g}]"
    if opt.min is not None:
        return f" >= {opt.min:g}"
    if opt.max is not None:
        return f" <= {opt.max:g}"
    return ""


def _validate_option(where: str, name: str, opt: Option, value: Any) -> Any:
    def bad(expected: str) -> DatasetError:
        return DatasetError(f"{where}: option '{name}' must be {expected}, got {value!r}")

    if opt.kind == "int":
        if isinstance(value, (bool, np.bool_)):
            raise bad("an integer" + _bound_text(opt))
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if not isinstance(value, (int, np.integer)):
            raise bad("an integer" + _bound_text(opt))
        value = int(value)
    elif opt.kind == "float":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad("a number" + _bound_text(opt))
        value = float(value)
        if not math.isfinite(value):
            raise bad("a finite number")
    elif opt.kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad("true or false")
        return bool(value)
    elif opt.kind == "choice":
        if not isinstance(value, str) or value not in opt.choices:
            raise bad("one of " + ", ".join(repr(c) for c in opt.choices))
        return value
    elif opt.kind == "label":
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, np.integer))):
            raise bad('a column/field name, a column index, "auto" or "none"')
        return "none" if value is None else value
    elif opt.kind == "str":
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
        raise bad(("an integer" if opt.kind == "int" else "a number") + _bound_text(opt))
    return value


def _resolve_options(where: str, spec: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: o.default for k, o in spec.items()}
    for key, value in given.items():
        if key not in spec:
            valid = ", ".join(spec) if spec else "(none)"
            near = difflib.get_close_matches(key, list(spec), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise DatasetError(f"{where} has no option '{key}'{hint}; valid options: {valid}")
        out[key] = _validate_option(where, key, spec[key], value)
    return out


# --------------------------------------------------------------------------- loading


def _normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_FILE_SUFFIXES = (".npz", ".csv")


def load(name_or_path: str | os.PathLike, *, seed: int = 0, base_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name, or a ``.npz`` / ``.csv`` file by path.

    ``seed`` drives generators (``np.random.default_rng(seed)``); real datasets and files
    ignore it.  ``base_dir`` resolves relative file paths (default: the current directory).
    Options are validated against the dataset's ``DATASETS[name].options`` (files: see
    ``FILE_OPTIONS``).  Every failure raises ``DatasetError`` with a readable message.
    """
    seed = _check_seed(seed)
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise DatasetError(f"dataset must be a name or a file path, got {name_or_path!r}")
    key = _normalize_name(name_or_path)
    if key in DATASETS:
        info = DATASETS[key]
        opts = _resolve_options(f"dataset '{info.name}'", info.options, options)
        return info.loader(seed, **opts)

    looks_like_path = (
        "/" in name_or_path
        or os.sep in name_or_path
        or "." in os.path.basename(name_or_path)
        or (base_dir is None and os.path.exists(name_or_path))
    )
    if not looks_like_path:
        near = difflib.get_close_matches(key, list(DATASETS), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
        raise DatasetError(
            f"unknown dataset '{name_or_path}'{hint} (known: {', '.join(DATASETS)}; or give a .npz/.csv file path)"
        )
    path = Path(name_or_path)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise DatasetError(f"cannot load '{path}': unsupported file type '{suffix or '(none)'}' (supported: .npz, .csv)")
    if not path.is_file():
        raise DatasetError(f"cannot load '{path}': no such file")
    spec = FILE_OPTIONS[suffix]
    opts = _resolve_options(f"{suffix[1:]} file '{path.name}'", spec, options)
    try:
        return _load_npz(path, **opts) if suffix == ".npz" else _load_csv(path, **opts)
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read dataset file '{path}': {e}") from None


def describe(name: str | None = None) -> str:
    """Human-readable help for one dataset, or a one-line summary of all of them."""
    if name is None:
        width = max(len(n) for n in DATASETS)
        return "\n".join(f"{n:<{width}}  {i.description}" for n, i in DATASETS.items())
    key = _normalize_name(name)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'")
    info = DATASETS[key]
    lines = [f"{info.name}: {info.description}", "fields:"]
    lines += [f"  {k}: {v}" for k, v in info.fields.items()]
    lines.append("options:" if info.options else "options: (none)")
    lines += [f"  {k}={o.default!r}: {o.doc}" for k, o in info.options.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- real data


def _read_embedded(name: str) -> dict[str, np.ndarray]:
    path = DATA_DIR / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"embedded dataset file '{path}' is missing or unreadable: {e}") from None


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
    z = _read_embedded("digits")
    x = z["pixels"].astype(np.float32) / np.float32(16.0)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return Dataset(
        {"x": x, "y": z["labels"].astype(np.int64)},
        description=DATASETS["digits"].description,
        classes=10,
        meta={"class_names": [str(i) for i in range(10)], "source": "digits.npz"},
    )


@_register(
    "iris",
    "Fisher's iris flowers: 150 samples, 4 measurements (cm), 3 species",
    {"x": "[150,4] float32 (sepal length/width, petal length/width)", "y": "[150] int64 0..2"},
    {"standardize": _choice("none", "feature scaling: train-split stats, whole-data stats, or raw", "train", "all", "none"), **_STD_OPTS},
    "real",
)
def _iris(seed: int, *, standardize: str, split_seed: int) -> Dataset:
    z = _read_embedded("iris")
    ds = Dataset(
        {"x": (z["features_x10"].astype(np.float64) / 10.0).astype(np.float32), "y": z["labels"].astype(np.int64)},
        description=DATASETS["iris"].description,
        classes=3,
        meta={"feature_names": [str(s) for s in z["feature_names"]], "class_names": [str(s) for s in z["target_names"]]},
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
    z = _read_embedded("breast_cancer")
    raw = z["features"].astype(np.float64) / 10.0 ** z["decimals"].astype(np.float64)
    ds = Dataset(
        {"x": raw.astype(np.float32), "y": z["labels"].astype(np.int64)},
        description=DATASETS["breast_cancer"].description,
        classes=2,
        meta={"feature_names": [str(s) for s in z["feature_names"]], "class_names": [str(s) for s in z["target_names"]]},
    )
    if standardize != "none":
        # statistics from the exact (float64) raw values, applied to them
        ds64 = Dataset({"x": raw, "y": ds.fields["y"]}, description=ds.description, classes=2, meta=ds.meta)
        return _standardized(ds64, standardize, split_seed)
    return ds


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


# --------------------------------------------------------------------------- sequences

_NSEQ = "number of sequences"


@_register(
    "sine",
    "sine waves of random frequency and phase, next-step prediction",
    {"x": "[n,length,1] float32", "y": "[n,length,1] float32 (x one step ahead)"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(50, "number of time steps", min=1),
        "dt": _float(0.2, "time step (angular frequencies are drawn from U(0.5, 2.0))", min=0),
        "noise": _float(0.0, "std of Gaussian noise added to the signal", min=0),
    },
    "sequence",
)
def _sine(seed: int, *, n: int, length: int, dt: float, noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    omega = rng.uniform(0.5, 2.0, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    t = np.arange(length + 1)[None, :] * dt
    s = np.sin(omega * t + phase) + noise * rng.standard_normal((n, length + 1))
    s = s.astype(np.float32)[:, :, None]
    return Dataset(
        {"x": s[:, :-1], "y": s[:, 1:]},
        description=DATASETS["sine"].description,
        classes=None,
        meta={"omega": omega[:, 0], "phase": phase[:, 0]},
    )


@_register(
    "parity",
    "parity (XOR) of a random bit sequence",
    {"x": "[n,length,1] float32 bits", "y": "[n] int64 parity (running=True: [n,length] prefix parities)"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(8, "number of bits", min=1),
        "running": _bool(False, "label every prefix instead of only the whole sequence"),
    },
    "sequence",
)
def _parity(seed: int, *, n: int, length: int, running: bool) -> Dataset:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, length))
    prefix = np.cumsum(bits, axis=1) % 2
    y = prefix if running else prefix[:, -1]
    return Dataset(
        {"x": bits.astype(np.float32)[:, :, None], "y": y.astype(np.int64)},
        description=DATASETS["parity"].description,
        classes=2,
    )


@_register(
    "adding",
    "adding problem: sum the two marked values of a long sequence",
    {"x": "[n,length,2] float32 (values, markers)", "y": "[n,1] float32 sum of the two marked values"},
    {"n": _int(512, _NSEQ, min=1), "length": _int(50, "number of time steps", min=2)},
    "sequence",
)
def _adding(seed: int, *, n: int, length: int) -> Dataset:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, (n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    # target from the float32 values so that it is exact w.r.t. what the model sees
    y = (x[rows, first, 0].astype(np.float64) + x[rows, second, 0]).astype(np.float32)[:, None]
    return Dataset({"x": x, "y": y}, description=DATASETS["adding"].description, classes=None)


@_register(
    "copy",
    "copy-memory task: reproduce a symbol sequence after a delay",
    {"x": "[n,2*length+delay] int64 tokens", "y": "[n,2*length+delay] int64 target tokens"},
    {
        "n": _int(512, _NSEQ, min=1),
        "length": _int(10, "number of symbols to remember", min=1),
        "delay": _int(20, "steps between the end of the symbols and the output (>= 1)", min=1),
        "symbols": _int(8, "alphabet size; tokens: 0 blank, 1..symbols data, symbols+1 delimiter", min=1),
    },
    "sequence",
)
def _copy(seed: int, *, n: int, length: int, delay: int, symbols: int) -> Dataset:
    rng = np.random.default_rng(seed)
    total = 2 * length + delay
    seq = rng.integers(1, symbols + 1, (n, length))
    x = np.zeros((n, total), np.int64)
    y = np.zeros((n, total), np.int64)
    x[:, :length] = seq
    x[:, length + delay - 1] = symbols + 1
    y[:, length + delay :] = seq
    return Dataset(
        {"x": x, "y": y},
        description=DATASETS["copy"].description,
        classes=symbols + 2,
        meta={"blank": 0, "delimiter": symbols + 1},
    )


# --------------------------------------------------------------------------- user files

_LABEL_OPT = Option("auto", 'label field/column: a name, a 0-based column index, "auto" or "none"', "label")

FILE_OPTIONS: dict[str, dict[str, Option]] = {
    ".npz": {"label": _LABEL_OPT},
    ".csv": {"label": _LABEL_OPT, "delimiter": Option(",", "column separator", "str")},
}

_AUTO_LABELS = ("y", "label", "labels", "target", "class")


def _classes_of(y: np.ndarray) -> int | None:
    if y.ndim >= 1 and np.issubdtype(y.dtype, np.integer) and y.size and y.min() >= 0:
        return int(y.max()) + 1
    return None


def _load_npz(path: Path, *, label: Any) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except ValueError as e:
        raise DatasetError(f"cannot read dataset file '{path}': {e} (object arrays are not supported)") from None
    if not raw:
        raise DatasetError(f"dataset file '{path}' contains no arrays")
    fields = {}
    for k, v in raw.items():
        if v.dtype.kind in "biu":
            fields[k] = v.astype(np.int64) if v.dtype.kind != "b" else v.astype(np.float32)
        elif v.dtype.kind == "f":
            fields[k] = v.astype(np.float32)
        else:
            raise DatasetError(f"dataset file '{path}': array '{k}' has non-numeric dtype {v.dtype}")
        if fields[k].ndim == 0:
            raise DatasetError(f"dataset file '{path}': array '{k}' is a scalar; every array needs a leading sample dimension")
    lengths = {k: v.shape[0] for k, v in fields.items()}
    if len(set(lengths.values())) > 1:
        raise DatasetError(
            f"dataset file '{path}': arrays must share their leading length ("
            + ", ".join(f"{k}: {n}" for k, n in lengths.items())
            + ")"
        )
    if label == "auto":
        label = next((c for c in _AUTO_LABELS if c in fields), None)
    elif label == "none":
        label = None
    elif not isinstance(label, str) or label not in fields:
        raise DatasetError(f"dataset file '{path}': option 'label' names no array ({label!r}); arrays: {', '.join(fields)}")
    classes = _classes_of(fields[label]) if label is not None else None
    return Dataset(fields, description=f"arrays from {path.name}", classes=classes, label=label, meta={"path": str(path)})


def _load_csv(path: Path, *, label: Any, delimiter: str) -> Dataset:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise DatasetError(f"dataset file '{path}' is empty (a header row is required)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DatasetError(f"dataset file '{path}' has a header but no data rows")
    width = len(header)
    data = np.empty((len(body), width), np.float64)
    for i, row in enumerate(body):
        if len(row) != width:
            raise DatasetError(f"{path.name}:{i + 2}: expected {width} columns, found {len(row)}")
        for j, cell in enumerate(row):
            try:
                data[i, j] = float(cell)
            except ValueError:
                raise DatasetError(
                    f"{path.name}:{i + 2}: column '{header[j]}' is not numeric ({cell.strip()!r}); only numeric columns are supported"
                ) from None
    # choose the label column
    if label == "auto":
        lower = [h.lower() for h in header]
        col = next((lower.index(c) for c in _AUTO_LABELS if c in lower), None)
    elif label == "none":
        col = None
    elif isinstance(label, (int, np.integer)):
        col = int(label)
        if not -width <= col < width:
            raise DatasetError(f"dataset file '{path}': option 'label' column index {col} out of range (0..{width - 1})")
        col %= width
    else:
        if label not in header:
            near = difflib.get_close_matches(label, header, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise DatasetError(f"dataset file '{path}': option 'label': no column '{label}'{hint}; columns: {', '.join(header)}")
        col = header.index(label)
    feat_cols = [j for j in range(width) if j != col]
    fields: dict[str, np.ndarray] = {"x": data[:, feat_cols].astype(np.float32)}
    classes = None
    if col is not None:
        yv = data[:, col]
        if np.all(np.isfinite(yv)) and np.all(yv == np.round(yv)) and yv.min() >= 0:
            fields["y"] = yv.astype(np.int64)
            classes = _classes_of(fields["y"])
        else:
            fields["y"] = yv.astype(np.float32)
    return Dataset(
        fields,
        description=f"table from {path.name}",
        classes=classes,
        meta={"path": str(path), "columns": [header[j] for j in feat_cols], "label_column": header[col] if col is not None else None},
    )
