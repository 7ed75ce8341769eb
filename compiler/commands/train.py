"""`dlc train`: load and split the dataset, run the trainer, and write ``metrics.csv``,
``curves.png`` and ``model.onnx`` to the run directory beside the checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

from compiler.core.threads import limit_cpu_threads, thread_limit
from compiler.training import checkpoint, distributed
from compiler.training.loop import (
    CHECKPOINT,
    CURVES,
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    METRICS,
    ONNX_MODEL,
    Diverged,
    Trainer,
)
from compiler.training.reporting import TensorBoard, make_progress, plot_curves, write_metrics_csv
from compiler.training.spec import TrainConfig, model_for, parse_train
from compiler.training.step import _numpy, _split
from dsl.errors import SpecError

# ---- dlc train ---------------------------------------------------------------------------

def run_training(model, args) -> tuple[int, dict]:
    """`dlc train`: returns (exit code, the JSON payload `--json` prints)."""
    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise SpecError("--nproc must be at least 1")
    if nproc and nproc > 1 and not distributed.launched():
        return _launch(args, nproc)
    try:
        comm = distributed.from_env(getattr(args, "device", "cpu"),
                                    getattr(args, "dist_timeout", None) or
                                    distributed.DEFAULT_TIMEOUT)
    except distributed.DistributedError as e:
        return _dist_failure(e, args)
    try:
        return _run_training(model, args, comm)
    except distributed.DistributedError as e:
        return _dist_failure(e, args)
    finally:
        comm.close()


def _launch(args, nproc: int) -> tuple[int, dict]:
    """`--nproc N` without a launcher around us: become the launcher."""
    argv = distributed.strip_nproc(list(getattr(args, "argv", None) or sys.argv[1:]))
    try:
        distributed.launch(argv, nproc)
    except distributed.DistributedError as e:
        return _dist_failure(e, args)
    return EXIT_OK, None  # rank 0 printed the summary (or the JSON) itself


def _dist_failure(e, args) -> tuple[int, dict]:
    if not getattr(args, "json", False):
        print(f"error: {e}", file=sys.stderr)
    return EXIT_FAIL, {"error": "DistributedError", "message": str(e)}


def _run_training(model, args, comm) -> tuple[int, dict]:
    compiling = bool(getattr(args, "compile", False))
    if compiling and getattr(args, "backend", "numpy") != "torch":
        from compiler.commands.usage import UsageError
        raise UsageError(f"--compile needs --backend torch (torch.compile), not "
                         f"--backend {getattr(args, 'backend', 'numpy')}")
    cfg = parse_train(model)
    _apply_overrides(cfg, args)
    model = model_for(model, cfg)
    seed = args.seed if getattr(args, "seed", None) is not None else cfg.seed  # 0 too
    resume = bool(getattr(args, "resume", False))
    # every rank names the same directory (rank 0 alone writes in it)
    out = run_dir(model.name, getattr(args, "out", None), resume=resume,
                  force=bool(getattr(args, "force", False)))
    if comm.main:
        out.mkdir(parents=True, exist_ok=True)
    # ranks other than 0 train silently: rank 0 prints the summary and writes the files
    quiet = bool(getattr(args, "quiet", False) or getattr(args, "json", False)) or not comm.main
    parts = _split(cfg, model)
    tr = Trainer(model, cfg, parts, backend=getattr(args, "backend", "numpy"),
                 device=getattr(args, "device", "cpu"), seed=seed, out=out,
                 progress=_progress(model, args, quiet, out), comm=comm,
                 dtype=getattr(args, "dtype", None) or "f32",
                 horizon=_horizon(out) if resume else None, compile=compiling)
    if getattr(args, "resume", False):
        try:
            tr.load_checkpoint()
        except checkpoint.CheckpointError as e:
            if not getattr(args, "json", False):
                print(f"error: {e}", file=sys.stderr)
            return EXIT_FAIL, {"error": "CheckpointError", "message": str(e)}
    # (onnxruntime sessions keep their own pools; a GPU run needs no CPU limit)
    n = thread_limit() if tr.device == "cpu" and tr.backend != "onnx" else None
    with limit_cpu_threads(n, torch=tr.backend == "torch"):
        return _train_and_report(tr, model, cfg, out, args, quiet)


def run_dir(name: str, given, *, resume: bool, force: bool) -> Path:
    """The run directory. An earlier run there is never overwritten silently: the
    default `runs/<model>` moves on to `runs/<model>-2`, ...; an explicit `--out`
    holding a checkpoint needs `--resume` (continue) or `--force` (start over)."""
    from compiler.commands.usage import UsageError
    if given:
        out = Path(given)
        if (out / CHECKPOINT).exists() and not (resume or force):
            raise UsageError(f"{out} holds an earlier run ({CHECKPOINT}); continue it with "
                             "--resume, overwrite it with --force, or choose another --out")
        return out
    out = Path("runs") / name
    if resume or force:
        return out
    k = 2
    while (out / CHECKPOINT).exists():
        out = Path("runs") / f"{name}-{k}"
        k += 1
    return out


def _horizon(out: Path) -> int | None:
    """The schedule horizon the resumed run started with (None: let load report)."""
    try:
        _, meta = checkpoint.load(out / CHECKPOINT)
    except checkpoint.CheckpointError:
        return None
    h = meta.get("horizon", meta.get("total_rounds"))
    return h if isinstance(h, int) and not isinstance(h, bool) and h > 0 else None


def _progress(model, args, quiet, out):
    prog = None if quiet else make_progress(color=False if getattr(args, "no_color", False) else None)
    if getattr(args, "tensorboard", False):
        from compiler.commands.layers import layer_table, render_table
        from compiler.commands.tb_graph import graph_def
        prog = TensorBoard(out / "tensorboard", prog, render_table(layer_table(model)),
                           graph_def=graph_def(model.graph))
    return prog


def _train_and_report(tr: Trainer, model, cfg: TrainConfig, out: Path, args, quiet: bool):
    try:
        try:
            tr.run()
        finally:
            if tr.progress is not None and hasattr(tr.progress, "close"):
                tr.progress.close()
    except Diverged as e:  # the last checkpoint (of finite values) stays as it was
        if not getattr(args, "json", False) and tr.comm.main:  # (every rank stops)
            print(("\n" if not quiet else "") + e.rendered, file=sys.stderr)
        return EXIT_FAIL, e.payload
    except KeyboardInterrupt:
        if tr.comm.main:
            tr.save_checkpoint()
        msg = (f"interrupted at step {tr.pos.round}; checkpoint written to "
               f"{out / CHECKPOINT} (continue with --resume)")
        if not getattr(args, "json", False):
            print("\n" + msg, file=sys.stderr)
        return EXIT_INTERRUPTED, {"error": "Interrupted", "message": msg,
                                  "step": tr.pos.round, "checkpoint": str(out / CHECKPOINT)}
    if tr.comm.main:
        tr.save_checkpoint()  # the final training state (resumable with more epochs)
    if cfg.early_stop is not None:
        tr.restore_best()
    payload = _finish(tr, model, cfg, out)
    if not tr.comm.main:
        return EXIT_OK, None  # (main prints no JSON for a None payload)
    if not getattr(args, "json", False):
        print(render_summary(payload))
    return EXIT_OK, payload


def _apply_overrides(cfg: TrainConfig, args):
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            raise SpecError("--steps must be at least 1")
        cfg.steps, cfg.epochs = args.steps, None
    elif getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise SpecError("--epochs must be at least 1")
        cfg.epochs, cfg.steps = args.epochs, None


def _finish(tr: Trainer, model, cfg: TrainConfig, out: Path) -> dict:
    values = tr.eval_values()
    final = {"train": tr.evaluate(tr.train_ds, values),
             "val": tr.evaluate(tr.val_ds, values),
             "test": tr.evaluate(tr.test_ds, values)}
    files = {"checkpoint": str(out / CHECKPOINT)}
    if not tr.comm.main:  # the evaluations above are collective; the files are rank 0's
        return {}
    if tr.pos.history:
        # the last row is the final test evaluation (epoch "test", columns test_*)
        test_row = {"epoch": "test", "step": tr.pos.round, "time": round(tr.pos.elapsed, 3),
                    **{f"test_{k}": v for k, v in final["test"].items()}}
        write_metrics_csv(out / METRICS, tr.pos.history + ([test_row] if final["test"] else []))
        files["metrics"] = str(out / METRICS)
        if plot_curves(out / CURVES, tr.pos.history, f"{model.name} on {cfg.data}",
                       model.losses):
            files["curves"] = str(out / CURVES)
    export_error = None
    try:
        model.export_onnx(out / ONNX_MODEL, {k: _numpy(v) for k, v in values.items()})
        files["onnx"] = str(out / ONNX_MODEL)
    except Exception as e:  # a model without ONNX rules still trains; say why
        export_error = f"{type(e).__name__}: {e}"
    p = tr.pos
    payload = {"model": model.name, "data": cfg.data, "backend": tr.backend, "seed": tr.seed,
               **({"processes": tr.comm.world} if tr.comm.active else {}),
               "epochs": round(p.round / tr.nb, 4), "steps": p.round,
               "time_s": round(p.elapsed, 3), "stopped_early": p.stopped,
               **({"compile_s": tr.compile_s} if tr.compile_s is not None else {}),
               **final, "run_dir": str(out), "files": files}
    if cfg.early_stop is not None:
        payload["best"] = {"metric": f"val.{cfg.early_stop.metric}", "value": p.best,
                           "epoch": p.best_epoch, "step": p.best_round}
    if export_error:
        payload["onnx_error"] = export_error
    return payload


def render_summary(payload: dict) -> str:
    e = payload["epochs"]
    lines = [f"trained {payload['model']} on {payload['data']}: {e:g} epoch{'' if e == 1 else 's'} "
             f"({payload['steps']} steps) in {payload['time_s']:.1f} s"
             f"{', stopped early' if payload['stopped_early'] else ''}"
             + (f" (of which torch.compile {payload['compile_s']:.1f} s)"
                if payload.get("compile_s") is not None else "")]
    for part in ("train", "val", "test"):
        if payload.get(part):
            lines.append(f"  {part:<5}  " + "  ".join(f"{k} {v:.4f}"
                                                      for k, v in payload[part].items()))
    if payload.get("best"):
        b = payload["best"]
        lines.append(f"  best {b['metric']} {b['value']:.4f} at epoch {b['epoch']:g} (restored)")
    lines.append(f"  run dir {payload['run_dir']}: " +
                 ", ".join(Path(f).name for f in payload["files"].values()))
    if payload.get("onnx_error"):
        lines.append(f"  (no model.onnx: {payload['onnx_error']})")
    return "\n".join(lines)
