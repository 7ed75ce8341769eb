"""Functions every spec can call without importing anything.

Most wrap one primitive (keyword arguments become its attrs). A few are built
from several primitives (`split`, `stack`, indexing), and a few are special forms:
`grad` differentiates the graph built so far, `scan` elaborates its body into a
nested graph, `repeat` evaluates its layer expression N times. Layers, losses and
activations beyond these live in the language itself, in `specs/std/`.
"""
from compiler.elaborate.builtins import forms, fused, init, linalg, nn, scatter, tensors  # noqa: F401  (each registers its builtins)
from compiler.elaborate.builtins.base import BUILTINS, INIT_SCOPE, builtin
from compiler.elaborate.builtins.forms import index_tensor

__all__ = ["BUILTINS", "INIT_SCOPE", "builtin", "index_tensor"]
