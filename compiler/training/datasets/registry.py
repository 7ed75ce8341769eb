"""The registry of named data sets and the checking of their options."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Callable, Mapping

import numpy as np

from compiler.training.datasets.dataset import Dataset, DatasetError

# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Option:
    """One accepted option: default value, kind ("int" | "float" | "bool" | "choice" | "label" | "str"), bounds."""

    default: Any
    doc: str
    kind: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry: ``loader(rng_seed, **validated_options) -> Dataset``."""

    name: str
    description: str
    fields: dict[str, str]
    options: dict[str, Option]
    loader: Callable[..., Dataset] = dc_field(repr=False)
    kind: str = "generator"  # "real" | "generator" | "sequence"


DATASETS: dict[str, DatasetInfo] = {}


def _register(name: str, description: str, fields: dict[str, str], options: dict[str, Option], kind: str):
    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = DatasetInfo(name, description, fields, options, fn, kind)
        return fn

    return deco


def _int(default: int, doc: str, min: int | None = None, max: int | None = None) -> Option:
    return Option(default, doc, "int", min, max)


def _float(default: float, doc: str, min: float | None = None, max: float | None = None) -> Option:
    return Option(default, doc, "float", min, max)


def _bool(default: bool, doc: str) -> Option:
    return Option(default, doc, "bool")


def _choice(default: str, doc: str, *choices: str) -> Option:
    return Option(default, doc, "choice", choices=choices)


def _bound_text(opt: Option) -> str:
    if opt.min is not None and opt.max is not None:
        return f" in [{opt.min:g}, {opt.max:g}]"
    if opt.min is not None:
        return f" >= {opt.min:g}"
    if opt.max is not None:
        return f" <= {opt.max:g}"
    return ""


def _validate_option(where: str, name: str, opt: Option, value: Any) -> Any:
    def bad(expected: str) -> DatasetError:
        return DatasetError(f"{where}: option '{name}' must be {expected}, got {value!r}")

    if opt.kind == "int":
        if isinstance(value, (bool, np.bool_)):
            raise bad("an integer" + _bound_text(opt))
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if not isinstance(value, (int, np.integer)):
            raise bad("an integer" + _bound_text(opt))
        value = int(value)
        from compiler.core.limits import describe, limit
        if opt.max is None and value > limit("DLC_MAX_DATASET_ROWS"):
            # sizes (rows, features, lengths): refused before anything is allocated
            raise DatasetError(f"{where}: option '{name}' = {value:,} is over the limit of "
                               f"{describe('DLC_MAX_DATASET_ROWS')}")
    elif opt.kind == "float":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad("a number" + _bound_text(opt))
        value = float(value)
        if not math.isfinite(value):
            raise bad("a finite number")
    elif opt.kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad("true or false")
        return bool(value)
    elif opt.kind == "choice":
        if not isinstance(value, str) or value not in opt.choices:
            raise bad("one of " + ", ".join(repr(c) for c in opt.choices))
        return value
    elif opt.kind == "label":
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, np.integer))):
            raise bad('a column/field name, a column index, "auto" or "none"')
        return "none" if value is None else value
    elif opt.kind == "str":
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
        raise bad(("an integer" if opt.kind == "int" else "a number") + _bound_text(opt))
    return value


def _resolve_options(where: str, spec: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: o.default for k, o in spec.items()}
    for key, value in given.items():
        if key not in spec:
            valid = ", ".join(spec) if spec else "(none)"
            near = difflib.get_close_matches(key, list(spec), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise DatasetError(f"{where} has no option '{key}'{hint}; valid options: {valid}")
        out[key] = _validate_option(where, key, spec[key], value)
    return out

