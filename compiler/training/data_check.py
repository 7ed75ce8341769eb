"""Data that cannot index the model: checked once, before the first step.

A data field that reaches a `take` as its index must lie in [0, rows) of its table
(`compiler/core/index_ranges.py`); here a violation is one located error at the train
block's data line, naming the field, its range and the table.
"""
from __future__ import annotations

from dsl.errors import SpecError

from compiler.core.index_ranges import index_limits, out_of_range


def check_index_ranges(g, parts, span) -> None:
    limits = index_limits(g)
    for part in parts if limits else ():
        for name, (rows, where) in limits.items():
            bad = out_of_range(part.fields[name], rows) if name in part.fields else None
            if bad is None:
                continue
            loc = f" (`take` at {where.path}:{where.line})" if where is not None else ""
            raise SpecError(
                f"data field `{name}` holds values in [{bad[0]}, {bad[1]}], but the model uses "
                f"it to index a table of {rows} rows{loc}", span,
                hint=f"every `{name}` must be in [0, {rows}): raise the vocabulary size "
                     f"(e.g. an Embedding's `vocab`) or re-map the data")
