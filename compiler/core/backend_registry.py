"""Backends are found by name at run time, so the compiler never imports one it
does not use (compiling to ONNX never imports torch)."""
from __future__ import annotations

import importlib

BACKENDS = ("numpy", "torch", "onnx")


def load(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"backends.{name}")
