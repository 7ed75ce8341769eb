"""Every model of every spec in specs/ passes `dlc gradcheck` (float64 finite
differences, torch.autograd.gradcheck's tolerances). A new spec is covered by
adding its file."""
from __future__ import annotations

from pathlib import Path

import pytest

from compiler import api
from compiler.elaborate import load_program
from compiler.commands.gradcheck import gradcheck

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.dl"))


def _cases():
    for path in SPECS:
        for model in load_program(path).models:
            yield pytest.param(path, model, id=f"{path.stem}:{model}")


@pytest.mark.parametrize("path,model", list(_cases()))
def test_spec_gradients_match_finite_differences(path, model):
    m = api.load(path, model=model)
    if not m.losses:
        pytest.skip(f"{model} declares no loss")
    if not any(t.is_float for t in m.params.values()) and not any(
            t.is_float for t in m.inputs.values()):
        pytest.skip(f"{model} has nothing to differentiate")
    checks = gradcheck(m, seed=0, max_entries=16)
    bad = [f"{c.loss}/{c.tensor}: abs {c.max_abs:.2e} rel {c.max_rel:.2e}" for c in checks if not c.ok]
    assert checks and not bad, bad
