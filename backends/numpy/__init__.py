"""The NumPy backend: a graph becomes the source of a plain NumPy module.

    prog = backends.numpy.lower(graph, {"y": y_node}, dtype="f32")
    prog({"x": x_array, "dense0.W": w})   # -> {"y": array}
    print(prog.source)                    # readable, one node a line
    prog.write("model.py")                # standalone: imports only numpy

The generated module defines ``run(feeds)``; `Program` compiles it once.
"""
from __future__ import annotations

import itertools

import numpy as np

from compiler.core.ir import Graph


from ..pysource import register_scan, register_source
from .codegen import NumpyGen

__all__ = ["lower", "Program", "NumpyGen"]

_counter = itertools.count()


register_scan("numpy")


class Program:
    """A compiled NumPy program: ``program(feeds) -> dict[str, np.ndarray]``.

    ``source`` is the generated module; ``feeds`` the source names it reads;
    ``results`` the result names, in order.
    """

    def __init__(self, source: str, feeds: list[str], results: list[str], name: str = "graph"):
        self.source = source
        self.feeds = tuple(feeds)
        self._feed_set = frozenset(self.feeds)
        self.results = tuple(results)
        self.filename = f"<dlc-numpy:{name}:{next(_counter)}>"
        register_source(self.filename, source)
        namespace: dict = {"__name__": f"dlc_numpy_{name}"}
        exec(compile(source, self.filename, "exec"), namespace)
        self._run = namespace["run"]

    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        if not self._feed_set <= feeds.keys():  # one set test: this runs every step
            missing = [k for k in self.feeds if k not in feeds]
            raise KeyError(f"missing feeds: {', '.join(missing)}")
        return {k: v if type(v) is np.ndarray else _as_arrays(v)
                for k, v in self._run(feeds).items()}

    def write(self, path) -> None:
        """Write the standalone module (``python path feeds.npz out.npz`` runs it)."""
        with open(path, "w") as f:
            f.write(self.source)

    def __repr__(self) -> str:
        return f"<numpy Program feeds={list(self.feeds)} results={list(self.results)}>"


def _as_arrays(v):
    """A result as arrays: a NumPy scalar (a rank-0 reduction) or a tuple of them."""
    return tuple(map(np.asarray, v)) if isinstance(v, tuple) else np.asarray(v)


def lower(graph: Graph, results: dict[str, int], dtype: str = "f32", **opts) -> Program:
    """Generate and compile the NumPy module computing ``results`` of ``graph``.

    ``dtype`` is the run dtype of every float node (``"f32"`` or ``"f64"``).
    """
    if opts:
        raise TypeError(f"unknown NumPy backend options: {', '.join(opts)}")
    register_scan("numpy")
    gen = NumpyGen(dtype).generate(graph, dict(results))
    return Program(gen.source, gen.feeds, list(results), graph.name or "graph")
