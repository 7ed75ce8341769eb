"""Elaboration: a parsed spec -> a typed `Graph` of primitives for one model.

Layers are expanded at compile time: hyperparameters are evaluated, parameters
created on an instance's first call (their shapes may come from the input's) and
named by the instance path (``encoder.block.0.W``); sharing an instance shares its
parameters; ``repeat(N, L(...))`` makes N instances. ``scan`` bodies elaborate into
nested graphs (frames); outer tensors a body uses are captured as scan inputs.
``grad`` differentiates the graph built so far, so it composes to any order.

Rooms: `program` (loading files, `elaborate`), `evaluator` (the evaluator, made of
`expressions`, `statements` and `calls`), `scope` (scopes and frames), `checks`
(shared checks and messages), `builtins` (the builtin functions and special forms).
Every mistake is reported as a located `DslError`.
"""
from compiler.elaborate.checks import describe
from compiler.elaborate.evaluator import Evaluator
from compiler.elaborate.program import (
           SPECS_DIR,
           STD_DIR,
           Program,
           builtin_scope,
           elaborate,
           file_span,
           load_program,
           pick_model,
)
from compiler.elaborate.scope import Frame, Scope

__all__ = ["Evaluator", "Frame", "Program", "SPECS_DIR", "STD_DIR", "Scope", "builtin_scope",
           "describe", "elaborate", "file_span", "load_program", "pick_model"]
