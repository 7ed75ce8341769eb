"""compiler/training/step_check.py (one host read per step) and compiler/training/memory.py (allocator)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compiler.training import memory
from compiler.training.step_check import finite_and_scalars


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_value_anywhere_is_caught(bad):
    out = {"loss": torch.tensor(0.5), "new:w": torch.ones(3, 4, dtype=torch.float64),
           "idx": torch.arange(3), "new:b": torch.zeros(5)}
    ok, vals = finite_and_scalars(out, ["loss"])
    assert ok and vals == [0.5]
    out["new:b"][2] = bad
    assert not finite_and_scalars(out, ["loss"])[0]
    np_out = {k: v.numpy() for k, v in out.items()}
    assert not finite_and_scalars(np_out, ["loss"])[0]


@pytest.mark.parametrize("dt", [torch.float32, torch.float16, torch.float64])
def test_huge_finite_values_are_finite(dt):
    # the fused check is a 2-norm, which overflows here (3e38 squared in f32; 6e4 in
    # f16, 1e300 in f64): it must then confirm entry by entry and say finite
    big = {torch.float32: 3e38, torch.float16: 6e4, torch.float64: 1e300}[dt]
    out = {"loss": torch.tensor(1.0), "w": torch.full((4,), big, dtype=dt)}
    ok, vals = finite_and_scalars(out, ["loss", "loss"])
    assert ok and vals == [1.0, 1.0]
    assert math.isfinite(vals[0])


def test_allocator_settings_from_the_environment():
    assert memory.settings({"DLC_MALLOC": "off"}) is None
    assert memory.settings({}) == {"trim": memory.DEFAULT_TRIM, "mmap": memory.DEFAULT_MMAP}
    assert memory.settings({"DLC_MALLOC": "trim=4096"})["trim"] == 4096
    assert "mmap" not in memory.settings({"MALLOC_MMAP_THRESHOLD_": "1"})
    with pytest.raises(ValueError, match="DLC_MALLOC"):
        memory.settings({"DLC_MALLOC": "trim=lots"})


def test_tune_allocator_applies_once():
    # the page-fault effect is measured in bench/models.py (a step's faults depend on
    # glibc's dynamic thresholds, which a small test cannot pin down)
    first = memory.tune_allocator()
    assert memory.tune_allocator() == first
    if first is not None:
        assert set(first) <= {"trim", "mmap"}
