"""A `train` block -> a validated `TrainConfig`, every mistake a located `SpecError`.

    train MLP(hidden = 256) on digits(image = false) {
      split 0.8 0.1 0.1
      batch 64
      epochs 30
      optimizer adam(lr = 2e-3)
      schedule cosine
      weight_decay 1e-4
      early_stop val.acc patience 8
    }

`train MODEL(hparams) on DATA(options) { ... }`: the hyperparameters override the
model's defaults (a command line `--set` overrides both). DATA is a registered dataset
name (`digits`, `moons`, ...) or a quoted `.npz`/`.csv` path (relative to the spec's
folder, then to the working directory); its options go to `compiler.datasets.load`
(`seed = N` there seeds a generator; default 0, independent of the training seed).
Every model input is fed from the dataset field of the same name.

Options (each at most once, one per line or separated by `;`):

`split TRAIN VAL [TEST]`
    Fractions of the dataset (summing to 1) for training, validation and test.
    Default `0.8 0.1 0.1`. The split is seeded by the dataset's `split_seed` option
    (default 0), never by the training seed, so runs with different seeds see the
    same parts (and `standardize="train"` statistics stay leak-free).
`batch N`
    Minibatch size (default 32). The last batch of an epoch may be smaller.
`epochs N` | `steps N`
    Train for N passes over the training part, or for N optimizer steps (rounds, with
    players). Default `epochs 10`. `dlc train --epochs/--steps` override them.
`optimizer NAME(k = v, ...)` | `optimizer NAME`
    `sgd`, `momentum`, `nesterov`, `adagrad`, `rmsprop`, `adam`, `adamw`, `signsgd`,
    `muon`, `svrg` with their options (see `compiler.optim`); `lr` is the base learning
    rate. Default `adam(lr = 1e-3)`, unless the block has update rules and no
    optimizer (then only the rules train). `svrg` recomputes the full-batch gradient
    at a snapshot of the parameters at the start of every epoch.
`schedule NAME(k = v, ...)` | `schedule NAME`
    Learning-rate schedule over the run's total number of steps: `constant`, `step`,
    `exponential`, `cosine` (options `min_lr`, `warmup`), `warmup`, `inverse_time`,
    `linear` (see `compiler.schedules`). Default constant.
`weight_decay X`
    L2 regularization of the *weights* only (rank >= 2 params; biases, gains and
    shifts are left alone): X * w is added to the gradient, like torch's
    `weight_decay`; with `adamw` the decay is decoupled. Same as giving the
    optimizer `weight_decay = X` (giving both is an error).
`l1 X`
    L1 penalty on the weights only: X * sign(w) is added to the gradient.
`clip_grad_norm X`
    Rescale the gradients so their global L2 norm is at most X.
`early_stop val.METRIC patience N [min | max]`
    Evaluate on the validation part every epoch (or `eval_every` steps); stop when
    METRIC (a loss or metric of the model) has not improved for N evaluations, and
    restore the parameters of the best evaluation. Mode: `max` for metrics whose
    name starts with `acc`, `min` otherwise.
`loss NAME`
    Which of the model's losses to minimise. Default: its only loss (an error when
    it declares several).
`seed N`
    Seed of parameter initialisation, batch order and noise (default 0). A nonzero
    `dlc train --seed` overrides it.
`average polyak(decay = 0.999)` | `average uniform`
    Keep a running (exponential or uniform) average of the parameters; evaluation,
    the checkpoint's `avg.*` tensors and the exported model use the average.
`average checkpoints(n = 5)`
    Evaluate and export the mean of the parameters at the last n evaluations
    (checkpoint averaging); not with `early_stop`.
`eval_every N`
    Evaluate (and log a metrics row, and checkpoint) every N steps instead of every
    epoch.
`player NAME { params PREFIX ...; loss NAME; optimizer ...; steps K; schedule ...;
weight_decay X; l1 X; clip_grad_norm X }`
    Several players (GANs): each owns the parameters whose names start with one of
    its PREFIXes (instance names such as `gen` or `critic.body`), minimises its own
    loss with its own optimizer, and is stepped K times (default 1) per round, in the
    order declared; all players' steps in a round see the round's batch (with fresh
    noise per step). Parameters of no player are frozen.
`NAME <- EXPR`
    Update rules (perceptron, Hebbian, Hopfield): evaluated in the model's scope in
    training mode, after its body (so they may use its local names); each step sets
    the param or state to EXPR. Params with a rule are not gradient-trained; without
    an `optimizer` only the rules train, and the model needs no loss. Not allowed
    together with players.

`constrain PREFIX ... clip(C) | max_norm(C, axis = 0) | nonneg`
    Project the named parameters after each optimizer step, inside the step graph
    (`compiler.training.constraints`); may repeat; also inside a player.
`augment INPUT noise(std) | flip(axis, p) | crop(pad)`
    Augment the training batches of a model input (`compiler.training.augment`).
`init_from "CHECKPOINT" [PREFIX ...]`, `freeze PREFIX ...`
    Fine-tuning: start params from a checkpoint's `params/`; keep params fixed
    (`compiler.training.finetune`).
`bagging K [INPUT]`
    K members, each on its own bootstrap sample, fed as the input `bag: f32[B, K]`
    (`compiler.training.bagging`).

Runs evaluate every loss and metric of the model (evaluation mode: dropout off,
batch-norm running statistics) on the validation part after each epoch, and on all
three parts at the end; see `compiler.training`.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import numpy as np

from dsl import ast as A
from dsl.errors import SpecError

from compiler.training.spec_options import (  # noqa: F401  (re-exported)
    _as_call, _check_optimizer, _check_schedule, _clean, _const, _name_span, _Options, _show)
from compiler.training.spec_types import (  # noqa: F401  (re-exported)
    DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_OPTIMIZER, DEFAULT_SPLIT, PLAYER_OPTIONS,
    TOP_OPTIONS, Call, EarlyStop, Group, TrainConfig)


# ---- entry points ------------------------------------------------------------------------

def find_train(program, model_name: str) -> A.TrainDef:
    """The train block of `model_name` in a program (the first, if there are several)."""
    for t in program.trains:
        if _model_name(t.model) == model_name:
            return t
    names = [_model_name(t.model) for t in program.trains]
    from compiler.elaborate.program import file_span as _file_span
    hint = (f"train blocks here are for: {', '.join(names)}" if names else
            f"add one: `train {model_name} on DATASET {{ optimizer adam(lr = 1e-3) }}`")
    raise SpecError(f"no train block for model `{model_name}` in {program.path}",
                    _file_span(program), hint=hint)


def train_block_hparams(program, model_name: str) -> dict:
    """The hyperparameters `model_name`'s train block gives (`{}` without a block)."""
    for t in program.trains:
        if _model_name(t.model) == model_name:
            return _model_hparams(program, t)
    return {}


def parse_train(model, train: A.TrainDef | None = None) -> TrainConfig:
    """Validate the train block of `model` (an `api.Model`) against that model."""
    prog = model.program
    train = train or find_train(prog, model.name)
    cfg = TrainConfig(model=model.name, hparams=_model_hparams(prog, train),
                      data="", data_options={}, data_seed=0, data_span=train.data.span,
                      span=train.span, base_dir=str(Path(prog.path).resolve().parent))
    cfg.data, cfg.data_options, cfg.data_seed = _data(prog, train.data)
    top = _Options(prog, train.body, TOP_OPTIONS, "train block")
    cfg.updates = [s for s in train.body if isinstance(s, A.Update)]
    players = [s for s in train.body if isinstance(s, A.Player)]

    cfg.split = top.split()
    cfg.batch = top.int("batch", DEFAULT_BATCH)
    cfg.epochs, cfg.steps = top.duration()
    cfg.seed = top.int("seed", 0, minimum=0)
    cfg.eval_every = top.int("eval_every", None)
    cfg.average = top.average()
    if cfg.average is not None and cfg.average.name == "checkpoints":
        # the mean of the params at the last n evaluations, kept by the runner (the step
        # graph has no running average then)
        cfg.checkpoint_average, cfg.average = cfg.average.kwargs["n"], None
        if "early_stop" in top.given:
            raise SpecError("`average checkpoints` cannot be combined with `early_stop` "
                            "(which evaluation's average to restore is ambiguous)",
                            top.given["average"].span)
    cfg.hparams.update(model.hparams)  # `dlc ... --set` wins over the train block
    full = model_for(model, cfg)
    cfg.early_stop = top.early_stop(full)
    if cfg.early_stop is not None and cfg.split[1] <= 0:
        raise SpecError("`early_stop` needs a validation part; the split gives it none",
                        cfg.early_stop.span, hint="e.g. `split 0.8 0.1 0.1`")
    cfg.update_targets = _check_updates(full, cfg.updates)
    if players and cfg.updates:
        raise SpecError("update rules `w <- ...` cannot be combined with players",
                        cfg.updates[0].span)
    if players:
        for name in ("loss", "optimizer", "schedule", "weight_decay", "l1", "clip_grad_norm"):
            if name in top.given:
                raise SpecError(f"`{name}` belongs inside each `player` block when a train block "
                                "has players", top.given[name].span)
        cfg.players = True
        cfg.groups = [_player(prog, full, p) for p in players]
        _check_disjoint(cfg.groups)
    else:
        cfg.groups = [_main_group(full, top, cfg)]
    _finetune(prog, full, top, cfg)
    from compiler.training import augment
    cfg.augment = augment.parse(prog, full, top.all.get("augment", []), _const)
    from compiler.training import bagging
    cfg.bagging = bagging.parse(prog, full, top.given.get("bagging"), _const)
    top_constraints = _constraints(prog, full, top.all.get("constrain", []))
    for g in cfg.groups:  # a top-level constraint projects its params in whichever group
        g.constraints = g.constraints + top_constraints
    return cfg


def _finetune(prog, model, top: _Options, cfg: TrainConfig):
    from compiler.training import finetune
    cfg.init_from = finetune.parse_init_from(prog, model, top.all.get("init_from", []),
                                             _param_group)
    cfg.frozen = finetune.parse_freeze(model, top.all.get("freeze", []), _param_group)
    for g in cfg.groups:  # frozen: no update and no optimizer slots, in every group
        g.params = [p for p in g.params if p not in cfg.frozen]


def _constraints(prog, model, opts, allowed=None) -> list:
    from compiler.training import constraints
    return constraints.parse(prog, model, opts, _param_group, _dotted, _const, allowed)


def model_for(model, cfg: TrainConfig):
    """`model` with the train block's hyperparameters (itself when they change nothing)."""
    if cfg.hparams == model.hparams:
        return model
    # the same class as `model` (any Model-like dataclass), so training needs no API import
    return dataclasses.replace(model, hparams=dict(cfg.hparams))


def _main_group(model, top: _Options, cfg: TrainConfig) -> Group:
    has_opt = "optimizer" in top.given
    rules_only = bool(cfg.updates) and not has_opt
    opt = top.call("optimizer", _check_optimizer) if has_opt else \
        (None if rules_only else Call(*DEFAULT_OPTIMIZER, cfg.span))
    trained = [p for p in model.params if p not in cfg.update_targets] if opt else []
    loss = top.loss(model, needed=bool(trained), span=cfg.span)
    group = Group("model", loss, opt, top.call("schedule", _check_schedule),
                  top.float("weight_decay", 0.0), top.float("l1", 0.0),
                  top.float("clip_grad_norm", None, positive=True), trained, span=cfg.span)
    return _check_regularizers(group, top)


def _player(prog, model, p: A.Player) -> Group:
    opts = _Options(prog, p.body, PLAYER_OPTIONS, f"player `{p.name}`")
    for s in p.body:
        if not isinstance(s, A.Option):
            raise SpecError(f"player `{p.name}` can hold options only", s.span)
    if "params" not in opts.given:
        raise SpecError(f"player `{p.name}` needs `params PREFIX ...` (which parameters it "
                        "trains)", p.span)
    prefixes, params = _param_group(model, opts.given["params"])
    opt = opts.call("optimizer", _check_optimizer) if "optimizer" in opts.given else \
        Call(*DEFAULT_OPTIMIZER, p.span)
    group = Group(p.name, opts.loss(model, needed=True, span=p.span), opt,
                  opts.call("schedule", _check_schedule), opts.float("weight_decay", 0.0),
                  opts.float("l1", 0.0), opts.float("clip_grad_norm", None, positive=True),
                  params, prefixes, opts.int("steps", 1), span=p.span)
    group.constraints = _constraints(prog, model, opts.all.get("constrain", []), params)
    return _check_regularizers(group, opts)


def _check_regularizers(group: Group, opts: _Options) -> Group:
    """`weight_decay` / `l1` options go into the optimizer's own options (so that AdamW
    decouples its decay); giving one both ways is ambiguous."""
    for name in ("weight_decay", "l1"):
        if name in opts.given and group.optimizer is not None and name in group.optimizer.kwargs:
            raise SpecError(f"`{name}` is given both as an option and to the optimizer",
                            _name_span(opts.given[name]),
                            notes=[("the optimizer's", group.optimizer.span)])
        if name in opts.given and group.optimizer is None:
            raise SpecError(f"`{name}` needs an optimizer (update rules ignore it)",
                            _name_span(opts.given[name]))
    return group


def optimizer_options(group: Group) -> dict:
    """The optimizer's keyword options with the group's `weight_decay` and `l1` added."""
    kw = dict(group.optimizer.kwargs)
    if group.weight_decay:
        kw["weight_decay"] = group.weight_decay
    if group.l1:
        kw["l1"] = group.l1
    return kw


# ---- the data expression -----------------------------------------------------------------

def _model_name(e) -> str:
    if isinstance(e, A.Call):
        e = e.func
    if isinstance(e, A.Name):
        return e.id
    raise SpecError("expected a model name, e.g. `train MLP on digits`", e.span)


def _model_hparams(prog, train: A.TrainDef) -> dict:
    if not isinstance(train.model, A.Call):
        _model_name(train.model)
        return {}
    name = _model_name(train.model)
    if name not in prog.models:
        close = difflib.get_close_matches(name, list(prog.models), n=1)
        raise SpecError(f"no model `{name}` in {prog.path}", train.model.func.span,
                        hint=f"did you mean `{close[0]}`?" if close else None)
    names = [h.name for h in prog.models[name].node.hparams]
    args = [_const(prog, a) for a in train.model.args]
    if len(args) > len(names):
        raise SpecError(f"model `{name}` takes at most {len(names)} hyperparameters, got "
                        f"{len(args)}", train.model.span)
    out = dict(zip(names, args))
    out.update({k.name: _const(prog, k.value) for k in train.model.kwargs})
    return out


def _data(prog, e) -> tuple[str, dict, int]:
    if isinstance(e, A.Call):
        base, kwargs = e.func, {k.name: _const(prog, k.value) for k in e.kwargs}
        if e.args:
            raise SpecError("dataset options are given by name, e.g. `digits(image = true)`",
                            e.args[0].span)
    else:
        base, kwargs = e, {}
    if isinstance(base, A.Name):
        name = base.id
    elif isinstance(base, A.Str):
        name = base.value
    else:
        raise SpecError("expected a dataset name or a quoted file path after `on`", e.span)
    seed = kwargs.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError("the dataset's `seed` must be an integer >= 0", e.span)
    return name, kwargs, seed


def load_data(cfg: TrainConfig, model):
    """Load and check the dataset: fields named and shaped like the model's inputs."""
    from compiler.training import datasets
    base = cfg.base_dir
    if base and not (Path(base) / cfg.data).exists() and Path(cfg.data).exists():
        base = None  # relative to the working directory instead
    try:
        ds = datasets.load(cfg.data, seed=cfg.data_seed, base_dir=base, **cfg.data_options)
    except datasets.DatasetError as e:
        raise SpecError(str(e), cfg.data_span) from None
    if cfg.bagging is not None:  # the bootstrap counts are the trainer's, not the data's
        from compiler.training import bagging
        ds = bagging.with_unit_counts(cfg.bagging, ds)
    fields = {}
    for name, t in model.inputs.items():
        if name not in ds.fields:
            raise SpecError(f"the model's input `{name}` has no field in dataset `{cfg.data}`",
                            cfg.data_span, hint=f"model inputs: {', '.join(model.inputs)}; "
                            f"dataset fields: {', '.join(ds.fields)}")
        fields[name] = _fit_field(name, ds.fields[name], t, cfg)
    return datasets.Dataset(fields, description=ds.description, classes=ds.classes,
                            label=ds.label if ds.label in fields else None, meta=ds.meta)


def _fit_field(name, arr: np.ndarray, t, cfg) -> np.ndarray:
    per_sample = tuple(arr.shape[1:])
    want = tuple(t.shape[1:])
    ok = len(t.shape) == arr.ndim and all(not isinstance(d, int) or d == s
                                           for d, s in zip(want, per_sample))
    if not ok:
        shown = ", ".join(str(d) for d in t.shape)
        raise SpecError(f"dataset field `{name}` is [{', '.join(['N', *map(str, per_sample)])}] but "
                        f"the model's input `{name}` is {t.dtype}[{shown}]", cfg.data_span)
    is_float = t.dtype.startswith("f")
    if not is_float and np.issubdtype(arr.dtype, np.floating):
        raise SpecError(f"dataset field `{name}` holds floats but the model's input `{name}` "
                        f"is {t.dtype}", cfg.data_span)
    np_dtype = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i64": np.int64,
                "i32": np.int32, "bool": np.bool_}[t.dtype]
    return arr.astype(np_dtype, copy=False)


# ---- parameter groups and update rules ---------------------------------------------------

def _param_group(model, opt: A.Option) -> tuple[list, list]:
    names = list(model.params)
    prefixes, chosen = [], []
    if not opt.args:
        raise SpecError("`params` expects instance names, e.g. `params gen`", opt.span)
    for a in opt.args:
        prefix = _dotted(a)
        if prefix is None:
            raise SpecError("`params` expects instance names such as `gen` or `critic.body`",
                            a.span)
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            roots = sorted({".".join(n.split(".")[:k]) for n in names
                            for k in range(1, n.count(".") + 1)})
            close = difflib.get_close_matches(prefix, roots, n=1)
            raise SpecError(f"no parameters under `{prefix}`", a.span,
                            hint=f"did you mean `{close[0]}`?" if close else
                            f"instances: {', '.join(roots) or 'none'}")
        prefixes.append(prefix)
        chosen += [h for h in hits if h not in chosen]
    return prefixes, chosen


def _dotted(e) -> str | None:
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Attr):
        head = _dotted(e.value)
        return None if head is None else f"{head}.{e.name}"
    return None


def _check_disjoint(groups):
    owner = {}
    for g in groups:
        for p in g.params:
            if p in owner:
                raise SpecError(f"parameter `{p}` belongs to both player `{owner[p]}` and "
                                f"player `{g.name}`", g.span)
            owner[p] = g.name


def _check_updates(model, updates) -> list:
    """Elaborate the rules once (errors are located) and return what they update."""
    if not updates:
        return []
    from compiler.elaborate import elaborate
    g = elaborate(model.program, model.model_name, model.hparams, training=True,
                  dims=model.dims, extra=updates)
    # batch-norm running statistics are updated without rules: not the rules' targets
    base = {model.train_graph.node(n).attrs["name"] for n in model.train_graph.updates}
    return [name for name in (g.node(n).attrs["name"] for n in g.updates) if name not in base]
