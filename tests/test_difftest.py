"""The differential tester in CI: 200 seeded random specs, every backend in f32 and
f64, against torch autograd (first and second order) and finite differences (every
4th spec). `python -m tests.difftest.run --many N` runs more; see tests/difftest/run.py
for the tolerances."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tests.difftest.gen import Case, Node, generate
from tests.difftest.run import check, run, shrink


def test_difftest_ci_sample():
    out = io.StringIO()
    failures = run(range(200), out=out)
    assert not failures, out.getvalue()


def test_generator_is_seeded_and_covers_the_constructs():
    texts = [generate(s).text for s in range(200)]
    assert texts == [generate(s).text for s in range(200)]
    for construct in ("scan(", "reverse = true", "grad(", "stop_gradient", "[:, 1:]", "@ W",
                      "softmax", "logsumexp", "reshape", "where(", "expand_dims", "transpose"):
        assert any(construct in t for t in texts), construct


def test_a_wrong_reference_is_caught_and_shrunk():
    # the tester must be able to fail: a torch side that disagrees with the spec text
    import torch
    inner = Node("M", "tanh(x)", lambda e: torch.tanh(e["x"]))
    wrong = Node("M", f"sin({inner.src})", lambda e: torch.cos(inner.fn(e)), [inner])
    outer = Node("M", f"({wrong.src} * x)", lambda e: wrong.fn(e) * e["x"], [wrong])
    case = Case(0, outer, "mean")
    assert check(case, fd=False)
    small, why = shrink(case, fd=False)
    assert small.root.src == wrong.src and why
