"""`equiv()` and the `dlc equiv` command."""
from __future__ import annotations

import contextlib

from compiler.commands.equiv.compare import (
    DEFAULT_DIM,
    DEFAULT_STEPS,
    Backend,
    EquivReport,
    default_backends,
)
from compiler.commands.equiv.data import RANDOM, data_source
from compiler.commands.equiv.execute import _exact_cuda
from compiler.commands.equiv.phases import _autograd, _forward_and_gradients, _train
from compiler.commands.equiv.report import render
from compiler.commands.usage import UsageError
from compiler.core.threads import limit_cpu_threads

# ---- the command ---------------------------------------------------------------------------

def equiv(model, *, steps: int = DEFAULT_STEPS, device: str = "cpu", seed: int = 0,
          dim: int = DEFAULT_DIM, backends: list[Backend] | None = None, locate: bool = True,
          autograd: bool = True, train: bool = True, data: bool = False) -> EquivReport:
    """Run every comparison; the report's ``ok`` says whether all were within tolerance.

    ``backends[0]`` is the reference (default: `default_backends`). ``data``: feed
    batches of the train block's data set when it has one that fits (`dlc equiv` does
    by default), else random inputs."""
    backends = list(backends or default_backends(device))
    source = data_source(model) if data else RANDOM
    report = EquivReport(model.name, seed, dim, steps, device, [b.name for b in backends],
                         data=source.name)
    ctx = _exact_cuda() if any(b.device == "cuda" for b in backends) else contextlib.nullcontext()
    with ctx, limit_cpu_threads(1, torch=any(b.kind == "torch" for b in backends)):
        feeds, ref_grads = _forward_and_gradients(model, report, backends, seed, dim, locate, source)
        if autograd and model.losses:
            _autograd(model, report, feeds, ref_grads, "cpu")
        if train and steps > 0:
            _train(model, report, backends, seed, dim, steps, locate, source)
    return report


def run_equiv(model, args) -> tuple[int, dict]:
    """`dlc equiv`: (exit code, JSON payload); prints the table unless ``--json``."""
    device = getattr(args, "device", "cpu") or "cpu"
    from compiler.commands.deploy import check_device
    check_device("torch", device)  # equiv's CUDA leg runs the torch backend
    steps = getattr(args, "steps", None)
    steps = DEFAULT_STEPS if steps is None else steps
    if steps < 0:
        raise UsageError("dlc equiv: --steps must be >= 0")
    # the data set by default, as gradcheck; random inputs with --random-inputs or with
    # --dims (sizes the data set would not have)
    use_data = not getattr(args, "random_inputs", False) and not getattr(args, "dims", None)
    report = equiv(model, steps=steps, device=device, seed=getattr(args, "seed", 0) or 0,
                   dim=getattr(args, "dim", None) or DEFAULT_DIM, data=use_data)
    if not getattr(args, "json", False):
        # `color`: set by the CLI (a terminal, no NO_COLOR / --no-color)
        print(render(report, verbose=getattr(args, "verbose", False),
                     color=bool(getattr(args, "color", False))))
    return (0 if report.ok else 1), report.to_json()


