"""The `Dataset`: named arrays sharing a leading length, with seeded splits and batches."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

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

