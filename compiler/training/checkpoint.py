"""Training checkpoints as safetensors files: tensors plus one JSON metadata blob.

    save(path, {"dense0.W": w, "opt.dense0.W.m": m, ...}, {"epoch": 3, "step": 69})
    tensors, meta = load(path)

Namespaces: a run's checkpoint holds ``params/NAME`` (the model's params and states
as the run evaluates them: averaged, or the best of early stopping; exactly the
names of the generated torch module's ``state_dict``), ``train/NAME`` (everything
the trainer needs to resume: current params, optimizer slots, averages) and
``best/NAME``. `load_params(path)` returns the first namespace with the prefix
stripped, so ``module.load_state_dict(params, strict=True)`` works. The metadata
records the spec's content hash, the hyperparameters, the dims, the data set and
the position in the run.

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


PARAMS, TRAIN, BEST = "params/", "train/", "best/"


def namespace(tensors: dict, prefix: str) -> dict:
    """The tensors under `prefix`, the prefix stripped."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_params(path) -> tuple[dict, dict]:
    """The deployable params and states of a run (a run directory or its checkpoint
    file) and the checkpoint's metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    tensors, meta = load(path)
    params = namespace(tensors, PARAMS)
    if not params:
        raise CheckpointError(f"{path} holds no `params/` namespace (written by an older dlc?); "
                              "train again to get deployable weights")
    return params, meta


def spec_hash(program) -> str:
    """sha256 (16 hex digits) of the spec's text and, recursively, its imports' texts."""
    import hashlib
    h = hashlib.sha256()
    for text in _source_texts(program):
        h.update(text.encode())
    return h.hexdigest()[:16]


def _source_texts(program) -> list[str]:
    from compiler.elaborate.program import _resolve_import
    from dsl.parser import parse_file
    p = Path(program.path)
    if not p.is_file():  # loaded from text: its parsed form stands for it
        return [repr(program.module)]
    texts, seen, todo = [], set(), [p.resolve()]
    while todo:
        f = todo.pop(0)
        if f in seen:
            continue
        seen.add(f)
        texts.append(f.read_text())
        for item in parse_file(str(f)).items:
            if type(item).__name__ == "Import":
                try:
                    todo.append(_resolve_import(item, f.parent).resolve())
                except Exception:  # an unresolvable import failed the load already
                    pass
    return texts


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
