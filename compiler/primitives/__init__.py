"""Every primitive, one block each: declaration, shape rule, VJP, lowerings.

Importing this package registers the whole table (see `compiler.primitive`).
"""
from . import sources, elementwise, reduce, shape, linalg, conv, control, composite  # noqa: F401
