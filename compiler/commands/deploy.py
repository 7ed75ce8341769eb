"""Helpers of the deploy path: `--device` and `--dims` checks, the train block checked
at `dlc check`, `dlc datasets`, `dlc export RUN`, and data batches for gradcheck."""
from __future__ import annotations

from pathlib import Path

from compiler.commands.usage import UsageError


def check_device(backend: str | None, device: str | None) -> None:
    """`--device cuda` where it cannot run: one clear usage error (exit 2)."""
    if device != "cuda":
        return
    if backend == "numpy":
        raise UsageError("--device cuda: the numpy backend runs on the CPU only "
                         "(use --backend torch or onnx, or --device cpu)")
    if backend == "onnx":
        import onnxruntime as ort
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UsageError("--device cuda: onnxruntime has no CUDA provider on this machine "
                             "(use --device cpu)")
        return
    try:
        import torch
        ok = torch.cuda.is_available()
    except ImportError:
        ok = False
    if not ok:
        raise UsageError("--device cuda: PyTorch sees no CUDA device on this machine "
                         "(use --device cpu)")


def parse_dims(text) -> dict:
    """`--dims B=4,T=7` (the flag may repeat: a list of such texts) -> {"B": 4, "T": 7}."""
    if isinstance(text, (list, tuple)):
        text = ",".join(text)
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        k, _, v = item.partition("=")
        try:
            n = int(v)
        except ValueError:
            n = 0
        if not k.strip().isidentifier() or n < 1:
            raise UsageError(f"--dims expects NAME=SIZE,... with sizes >= 1, got {item!r}")
        out[k.strip()] = n
    return out


def _train_block(m):
    for t in m.program.trains:
        from compiler.training.spec import _model_name
        if _model_name(t.model) == m.name:
            return t
    return None


def check_train_block(m) -> dict | None:
    """Validate the train block as `dlc train` would (optimizer, schedule, players,
    the data set, its options and fields against the inputs): located errors now."""
    if _train_block(m) is None:
        return None
    from compiler.training.spec import load_data, model_for, parse_train
    cfg = parse_train(m)
    full = model_for(m, cfg)
    ds = load_data(cfg, full)
    return {"data": cfg.data, "samples": int(ds.n),
            "fields": {k: [str(v.dtype), list(v.shape)] for k, v in ds.fields.items()},
            "groups": [{"name": g.name, "loss": g.loss,
                        "optimizer": None if g.optimizer is None else g.optimizer.name,
                        "params": len(g.params)} for g in cfg.groups]}


def render_train_check(t: dict) -> str:
    fields = ", ".join(f"{k} {d}{s}" for k, (d, s) in t["fields"].items())
    groups = "; ".join(f"{g['name']}: {g['optimizer'] or 'update rules'} on {g['loss'] or '-'} "
                       f"({g['params']} params)" for g in t["groups"])
    return f"train block ok: {t['data']} ({t['samples']} samples: {fields}); {groups}"


def datasets_info(name: str | None = None) -> list[dict]:
    from compiler.training import datasets
    names = list(datasets.DATASETS) if name is None else [name]
    out = []
    for n in names:
        if n not in datasets.DATASETS:
            raise UsageError(f"unknown data set {n!r}; data sets: {', '.join(datasets.DATASETS)}")
        info = datasets.DATASETS[n]
        ds = datasets.load(n)  # the default options' actual fields
        out.append({"name": n, "kind": info.kind, "description": info.description,
                    "fields": {k: {"doc": info.fields.get(k, ""), "dtype": str(v.dtype),
                                   "shape": list(v.shape)} for k, v in ds.fields.items()},
                    "options": {k: {"default": o.default, "kind": o.kind, "doc": o.doc}
                                for k, o in info.options.items()}})
    return out


def render_datasets(info: list[dict]) -> str:
    lines = []
    for d in info:
        lines.append(f"{d['name']} ({d['kind']}): {d['description']}")
        for k, f in d["fields"].items():
            lines.append(f"  field {k}: {f['dtype']}{f['shape']}  {f['doc']}")
        for k, o in d["options"].items():
            lines.append(f"  option {k} = {o['default']!r}: {o['doc']}")
    return "\n".join(lines)


def export_run(run, backend: str, output, *, outputs=None, with_losses=False, dtype="f32"):
    """`dlc export RUN`: the run's spec (recorded in its checkpoint) with its weights."""
    from compiler import api
    from compiler.commands.compile import compile_to, trained_model
    from compiler.training import checkpoint
    try:
        _, meta = checkpoint.load_params(run)
    except checkpoint.CheckpointError as e:
        raise UsageError(str(e)) from None
    spec = (meta.get("spec") or {}).get("path")
    if not spec or not Path(spec).is_file():
        raise UsageError(f"the spec of run {run} ({spec}) is not there any more")
    m = api.load(spec, model=meta.get("model_name"), hparams=meta.get("hparams") or {})
    m, params, meta = trained_model(m, run, set_hparams={})
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    ext = {"onnx": ".onnx", "numpy": ".py", "torch": ".py"}[backend]
    output = output or run_dir / f"model_{backend}{ext}"
    return compile_to(m, backend, output, dtype=dtype, outputs=outputs,
                      with_losses=with_losses, params=params,
                      metadata={"checkpoint": str(run)})


def data_batch(m, size: int = 4) -> dict | None:
    """The first `size` samples of the train block's data set, or None (no block, or
    data that does not fit this model)."""
    if _train_block(m) is None:
        return None
    from dsl.errors import DslError
    from compiler.training.spec import load_data, parse_train
    try:
        ds = load_data(parse_train(m), m)
    except DslError:
        return None
    import numpy as np
    rng = np.random.default_rng(0)
    # real float data sit on kinks (ties of max-pooling over exact zeros, relu at 0):
    # a small jitter keeps them realistic and off the points with no derivative
    return {k: (v[:size] + 0.01 * rng.standard_normal(v[:size].shape)).astype(v.dtype)
            if v.dtype.kind == "f" else v[:size] for k, v in ds.fields.items()}
