"""`dlc compile`: write a model as a NumPy module, a PyTorch module source, or ONNX.

An inference artifact computes the model's `output`s only (`--outputs a,b` chooses,
`--with-losses` adds the losses and metrics), so it reads only the inputs those need:
no labels. `--checkpoint RUN` puts a run's trained weights in it: ONNX initializers,
or beside a NumPy/PyTorch source a weights file (`NAME.npz` / `NAME.safetensors`,
keyed by the dlc names, i.e. the torch module's `state_dict` keys).
"""
from __future__ import annotations

import sys
from pathlib import Path

from compiler.core import backend_registry
from compiler.transform.passes import optimize


def compile_to(m, backend: str, path, *, train_step: bool = False, dtype: str = "f32",
               seed: int = 0, outputs: list[str] | None = None, with_losses: bool = False,
               params: dict | None = None, metadata: dict | None = None) -> dict:
    path = Path(path)
    trained = params is not None
    if backend == "onnx" and train_step and not trained:
        # the whole regime: every player's step, metrics, SVRG's full gradient, the
        # initial values, the data and a manifest (compiler/training/export_regime.py)
        from compiler.training.export_regime import export_regime
        from compiler.training.spec import parse_train
        cfg = parse_train(m)
        man = export_regime(m, path, dtype=dtype, cfg=cfg, seed=seed or cfg.seed,
                            stamp=lambda proto: m._stamp(proto, metadata))
        first = Path(man["path"]).parent / man["steps"][0]["model"]
        return {"path": str(first), "backend": backend, "train_step": True,
                "manifest": man["path"],
                "models": [e["model"] for e in man["steps"]] +
                          [e["metrics_model"] for e in man["steps"] if "metrics_model" in e] +
                          [s["model"] for s in man["svrg"]],
                "trained": False}
    if backend == "onnx":
        # a train step takes the params as inputs: initialising them (and elaborating
        # the evaluation graph for their shapes) would be wasted work
        if not trained and not train_step:
            params = m.init_params(seed)
        model = m.export_onnx(path, params, train_step=train_step, dtype=dtype,
                              outputs=outputs, with_losses=with_losses, metadata=metadata)
        return {"path": str(path), "backend": backend, "train_step": train_step,
                "inputs": [i.name for i in model.graph.input],
                "outputs": [o.name for o in model.graph.output], "trained": trained}
    if train_step:
        from compiler.training.step import build_train_step
        g, res = build_train_step(m)
    else:
        g = m.graph
        res = m.inference_results(outputs, with_losses=with_losses)
    og, ores = optimize(g, res)
    mod = backend_registry.load(backend)
    prog = mod.lower(og, ores, dtype=dtype)
    path.write_text(prog.source)
    info = {"path": str(path), "backend": backend, "train_step": train_step,
            "inputs": [og.node(n).attrs["name"] for n in og.inputs],
            "results": list(ores), "trained": trained}
    if trained:
        info["weights"] = str(write_weights(path, backend, params))
    return info


def write_weights(path: Path, backend: str, params: dict) -> Path:
    """The weights beside a generated source: `.npz` for NumPy (np.load), safetensors
    for PyTorch (`load_state_dict(safetensors.torch.load_file(p), strict=True)`)."""
    import numpy as np
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in params.items()}
    if backend == "numpy":
        out = path.with_suffix(".npz")
        np.savez(out, **arrays)
        return out
    from safetensors.numpy import save_file
    out = path.with_suffix(".safetensors")
    save_file(arrays, str(out))
    return out


def trained_model(m, checkpoint_path, *, set_hparams: dict):
    """`m` rebuilt as the run in `checkpoint_path` trained it (its recorded hparams and
    dims, under any `--set`), and the run's deployable params. A spec edited since the
    run is a warning when the weights still fit and an error when they do not."""
    from compiler.commands.usage import UsageError
    from compiler.training import checkpoint
    from dsl.errors import SpecError
    try:
        params, meta = checkpoint.load_params(checkpoint_path)
    except checkpoint.CheckpointError as e:
        raise UsageError(str(e)) from None
    if meta.get("model") and meta["model"] != m.name:
        raise UsageError(f"the checkpoint {checkpoint_path} was trained for model "
                         f"`{meta['model']}`, not `{m.name}` (choose it with --model)")
    hp = {**dict(meta.get("hparams") or {}), **set_hparams}
    import dataclasses
    m = dataclasses.replace(m, hparams=hp, dims=dict(meta.get("dims") or m.dims))
    recorded = (meta.get("spec") or {}).get("hash")
    if recorded and recorded != m.spec_hash():
        print(f"warning: {m.program.path} changed since the run in {checkpoint_path} "
              "(its spec hash differs)", file=sys.stderr)
    want = {**m.params, **m.states}
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in want]
    wrong = [k for k in want if k in params and tuple(params[k].shape) != tuple(want[k].shape)]
    if missing or extra or wrong:
        what = (f"missing {', '.join(missing[:3])}" if missing else
                f"unknown {', '.join(extra[:3])}" if extra else
                f"{wrong[0]} is {list(params[wrong[0]].shape)} in the checkpoint but "
                f"{list(want[wrong[0]].shape)} in the model")
        raise SpecError(f"the checkpoint's weights do not fit model `{m.name}`: {what}")
    return m, {k: params[k] for k in want}, meta
