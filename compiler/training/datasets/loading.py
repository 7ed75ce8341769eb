"""`load` (a registered name or a file) and `describe`."""

from __future__ import annotations

import csv
import difflib
import os
import zipfile
from pathlib import Path
from typing import Any

from compiler.training.datasets.dataset import Dataset, DatasetError, _check_seed
from compiler.training.datasets.files import FILE_OPTIONS, _load_csv, _load_npz
from compiler.training.datasets.registry import DATASETS, _resolve_options

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

