"""Runtime helpers for generated NumPy code.

`cg.helper(name)` copies one of these functions (with the helpers, module imports
and simple constants it uses) into the generated module, so a generated file
imports only numpy and the standard library. Every ``backends/numpy/prelude*.py``
module is searched; helper names must be unique across them.
"""
from __future__ import annotations

import math

import numpy as np


def erf(x):
    """The error function, elementwise, exact to float64 (NumPy has none)."""
    x = np.asarray(x)
    out = np.frompyfunc(math.erf, 1, 1)(x)
    return np.asarray(out, dtype=x.dtype if x.dtype.kind == "f" else np.float64)

