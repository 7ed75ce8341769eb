"""The `dlc` command line.

Exit codes: 0 success, 1 a bad spec (a located DslError, rendered with the user's
line and a caret) or a failed check, 2 bad usage. `--json` prints one JSON object
on stdout. No Python traceback reaches a user for bad input.
"""
from __future__ import annotations

import argparse
import json
import sys

from dsl.errors import DslError

from compiler.core.types import RunDtypeError

from compiler.commands.usage import EXIT_OK, EXIT_SPEC, EXIT_USAGE, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 by itself; keep the message plain
        raise UsageError(f"{self.prog}: {message}")


def _add_common(p, model=True):
    p.add_argument("file", help="a .dl spec")
    if model:
        p.add_argument("--model", "-m", help="which model of the file (needed when it has several)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _hparams(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _count(minimum: int, what: str):
    """argparse type: an integer >= `minimum` (a count of steps, epochs, entries)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value
    return parse


_positive = _count(1, "positive")
_non_negative = _count(0, "non-negative")  # equiv --steps 0 compares no training step


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dlc", description="Compile and run .dl deep-learning specs.")
    p.add_argument("--version", action="store_true", help="print dlc's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="parse and type-check; print inputs, parameters, outputs")
    _add_common(c)
    c.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a hyperparameter")

    c = sub.add_parser("compile", help="lower to numpy, torch or onnx and write the artifact")
    _add_common(c)
    c.add_argument("--to", required=True, choices=["numpy", "torch", "onnx"])
    c.add_argument("-o", "--output", required=True, help="output file")
    c.add_argument("--train-step", action="store_true", help="ONNX: the whole training step")
    c.add_argument("--dtype", default="f32", choices=["f32", "f64", "f16", "bf16"],
                   help="run dtype (bf16: torch backend only)")
    c.add_argument("--seed", type=int, default=0, help="parameter initialisation seed")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")
    c.add_argument("--outputs", default=None, metavar="A,B",
                   help="which results the artifact computes (default: the model's outputs)")
    c.add_argument("--with-losses", action="store_true",
                   help="also compute the losses and metrics (and read the inputs they need)")
    c.add_argument("--checkpoint", default=None, metavar="RUN",
                   help="a run directory (or its checkpoint file): export its trained weights")

    c = sub.add_parser("gradcheck", help="symbolic gradients vs finite differences (float64)")
    _add_common(c)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-entries", type=_positive, default=64,
                   help="entries checked per tensor (all of them when the tensor is smaller)")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")
    c.add_argument("--dims", action="append", metavar="B=4,T=7", help="sizes of symbolic dims")

    c = sub.add_parser("equiv", help="compare backends: outputs, gradients and training steps")
    _add_common(c)
    c.add_argument("--steps", type=_non_negative, default=3, help="training steps compared (0: none)")
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--verbose", "-v", action="store_true", help="one row per tensor")
    c.add_argument("--no-color", action="store_true", help="no colour even on a terminal")
    c.add_argument("--random-inputs", action="store_true",
                   help="random inputs instead of batches of the train block's data set")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")
    c.add_argument("--dims", action="append", metavar="B=4,T=7", help="sizes of symbolic dims")

    c = sub.add_parser("train", help="train as the spec's train block says")
    _add_common(c)
    c.add_argument("--backend", default="numpy", choices=["numpy", "torch", "onnx"])
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    c.add_argument("--seed", type=int, default=None, help="overrides the train block's seed")
    c.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    c.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    c.add_argument("--epochs", type=_positive, default=None, help="override the train block's epochs")
    c.add_argument("--steps", type=_positive, default=None, help="override the train block's steps")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard scalars and the graph to <run dir>/tensorboard")
    c.add_argument("--no-color", action="store_true", help="no colour even on a terminal")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")
    c.add_argument("--nproc", type=int, default=None,
                   help="data-parallel: launch N local processes (torch.distributed.run)")
    c.add_argument("--dist-timeout", type=float, default=None,
                   help="seconds a collective waits for a missing rank (default 300)")
    c.add_argument("--dtype", default="f32", choices=["f32", "f64"], help="run dtype")
    c.add_argument("--force", action="store_true", help="overwrite the run in --out")
    c.add_argument("--compile", action="store_true",
                   help="torch.compile the whole train step (--backend torch only)")

    c = sub.add_parser("summary", help="per-layer table: output shapes, parameters, MACs/FLOPs")
    _add_common(c)
    c.add_argument("--dims", action="append", metavar="B=64,T=10", help="sizes of symbolic dims")
    c.add_argument("--dtype", default="f32", choices=["f16", "bf16", "f32", "f64"],
                   help="dtype of the parameter memory")
    c.add_argument("--no-color", action="store_true", help="no colour even on a terminal")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")

    c = sub.add_parser("graph", help="draw the typed graph (Graphviz): layers as clusters")
    _add_common(c)
    c.add_argument("-o", "--output", default=None, help="out.svg, out.png or out.dot")
    c.add_argument("--grad", action="store_true", help="add the gradient graph")
    c.add_argument("--train-step", action="store_true",
                   help="the whole train step: forward, gradients, optimizer update")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")

    c = sub.add_parser("export", help="write a trained run (its spec and weights) as an artifact")
    c.add_argument("run", help="a run directory of `dlc train` (or its checkpoint file)")
    c.add_argument("--to", default="onnx", choices=["numpy", "torch", "onnx"])
    c.add_argument("-o", "--output", default=None, help="output file (default RUN/model.<ext>)")
    c.add_argument("--outputs", default=None, metavar="A,B")
    c.add_argument("--with-losses", action="store_true")
    c.add_argument("--dtype", default="f32", choices=["f32", "f64", "f16", "bf16"],
                   help="run dtype (bf16: torch backend only)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    c = sub.add_parser("datasets", help="the data sets: fields, shapes and options")
    c.add_argument("name", nargs="?", help="one data set (default: all)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


class _Interrupts:
    """SIGINT as a flag as well as a KeyboardInterrupt.

    Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to
    be; inside a finaliser (`__del__`, a weakref callback) or a C callback it is
    printed as "Exception ignored" and swallowed, and the command would go on to exit
    0. The flag makes such a run exit 130 all the same. When `main` runs as the
    process's own command (argv None), SIGINT is ignored after it returns, so an
    interrupt during interpreter shut-down cannot turn the exit code into -2.
    """

    def __init__(self):
        self.seen = False
        self.previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def _unraisable(self, info):
        # an interrupt swallowed in a finaliser: record it instead of printing a
        # traceback; anything else goes to the hook that was there before
        if isinstance(info.exc_value, KeyboardInterrupt):
            self.seen = True
        else:
            self.previous_hook(info)

    def install(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def restore(self, process_exits: bool):
        import signal
        if self.previous is not None:
            sys.unraisablehook = self.previous_hook
            signal.signal(signal.SIGINT, signal.SIG_IGN if process_exits else self.previous)


def main(argv=None) -> int:
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    interrupts = _Interrupts().install()
    try:
        code = _main(argv)
    finally:
        interrupts.restore(own_process)
    if interrupts.seen and code != 130:
        # the interrupt was swallowed somewhere (see _Interrupts); the checkpoint the
        # run wrote before its final evaluation is intact, so say so and exit 130
        print("interrupted", file=sys.stderr)
        return 130
    return code


def _main(argv) -> int:
    parser = build_parser()
    want_json = "--json" in argv
    try:
        args = parser.parse_args(argv)
        if getattr(args, "version", False) and args.command is None:
            from compiler.api import version
            print(f"dlc {version()}")
            return EXIT_OK
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.argv = argv  # `dlc train --nproc N` relaunches itself with it
        handler = COMMANDS[args.command]
        code, payload = handler(args)
        if args.json and payload is not None:
            print(json.dumps(payload, default=_json_default))
        return code
    except UsageError as e:
        return _fail(want_json, {"error": "UsageError", "message": str(e)}, str(e), EXIT_USAGE)
    except RunDtypeError as e:  # e.g. --dtype bf16 --to numpy
        return _fail(want_json, {"error": "UsageError", "message": str(e)}, f"error: {e}", EXIT_USAGE)
    except DslError as e:
        return _fail(want_json, e.to_json(), e.render(), EXIT_SPEC)
    except KeyboardInterrupt:
        return _fail(want_json, {"error": "Interrupted"}, "interrupted", 130)
    except RecursionError:
        return _fail(want_json, {"error": "SpecError", "message": "the spec is nested too deeply"},
                     "error: the spec is nested too deeply to process", EXIT_SPEC)


def _fail(want_json, payload, text, code):
    if want_json:
        print(json.dumps(payload))
    else:
        print(text, file=sys.stderr)
    return code


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _load(args, train_block: bool = False, fix_dims: bool = True):
    """The model of `args.file`; with `train_block`, under its train block's hparams
    (the precedence: spec defaults < train block < --set)."""
    from pathlib import Path

    from compiler import api
    from compiler.commands.paths import check_spec_path
    check_spec_path(args.file)
    if not Path(args.file).exists():  # bad usage (exit 2), as for any other bad argument
        raise UsageError(f"no such file: {args.file}")
    from compiler.commands.deploy import check_device, parse_dims
    check_device(getattr(args, "backend", None), getattr(args, "device", "cpu"))
    return api.load(args.file, model=getattr(args, "model", None),
                    hparams=_hparams(getattr(args, "set", None)),
                    dims=parse_dims(getattr(args, "dims", None)) if fix_dims else {},
                    train_block=train_block)


# ---- commands --------------------------------------------------------------------------

def cmd_check(args):
    from compiler.commands.summary import summarize, render_summary
    from compiler.commands.deploy import check_train_block, render_train_check
    m = _load(args, train_block=True)
    info = summarize(m)
    train = check_train_block(m)  # located errors now, not at `dlc train`
    if train is not None:
        info["train"] = train
    if not args.json:
        print(render_summary(info))
        if train is not None:
            print(render_train_check(train))
        from compiler.commands.layers import layer_table, render_table
        print(render_table(layer_table(m), color=_color(args)))
    return EXIT_OK, info


def _color(args) -> bool:
    """Colour only on a terminal, and never with NO_COLOR or --no-color."""
    import os
    return (sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            and not getattr(args, "no_color", False))


def cmd_summary(args):
    from compiler.commands.layers import layer_table, render_table
    m = _load(args, fix_dims=False)  # the dims are for counting: shapes stay symbolic
    from compiler.commands.deploy import parse_dims
    info = layer_table(m, parse_dims(args.dims), dtype=args.dtype)
    info["model"] = m.name
    if not args.json:
        print(render_table(info, title=f"model {m.name}", color=_color(args)))
    return EXIT_OK, info


def cmd_compile(args):
    from compiler.commands.compile import compile_to, trained_model
    from compiler.commands.paths import check_output_file, writing
    check_output_file(args.output, "-o")
    m = _load(args, train_block=True)  # the model `dlc train` trains
    params = meta = None
    if args.checkpoint:
        m, params, meta = trained_model(m, args.checkpoint, set_hparams=_hparams(args.set))
    with writing(args.output, "-o"):
        info = compile_to(m, args.to, args.output, train_step=args.train_step, dtype=args.dtype,
                          seed=args.seed, outputs=_outputs(args.outputs),
                          with_losses=args.with_losses, params=params,
                          metadata=None if meta is None else {"checkpoint": str(args.checkpoint)})
    if not args.json:
        print(f"wrote {info['path']} ({info['backend']}{', train step' if args.train_step else ''}"
              f"{', trained weights' if params is not None else ''})"
              + (f" and {info['weights']}" if info.get("weights") else "")
              + (f", manifest {info['manifest']}" if info.get("manifest") else ""))
    return EXIT_OK, info


def _outputs(text):
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def cmd_export(args):
    from compiler.commands.deploy import export_run
    info = export_run(args.run, args.to, args.output, outputs=_outputs(args.outputs),
                      with_losses=args.with_losses, dtype=args.dtype)
    if not args.json:
        print(f"wrote {info['path']} ({info['backend']}, trained weights)"
              + (f" and {info['weights']}" if info.get("weights") else ""))
    return EXIT_OK, info


def cmd_datasets(args):
    from compiler.commands.deploy import datasets_info, render_datasets
    info = datasets_info(args.name)
    if not args.json:
        print(render_datasets(info))
    return EXIT_OK, {"datasets": info}


def cmd_gradcheck(args):
    from compiler.commands.gradcheck import ATOL, EPS, RTOL, gradcheck
    m = _load(args)
    if not m.losses:  # e.g. Hebbian/perceptron rules: no gradient is defined, none to check
        if not args.json:
            print(f"model `{m.name}` declares no loss: no gradients to check")
        return EXIT_OK, {"model": m.name, "ok": True, "tensors": [], "note": "no loss"}
    checks = gradcheck(m, seed=args.seed, max_entries=args.max_entries,
                       feeds=_data_batch(m, args))
    ok = all(c.ok for c in checks)
    if not args.json:
        print(f"gradcheck {m.name}: float64, eps={EPS:g}, atol={ATOL:g}, rtol={RTOL:g}")
        w = max(len(c.tensor) for c in checks) if checks else 10
        print(f"  {'loss':<10} {'tensor':<{w}} {'kind':<6} {'entries':>12} {'max abs err':>12} "
              f"{'max rel err':>12}")
        for c in checks:
            print(f"  {c.loss:<10} {c.tensor:<{w}} {c.kind:<6} {f'{c.checked}/{c.size}':>12} "
                  f"{c.max_abs:>12.3e} {c.max_rel:>12.3e}  {'ok' if c.ok else 'FAIL'}")
        print("all gradients match" if ok else "gradient mismatch")
    payload = {"model": m.name, "ok": ok, "eps": EPS, "atol": ATOL, "rtol": RTOL,
               "tensors": [c.__dict__ for c in checks]}
    return (EXIT_OK if ok else EXIT_SPEC), payload


def _data_batch(m, args):
    """A batch of the train block's data set (None without one, or with --dims)."""
    if getattr(args, "dims", None):
        return None
    from compiler.commands.deploy import data_batch
    return data_batch(m)


def cmd_equiv(args):
    from compiler.commands.equiv import run_equiv
    m = _load(args)
    args.color = _color(args)
    return run_equiv(m, args)


def cmd_train(args):
    from compiler.commands.paths import check_run_dir
    from compiler.commands.train import run_training
    from compiler.training.memory import tune_allocator
    tune_allocator()  # keep freed step temporaries (DLC_MALLOC=off to opt out)
    m = _load(args)
    check_run_dir(args.out, "--out")
    return run_training(m, args)


COMMANDS = {"check": cmd_check, "compile": cmd_compile, "gradcheck": cmd_gradcheck,
            "equiv": cmd_equiv, "train": cmd_train, "export": cmd_export,
            "datasets": cmd_datasets}
COMMANDS["summary"] = cmd_summary


def cmd_graph(args):
    from compiler.commands.graph_picture import write_graph
    m = _load(args)
    info = write_graph(m, args.output or f"{m.name}.svg", with_grad=args.grad,
                       train_step=args.train_step)
    if not args.json:
        if "message" in info:
            print(info["message"], file=sys.stderr)
        print(f"wrote {info['path']} ({len(info['layers'])} layer clusters)")
    return EXIT_OK, info


COMMANDS["graph"] = cmd_graph


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
