"""Training checkpoints as safetensors files: tensors plus one JSON metadata blob.

    save(path, {"dense0.W": w, "opt.dense0.W.m": m, ...}, {"epoch": 3, "step": 69})
    tensors, meta = load(path)

The format is data only: a JSON header and raw little-endian buffers, read with
`safetensors.numpy.load_file`, so loading a checkpoint can never run code (no pickle
anywhere). The metadata dict is stored as JSON under the header's ``"dlc"`` key;
safetensors metadata must be str -> str. Writes are atomic (a temporary file renamed
over the old one), so an interrupted save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

META_KEY = "dlc"
FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, or not a dlc checkpoint."""


def save(path, tensors: dict, meta: dict) -> None:
    from safetensors.numpy import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.require(_numpy(v), requirements="C") for k, v in tensors.items()}
    blob = json.dumps({"format": FORMAT, **meta}, default=_json_default)
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata={META_KEY: blob})
    os.replace(tmp, path)


def load(path) -> tuple[dict, dict]:
    """The tensors (name -> np.ndarray) and the metadata dict of a checkpoint."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if META_KEY not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a dlc checkpoint")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt dlc metadata ({e})") from None
    return tensors, meta


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")
