"""`dlc train --compile`: the generated step program under ``torch.compile``.

The whole step (forward, the symbolic gradient and the optimizer update) is one
generated function with no Python control flow on data, so dynamo captures it as
one graph and inductor fuses its elementwise chains (the update's per-parameter
ops, the loss) into a few kernels. The first call, and any call that makes dynamo
compile again (another batch size: the last, short batch of an epoch), is counted
as compile time, so the summary can say what compiling cost.
"""
from __future__ import annotations

import time

import numpy as np
import torch


class CompiledProgram:
    """``prog(feeds) -> dict`` as the lowered module, run through ``torch.compile``.

    ``compile_s`` is the wall time of the calls during which dynamo compiled a graph
    (each includes one run of the step); ``compiles`` how many there were.
    """

    def __init__(self, module, **options):
        self.module = module
        self._compiled = torch.compile(module, **options)
        self.compile_s = 0.0
        self.compiles = 0

    def __call__(self, feeds: dict) -> dict:
        # host arrays become tensors out here (zero-copy), so dynamo guards on tensors,
        # not on NumPy objects; the generated code's `as_tensor` is then a no-op
        feeds = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
                 for k, v in feeds.items()}
        before = _frames_compiled()
        t0 = time.perf_counter()
        out = self._compiled(feeds)
        if _frames_compiled() != before:
            self.compile_s += time.perf_counter() - t0
            self.compiles += 1
        return out

    # what the trainer and checkpoints read from a program besides calling it
    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)


def _frames_compiled() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["stats"].values()) + sum(counters["frames"].values())


def compile_program(prog, **options) -> CompiledProgram:
    """Wrap a lowered program (`backends.torch.lower`) in ``torch.compile``."""
    return CompiledProgram(prog, **options)
