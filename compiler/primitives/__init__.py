"""The primitive table: every primitive, one block each (declaration, shape rule, VJP,
lowerings), in `sources`, `elementwise`, `reduce`, `shape`, `linalg`, `decomp` (factorisations,
solves, sorting), `conv`, `control`, `composite` (ops with a
decomposition and native lowerings), `recurrent` (the std LSTM as one such op).

`table` holds the registry itself. Importing this package (or anything in it) registers
the whole table, so `from compiler.primitives import get_primitive` always sees every
entry.
"""
from compiler.primitives import sources, elementwise, reduce, shape, linalg, decomp, conv, control, composite, recurrent  # noqa: F401,I001
from compiler.primitives.table import (MissingRule, Primitive, all_primitives, defprim,
                                       get_primitive, render_template)

__all__ = ["MissingRule", "Primitive", "all_primitives", "defprim", "get_primitive",
           "render_template"]
