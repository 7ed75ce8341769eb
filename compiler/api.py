"""The public Python API.

    from compiler import api as dlc

    m = dlc.load("specs/mlp.dl")                 # optionally model=, hparams=, dims=
    m.inputs, m.params, m.outputs                # names -> TensorType (outputs: (kind, type))
    params = m.init_params(seed=0)               # name -> np.ndarray
    out = m.run({"x": x, "y": y}, params, backend="numpy")       # outputs, losses, metrics
    g = m.gradients("ce", {"x": x, "y": y}, params)              # d ce / d every param
    g = m.gradients("ce", feeds, params, wrt=["x"])              # ... or inputs
    m.export_onnx("mlp.onnx", params)            # inference model: the `output`s only
    m.export_onnx("all.onnx", params, with_losses=True)          # ... plus losses, metrics
    m = m.with_train_block()                     # the train block's hyperparameters
    m.export_onnx("step.onnx", params, train_step=True)          # needs a train block

Backends are imported only when used; ONNX export never imports torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from compiler.core import backend_registry, noise
from compiler.transform.autodiff import grad as _grad
from compiler.elaborate import Program, elaborate, load_program
from compiler.core.init import initial_value
from compiler.core.ir import Graph
from compiler.core.index_ranges import index_limits, out_of_range
from compiler.transform.passes import optimize
from compiler.core.types import TensorType

GRAD_PREFIX = "grad:"


def load(path=None, *, model: str | None = None, hparams: dict | None = None,
         dims: dict | None = None, text: str | None = None,
         train_block: bool = False) -> "Model":
    """Parse, elaborate and type-check one model of a spec file (or of `text`).

    Hyperparameters: the model's defaults, then (with `train_block=True`) those of its
    train block, then `hparams` (what `--set` gives on the command line)."""
    prog = load_program(path, text=text)
    m = Model(prog, model, dict(hparams or {}), dict(dims or {}))
    return m.with_train_block() if train_block else m


@dataclass
class Model:
    program: Program
    model_name: str | None = None
    hparams: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)

    def __post_init__(self):
        self.graph  # elaborate now, so errors surface at load time
        self._programs: dict = {}

    # ---- graphs -------------------------------------------------------------------
    @cached_property
    def graph(self) -> Graph:
        """The evaluation-mode graph (dropout off, batch norm on running statistics)."""
        return elaborate(self.program, self.model_name, self.hparams, training=False, dims=self.dims)

    @cached_property
    def train_graph(self) -> Graph:
        """The training-mode graph (dropout on, batch statistics, state updates)."""
        g = self.graph
        if not g.meta.get("reads_training", True):
            # nothing in the spec reads `training`: both modes build the same graph, so
            # the model is elaborated once (on a 10k-node stack that is ~0.6 s a time)
            t = g.copy()
            t.meta["training"] = True
            return t
        return elaborate(self.program, self.model_name, self.hparams, training=True, dims=self.dims)

    @property
    def name(self) -> str:
        return self.graph.name

    def with_train_block(self) -> "Model":
        """This model with its train block's hyperparameters under its own (the
        precedence: spec defaults < train block < `hparams`); itself without a block."""
        from compiler.training.spec import train_block_hparams
        merged = {**train_block_hparams(self.program, self.name), **self.hparams}
        if merged == self.hparams:
            return self
        return dataclasses.replace(self, hparams=merged)

    def inference_results(self, outputs: list[str] | None = None, *,
                          with_losses: bool = False) -> dict[str, int]:
        """What an inference artifact computes: the model's `output`s (or `outputs`),
        plus its losses and metrics with `with_losses`. Inputs that only the left-out
        results read (labels) drop out of the artifact with them."""
        g = self.graph
        if outputs:
            unknown = [k for k in outputs if k not in g.outputs]
            if unknown:
                raise KeyError(f"no output named {unknown[0]!r}; the model has "
                               f"{', '.join(g.outputs)}")
            names = list(outputs)
        else:
            names = [k for k, kind in g.output_kinds.items() if kind == "output"]
            if not names:  # a model of losses only: nothing else to export
                names = list(g.outputs)
        if with_losses:
            names += [k for k, kind in g.output_kinds.items()
                      if kind in ("loss", "metric") and k not in names]
        return {k: g.outputs[k] for k in names}

    # ---- signature ------------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, TensorType]:
        g = self.graph
        return {g.node(n).attrs["name"]: g.type(n) for n in g.inputs}

    @property
    def params(self) -> dict[str, TensorType]:
        g = self.train_graph
        return {g.node(n).attrs["name"]: g.type(n) for n in g.params}

    @property
    def states(self) -> dict[str, TensorType]:
        g = self.train_graph
        return {g.node(n).attrs["name"]: g.type(n) for n in g.states}

    @property
    def outputs(self) -> dict[str, tuple[str, TensorType]]:
        g = self.graph
        return {k: (g.output_kinds[k], g.type(n)) for k, n in g.outputs.items()}

    @property
    def losses(self) -> list[str]:
        return [k for k, (kind, _) in self.outputs.items() if kind == "loss"]

    def param_count(self) -> int:
        return int(sum(np.prod(t.shape, dtype=np.int64) for t in self.params.values()))

    # ---- values ---------------------------------------------------------------------
    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Initial parameter and state values, identical on every backend."""
        g = self.train_graph
        return {g.node(n).attrs["name"]: initial_value(g.node(n).attrs["init"], g.type(n).shape,
                                                      seed, g.node(n).attrs["name"])
                for n in g.params + g.states}

    def noise(self, feeds: dict, seed: int = 0, step: int = 0, *, training: bool = False) -> dict:
        return noise.draw(self.train_graph if training else self.graph, feeds, seed, step)

    # ---- running --------------------------------------------------------------------
    def lower(self, results: dict[str, int], graph: Graph, backend: str = "numpy",
                dtype: str = "f32", device: str = "cpu", optimized: bool = True):
        """Lower `results` of `graph` on a backend (cached by results, backend, dtype, device)."""
        key = (id(graph), tuple(sorted(results.items())), backend, dtype, device, optimized)
        if key not in self._programs:
            g, res = optimize(graph, results) if optimized else (graph, results)
            mod = backend_registry.load(backend)
            if backend == "torch":
                prog = mod.lower(g, res, dtype=dtype, device=device)
            elif backend == "onnx":
                prog = mod.lower_program(g, res, dtype=dtype, device=device)
            else:
                prog = mod.lower(g, res, dtype=dtype)
            self._programs[key] = (prog, g)
        return self._programs[key][0]

    def _feeds(self, graph: Graph, data: dict, params: dict | None, seed: int, step: int) -> dict:
        feeds = dict(params or {})
        feeds.update(data)
        feeds.update({k: v for k, v in noise.draw(graph, feeds, seed, step).items() if k not in data})
        return feeds

    def run(self, data: dict, params: dict | None = None, *, backend: str = "numpy",
            dtype: str = "f32", device: str = "cpu", training: bool = False,
            outputs: list[str] | None = None, seed: int = 0, step: int = 0) -> dict:
        """Forward pass: every output, loss and metric (or just `outputs`)."""
        g = self.train_graph if training else self.graph
        names = outputs or list(g.outputs)
        res = {k: g.outputs[k] for k in names}
        check_feeds(g, data)
        prog = self.lower(res, g, backend, dtype, device)
        return to_numpy(prog(self._feeds(g, data, params if params is not None
                                                 else self.init_params(), seed, step)))

    def gradient_results(self, loss: str, wrt: list[str] | None = None, *,
                         training: bool = False) -> tuple[Graph, dict[str, int]]:
        """The loss and its symbolic gradients as named results (``grad:<name>``)."""
        g = self.train_graph if training else self.graph
        if loss not in g.outputs or g.output_kinds[loss] != "loss":
            raise KeyError(f"no loss named {loss!r}; losses: {', '.join(self.losses)}")
        sources = {g.node(n).attrs["name"]: n for n in g.params + g.inputs}
        if wrt is None:
            wrt = [g.node(n).attrs["name"] for n in g.params]
        missing = [w for w in wrt if w not in sources]
        if missing:
            raise KeyError(f"cannot differentiate with respect to {', '.join(missing)}")
        key = ("grad", loss, tuple(wrt), training)
        if key not in self._programs:
            nodes = _grad(g, g.outputs[loss], [sources[w] for w in wrt])
            res = {loss: g.outputs[loss]}
            res.update({GRAD_PREFIX + w: n for w, n in zip(wrt, nodes)})
            self._programs[key] = res
        return g, self._programs[key]

    def gradients(self, loss: str, data: dict, params: dict | None = None, *,
                  wrt: list[str] | None = None, backend: str = "numpy", dtype: str = "f32",
                  device: str = "cpu", training: bool = False, seed: int = 0, step: int = 0) -> dict:
        """d loss / d each of `wrt` (default: every parameter), plus the loss itself."""
        g, res = self.gradient_results(loss, wrt, training=training)
        prog = self.lower(res, g, backend, dtype, device)
        out = to_numpy(prog(self._feeds(g, data, params if params is not None
                                                else self.init_params(), seed, step)))
        return {k[len(GRAD_PREFIX):] if k.startswith(GRAD_PREFIX) else k: v for k, v in out.items()}

    # ---- export ---------------------------------------------------------------------
    def export_onnx(self, path, params: dict | None = None, *, train_step: bool = False,
                    dtype: str = "f32", outputs: list[str] | None = None,
                    with_losses: bool = False, metadata: dict | None = None):
        """Write the ONNX inference model (params as initializers; its `output`s, or
        `outputs`, plus losses and metrics `with_losses`), or the first player's train
        step: update only, its logged metrics in PATH.metrics.onnx beside it."""
        onnx_backend = backend_registry.load("onnx")
        if train_step:
            # the update-only step (loss, lr, new:X), as `dlc compile --train-step` writes
            # it; the logged metrics go to a separate model beside it, PATH.metrics.onnx
            # (the first player's; the whole regime: compiler/training/export_regime.py)
            import copy
            from pathlib import Path
            from compiler.training.spec import model_for, parse_train
            from compiler.training.step import build_step, total_rounds
            cfg = parse_train(self)
            m = model_for(self, cfg)
            grp = cfg.groups[0]
            sg = build_step(m, cfg, grp, total_rounds(cfg, m) * grp.steps)
            g, res = optimize(sg.graph, sg.update_only())
            model = onnx_backend.lower(g, res, dtype=dtype, params_as="inputs", name=self.name)
            metrics = {k: n for k, n in sg.metric_results().items() if k in sg.logged}
            if metrics:
                mg = copy.copy(sg.graph)
                mg.updates = {}  # the state updates belong to the step model
                og, ores = optimize(mg, metrics)
                side = onnx_backend.lower(og, ores, dtype=dtype, params_as="inputs",
                                          name=f"{self.name}.metrics")
                self._stamp(side, metadata)
                p = Path(path)
                onnx_backend.save(side, str(p.with_name(p.stem + ".metrics.onnx")))
        else:
            g = self.graph
            og, res = optimize(g, self.inference_results(outputs, with_losses=with_losses))
            values = params if params is not None else self.init_params()
            model = onnx_backend.lower(og, res, dtype=dtype, params_as="initializers",
                                       param_values=values, name=self.name)
        self._stamp(model, metadata)
        onnx_backend.save(model, str(path))  # without `import onnx` (ml_dtypes: ~0.5 s)
        return model


    def _stamp(self, model, metadata: dict | None):
        """`metadata_props`: dlc's version, the spec's content hash, the hyperparameters
        (and whatever `metadata` adds, e.g. the run a checkpoint came from)."""
        import json
        props = {"dlc.version": version(), "dlc.spec_hash": self.spec_hash(),
                 "dlc.model": self.name, "dlc.hparams": json.dumps(self.hparams, sort_keys=True),
                 "dlc.dims": json.dumps(self.dims, sort_keys=True)}
        props.update({f"dlc.{k}": v if isinstance(v, str) else json.dumps(v, default=str)
                      for k, v in (metadata or {}).items()})
        del model.metadata_props[:]  # set directly on the protobuf: no `import onnx`
        for k, v in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        model.producer_name, model.producer_version = "dlc", version()
        model.doc_string = f"dlc model {self.name} from {self.program.path}"

    def spec_hash(self) -> str:
        """sha256 (16 hex digits) of the spec file's text and the text of its imports."""
        return spec_hash(self.program)


def version() -> str:
    """The installed dlc's version ("0+unknown" when run from a bare checkout)."""
    from importlib import metadata
    try:
        return metadata.version("dlc")
    except metadata.PackageNotFoundError:  # pragma: no cover - not pip-installed
        return "0+unknown"


def spec_hash(program) -> str:
    """sha256 (16 hex digits) of the spec's text and the texts of its imports."""
    from compiler.training.checkpoint import spec_hash as _hash
    return _hash(program)


class FeedError(ValueError):
    """A fed array does not fit the input it is fed to (the message names the input)."""


def check_feeds(graph: Graph, data: dict) -> None:
    """Each fed input against its declared type: a wrong rank or a wrong static dim is
    a `FeedError` naming the input, before any backend sees it (missing inputs are the
    backend's to report: a result may not need them)."""
    for n in graph.inputs:
        name = graph.node(n).attrs["name"]
        if name not in data:
            continue
        t = graph.type(n)
        shape = tuple(np.shape(data[name]))
        bad = len(shape) != len(t.shape) or any(isinstance(d, int) and d != s
                                                 for d, s in zip(t.shape, shape))
        if bad:
            raise FeedError(f"input `{name}` has shape {list(shape)} but the model declares "
                             f"{t.dtype}[{', '.join(map(str, t.shape))}]")
        limit = index_limits(graph).get(name)
        span = out_of_range(data[name], limit[0]) if limit else None
        if span:
            raise FeedError(f"input `{name}` holds values in [{span[0]}, {span[1]}], but the "
                            f"model uses it to index a table of {limit[0]} rows")


def _bfloat16():
    import torch  # only reached with torch tensors in hand
    return torch.bfloat16


def to_numpy(out: dict) -> dict:
    """A program's results as NumPy arrays (torch tensors are detached and moved to the CPU)."""
    res = {}
    for k, v in out.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu()
            if v.dtype is _bfloat16():  # NumPy has no bfloat16: widen (exactly) to f32
                v = v.float()
            v = v.numpy()
        res[k] = np.asarray(v)
    return res
