"""Training: the `train` block, compiled into one step graph, and the loop that runs it.

Rooms: `spec` (the train block parsed and checked into a `TrainConfig`), `step` (the
train-step graph: loss, gradients, regularizers, schedule, optimizer update),
`optim` / `schedules` / `options` (the update rules and learning-rate schedules of the
notes, and their option checking), `loop` (the `Trainer`: batches, evaluation, early
stopping, resume), `checkpoint` (safetensors, never pickle), `reporting` (progress,
metrics.csv, curves) and `datasets` (embedded data, generators, user files).

Imports point down: training uses the compiler core (`elaborate`, `transform`, `core`)
and reaches backends only through `compiler.core.backend_registry`.
"""
import importlib

# Imported on first use: `dlc check` reads `compiler.training.spec` only, and importing
# this package must not load the loop (and what it imports) for it.
_LAZY = {"Trainer": "loop", "StepGraph": "step", "build_step": "step",
         "build_train_step": "step", "initial_values": "step", "total_rounds": "step"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"compiler.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["StepGraph", "Trainer", "build_step", "build_train_step", "initial_values",
           "total_rounds"]
