"""The PyTorch backend: a graph becomes an ``nn.Module`` with generated forward code.

    m = backends.torch.lower(graph, {"loss": l}, dtype="f32", device="cpu")
    m.load_numpy({"dense0.W": w, ...})      # initial parameter values
    out = m({"x": x})                        # inputs and noise; -> {"loss": tensor}
    out["loss"].backward()                   # torch autograd through it
    m.state_dict().keys()                    # exactly the dlc names: "dense0.W", ...

Every ``param`` of the graph is an ``nn.Parameter`` and every ``state`` a buffer,
registered under its hierarchical dlc name (``encoder.block.0.W`` lives in nested
sub-modules), so ``named_parameters()`` and ``state_dict()`` use dlc's names. A
feed may override a param or state by name. ``m.source`` is the generated code.
"""
from __future__ import annotations

import itertools
import sys
import types
import weakref

import numpy as np
import torch
from torch import nn

from compiler.core.ir import Graph


from ..pysource import register_scan, register_source
from .codegen import TorchGen
from .compiled import compile_program

__all__ = ["lower", "DlcModule", "TorchGen", "compile_program"]

_counter = itertools.count()


register_scan("torch")


class DlcModule(nn.Module):
    """A lowered graph: ``module(feeds) -> dict[str, Tensor]``.

    Attributes: ``source`` (generated code), ``feeds`` (names of non-held sources
    the forward reads), ``results`` (result names), ``run_dtype``.
    """

    def __init__(self, graph: Graph, source: str, feeds: list[str], results: list[str],
                 run_dtype: str, device="cpu"):
        super().__init__()
        self.source = source
        self.results = tuple(results)
        self.run_dtype = run_dtype
        held = {graph.node(n).attrs["name"] for n in graph.params + graph.states}
        self.feeds = tuple(f for f in feeds if f not in held)
        # A real (registered) module: torch.compile resolves the generated code's
        # globals by importing the module its __name__ names.
        k = next(_counter)
        modname = f"_dlc_generated_torch_{k}"
        filename = f"<dlc-torch:{graph.name or 'graph'}:{k}>"
        register_source(filename, source)
        mod = types.ModuleType(modname)
        mod.__file__ = filename
        exec(compile(source, filename, "exec"), mod.__dict__)
        sys.modules[modname] = mod
        weakref.finalize(self, sys.modules.pop, modname, None)
        mod.build(self, device)  # params and buffers under their dlc names
        self._dlc_forward = mod.forward

    def forward(self, feeds: dict) -> dict:
        return self._dlc_forward(self, feeds)

    def load_numpy(self, values: dict, strict: bool = True) -> None:
        """Set params/states from arrays keyed by dlc name (cast to their dtype)."""
        held = dict(self.named_parameters())
        held.update(self.named_buffers())
        with torch.no_grad():
            for name, arr in values.items():
                if name not in held:
                    if strict:
                        raise KeyError(f"no param or state named {name!r}")
                    continue
                t = held[name]
                v = torch.as_tensor(np.asarray(arr))
                if tuple(v.shape) != tuple(t.shape):
                    raise ValueError(f"{name}: shape {tuple(v.shape)} does not match "
                                     f"{tuple(t.shape)}")
                t.copy_(v.to(dtype=t.dtype, device=t.device))

    def numpy_state(self) -> dict[str, np.ndarray]:
        """Every param and state as a float/int NumPy array, keyed by dlc name."""
        return {k: (v.detach().cpu().float() if v.dtype == torch.bfloat16 else v.detach().cpu()).numpy()
                for k, v in self.state_dict().items()}


def lower(graph: Graph, results: dict[str, int], dtype: str = "f32", device="cpu",
          foreach: bool = True, **opts) -> DlcModule:
    """Generate the PyTorch module computing ``results`` of ``graph``.

    ``dtype`` is the run dtype of every float node; ``device`` where the params and
    states are created (``module.to(...)`` moves them later as usual). ``foreach``:
    the optimizer's per-parameter updates as multi-tensor ``torch._foreach_*`` calls
    (`backends/torch/foreach.py`; the same values as ``foreach=False``).
    """
    if opts:
        raise TypeError(f"unknown PyTorch backend options: {', '.join(opts)}")
    register_scan("torch")
    gen = TorchGen(dtype, fuse_foreach=foreach).generate(graph, dict(results))
    return DlcModule(graph, gen.source, gen.feeds, list(results), dtype, device)
