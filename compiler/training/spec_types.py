"""The validated train block: `TrainConfig`, its `Group`s (one optimizer's parameters)
and the small records of options (`Call`, `EarlyStop`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dsl.errors import Span

DEFAULT_SPLIT = (0.8, 0.1, 0.1)
DEFAULT_BATCH = 32
DEFAULT_EPOCHS = 10
DEFAULT_OPTIMIZER = ("adam", {"lr": 1e-3})

TOP_OPTIONS = ("split", "batch", "epochs", "steps", "optimizer", "schedule", "weight_decay",
               "l1", "clip_grad_norm", "early_stop", "loss", "seed", "average", "eval_every",
               "constrain", "init_from", "freeze", "augment", "bagging")
PLAYER_OPTIONS = ("params", "loss", "optimizer", "steps", "schedule", "weight_decay", "l1",
                  "clip_grad_norm", "constrain")


@dataclass
class Call:
    """`name(k = v, ...)` of an option (optimizer, schedule, average), with its span."""

    name: str
    kwargs: dict
    span: Span | None = None


@dataclass
class EarlyStop:
    metric: str
    patience: int
    mode: str  # "min" | "max"
    span: Span | None = None


@dataclass
class Group:
    """What one optimizer trains: the whole model, or one player's parameter group."""

    name: str
    loss: str | None
    optimizer: Call | None
    schedule: Call | None = None
    weight_decay: float = 0.0
    l1: float = 0.0
    clip_grad_norm: float | None = None
    params: list = field(default_factory=list)   # param names (resolved)
    prefixes: list = field(default_factory=list)
    steps: int = 1                                # steps per round (players)
    constraints: list = field(default_factory=list)  # [constraints.Constraint]
    span: Span | None = None


@dataclass
class TrainConfig:
    model: str
    hparams: dict
    data: str
    data_options: dict
    data_seed: int
    data_span: Span | None
    split: tuple = DEFAULT_SPLIT
    batch: int = DEFAULT_BATCH
    epochs: int | None = None
    steps: int | None = None
    seed: int = 0
    early_stop: EarlyStop | None = None
    average: Call | None = None
    eval_every: int | None = None
    groups: list = field(default_factory=list)   # [Group]: one, or one per player
    players: bool = False
    updates: list = field(default_factory=list)  # [A.Update]
    update_targets: list = field(default_factory=list)  # param/state names with a rule
    span: Span | None = None
    base_dir: str | None = None
    init_from: list = field(default_factory=list)  # [finetune.InitFrom]
    frozen: list = field(default_factory=list)     # param names no group updates
    augment: list = field(default_factory=list)    # [augment.Augment], training batches only
    bagging: object = None                         # bagging.Bagging | None
    checkpoint_average: int | None = None          # `average checkpoints(n)`: n

    @property
    def evaluating(self) -> bool:
        return self.split[1] > 0
