"""What a run shows and leaves behind: progress (rich bars or plain lines), TensorBoard
scalars, metrics.csv and the loss curves."""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def write_metrics_csv(path: Path, history: list):
    cols = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in history:
            w.writerow(row)


def plot_curves(path: Path, history: list, title: str, losses: list) -> bool:
    """Loss curves (left) and metric curves (right) per evaluation; False without
    matplotlib. `losses`: the model's loss names (the rest are metrics)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    keys = [k for k in (history[0] if history else {}) if k.startswith(("train_", "val_"))]
    for row in history:
        keys += [k for k in row if k.startswith(("train_", "val_")) and k not in keys]
    metrics = [k for k in keys if k.split("_", 1)[1] not in losses]
    losses = [k for k in keys if k not in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in history]
    for ax, group, label in ((axes[0], losses, "loss"), (axes[1], metrics, "metric")):
        for k in group:
            ax.plot(x, [r.get(k, float("nan")) for r in history], label=k,
                    linestyle="-" if k.startswith("train_") else "--")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True




class PlainProgress:
    """Not a terminal (a log file, CI): one plain line per evaluation, no \\r, no escapes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def update(self, tr):
        pass

    def row(self, tr, row: dict):
        vals = "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                         if k.startswith(("train_", "val_")) and isinstance(v, float))
        rate = row["step"] / max(row["time"], 1e-9)
        self.stream.write(f"epoch {row['epoch']:g}  step {row['step']}/{tr.total_rounds}  "
                          f"{vals}  {rate:.1f} steps/s  {row['time']:.1f}s\n")
        self.stream.flush()


class RichProgress:
    """On a terminal: rich's bars (the epoch and the whole run) with live metrics, steps
    per second and ETA; each evaluation row is printed above the bars."""

    def __init__(self, stream=None, color: bool = True):
        from rich.console import Console
        self.console = Console(file=stream or sys.stderr, no_color=not color)
        self.bars = None

    def _start(self, tr):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]:.1f} steps/s"), TimeElapsedColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(),
                             TextColumn("{task.fields[live]}"), console=self.console)
        self.bars.start()
        self.all = self.bars.add_task("run", total=tr.total_rounds, rate=0.0, live="")
        self.epoch = self.bars.add_task("epoch 1", total=tr.nb, rate=0.0, live="")

    def update(self, tr):
        if self.bars is None:
            self._start(tr)
        p = tr.pos
        rate = p.round / max(p.elapsed, 1e-9)
        live = "  ".join(f"{k} {v:.4g}" for k, v in p.last.items())
        self.bars.update(self.all, completed=p.round, rate=rate, live=live)
        self.bars.update(self.epoch, completed=p.batch, description=f"epoch {p.epoch + 1}",
                         rate=rate, live="")
        if p.round >= tr.total_rounds:
            self.close()

    def row(self, tr, row: dict):
        train = "  ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
        val = "  ".join(f"{k[4:]} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        self.console.print(f"epoch {row['epoch']:g}: train {train}"
                           f"{'  | val ' + val if val else ''}", highlight=False, markup=False)

    def close(self):
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


class TensorBoard:
    """`dlc train --tensorboard`: each evaluation row's losses, metrics and learning
    rates (per player: `gen.lr`) as scalars under train/, val/, lr/, and the layer
    table as text, through torch.utils.tensorboard's SummaryWriter."""

    def __init__(self, logdir, inner=None, summary_text: str | None = None, graph_def=None):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(logdir))
        self.inner = inner
        if summary_text:
            self.writer.add_text("model/summary", "```\n" + summary_text + "\n```", 0)
        if graph_def is not None:  # the model's typed graph (a GraphDef): the Graphs tab
            from tensorboard.compat.proto import event_pb2
            self.writer.file_writer.add_event(event_pb2.Event(graph_def=graph_def.SerializeToString()))

    def update(self, tr):
        if self.inner:
            self.inner.update(tr)

    def row(self, tr, row: dict):
        step = int(row["step"])
        for k, v in row.items():
            if not isinstance(v, (int, float)) or k in ("epoch", "step", "time"):
                continue
            if k.startswith("train_"):
                tag = "train/" + k[6:]
            elif k.startswith("val_"):
                tag = "val/" + k[4:]
            elif k == "lr" or k.endswith(".lr"):
                tag = "lr/" + k
            else:
                tag = k
            self.writer.add_scalar(tag, float(v), step)
        self.writer.flush()
        if self.inner:
            self.inner.row(tr, row)

    def close(self):
        self.writer.close()
        if self.inner and hasattr(self.inner, "close"):
            self.inner.close()


def make_progress(stream=None, color: bool | None = None):
    """rich bars on a terminal, plain lines elsewhere; colour off with NO_COLOR."""
    import os
    stream = stream or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return PlainProgress(stream)
    if color is None:
        color = not os.environ.get("NO_COLOR")
    return RichProgress(stream, color=color)
