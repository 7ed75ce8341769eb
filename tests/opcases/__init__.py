"""Per-primitive test table (in the style of onnxscript's ops_test_data.py).

Each primitive module's cases live in a sibling file (`elementwise.py`, `reduce.py`,
`shape.py`, `linalg.py`, `conv.py`, `control.py`) as a list named CASES. One runner,
`tests/test_primitives.py`, checks every case on every backend:

* value: the NumPy lowering in float64 against `ref` (an independent torch function);
* gradient: the VJP rule in float64 against central finite differences;
* second order (when `second_order`): the VJP of the VJP, also by finite differences;
* PyTorch and ONNX single-node lowerings against the NumPy one.

`skip` maps a check name ("grad", "second_order", "torch", "onnx") to the reason it
does not apply; the registry test fails when a differentiable primitive has no
grad-checked case.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Case:
    op: str
    # Each arg: a numpy array (float64 or int64/bool), or fn(rng) -> array.
    args: list[Any]
    attrs: dict = field(default_factory=dict)
    # Independent reference: fn(*torch_tensors) -> tensor, computed in float64.
    ref: Callable | None = None
    name: str = ""
    # Absolute/relative tolerance of the value check (float64: tight).
    atol: float = 1e-10
    rtol: float = 1e-7
    second_order: bool = False
    skip: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.name}" if self.name else self.op
