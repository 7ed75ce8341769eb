"""`dlc compile`: write a model as a NumPy module, a PyTorch module source, or ONNX."""
from __future__ import annotations

from pathlib import Path

from compiler.core import backend_registry
from compiler.transform.passes import optimize


def compile_to(m, backend: str, path, *, train_step: bool = False, dtype: str = "f32",
               seed: int = 0) -> dict:
    path = Path(path)
    if backend == "onnx":
        # a train step takes the params as inputs: initialising them (and elaborating
        # the evaluation graph for their shapes) would be wasted work
        params = None if train_step else m.init_params(seed)
        model = m.export_onnx(path, params, train_step=train_step, dtype=dtype)
        return {"path": str(path), "backend": backend, "train_step": train_step,
                "inputs": [i.name for i in model.graph.input],
                "outputs": [o.name for o in model.graph.output]}
    if train_step:
        from compiler.training.step import build_train_step
        g, res = build_train_step(m)
    else:
        g = m.graph
        res = dict(g.outputs)
    og, ores = optimize(g, res)
    mod = backend_registry.load(backend)
    prog = mod.lower(og, ores, dtype=dtype)
    path.write_text(prog.source)
    return {"path": str(path), "backend": backend, "train_step": train_step,
            "results": list(ores)}
