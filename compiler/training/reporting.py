"""What a run shows and leaves behind: the progress line, metrics.csv and the loss curves."""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path


class Progress:
    """A one-line progress bar on stderr (plain text and \\r), plus a line per evaluation."""

    WIDTH = 24

    def __init__(self, stream=None, every: float = 0.25):
        self.stream = stream or sys.stderr
        self.every = every
        self.last = 0.0

    def update(self, tr):
        now = time.perf_counter()
        if now - self.last < self.every and tr.pos.round < tr.total_rounds:
            return
        self.last = now
        frac = tr.pos.round / max(tr.total_rounds, 1)
        bar = "#" * int(frac * self.WIDTH)
        live = "  ".join(f"{k} {v:.4g}" for k, v in tr.pos.last.items())
        self.stream.write(f"\repoch {tr.pos.epoch + 1}  [{bar:<{self.WIDTH}}] "
                          f"{tr.pos.round}/{tr.total_rounds}  {live}  {tr.pos.elapsed:.1f}s\x1b[K")
        self.stream.flush()

    def row(self, tr, row: dict):
        train = "  ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
        val = "  ".join(f"{k[4:]} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        star = " *" if tr.pos.best_round == tr.pos.round and tr.cfg.early_stop else ""
        self.stream.write(f"\repoch {row['epoch']:g}: train {train}"
                          f"{'  | val ' + val if val else ''}{star}\x1b[K\n")
        self.stream.flush()


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


