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
from compiler.training.loop import Trainer
from compiler.training.step import StepGraph, build_step, build_train_step, initial_values, total_rounds

__all__ = ["StepGraph", "Trainer", "build_step", "build_train_step", "initial_values",
           "total_rounds"]
