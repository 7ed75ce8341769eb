"""User files: `.npz` and `.csv`."""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any

import numpy as np

from compiler.training.datasets.dataset import Dataset, DatasetError
from compiler.training.datasets.registry import Option

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
