"""NumPy specifics of the generated module (the rest is `backends.pysource`)."""
from __future__ import annotations

from compiler.core.types import TensorType

from ..pysource import PyModuleGen, literal, quote
from .scope import NumpyScope

_NP_DTYPES = {"f64": "np.float64", "f32": "np.float32", "f16": "np.float16",
              "i64": "np.int64", "i32": "np.int32", "bool": "np.bool_"}


class NumpyGen(PyModuleGen):
    backend = "numpy"
    prelude_package = "backends.numpy"
    imports = ("import numpy as np",)
    no_dtype_why = "; NumPy has no bfloat16: run bf16 on the torch backend"
    scope_class = NumpyScope

    def dtype(self, dtype: str) -> str:
        """Float dtypes are the run dtype (np.float32 in an f32 run)."""
        if self.is_float(dtype):
            dtype = self.run_dtype
        return _NP_DTYPES[dtype]

    def full(self, shape, value, dtype: str) -> str:
        if len(shape) == 0:
            return f"np.array({literal(value)}, dtype={self.dtype(dtype)})"
        return f"np.full({self.shape(shape)}, {literal(value)}, dtype={self.dtype(dtype)})"

    def stack(self, items: str, axis: int) -> str:
        return f"np.stack({items}, axis={axis})"

    def read_source(self, node, var: str) -> str:
        t: TensorType = node.type
        return f"np.asarray(feeds[{quote(node.attrs['name'])}], dtype={self.dtype(t.dtype)})"

    def feed_dim(self, name: str, axis: int) -> str:
        return f"np.shape(feeds[{quote(name)}])[{axis}]"

    def signature(self) -> str:
        return "def run(feeds):"

    def header(self, graph, results) -> str:
        return (f'"""dlc: graph {graph.name!r} lowered to NumPy (run dtype {self.run_dtype}).\n\n'
                "`run(feeds)` takes a dict of arrays keyed by source name and returns a dict\n"
                "of results. As a script: `python this.py feeds.npz [out.npz]`.\n"
                '"""')

    def footer(self) -> str:
        return ('if __name__ == "__main__":\n'
                "    import sys\n"
                "    _out = run(dict(np.load(sys.argv[1])))\n"
                '    np.savez(sys.argv[2] if len(sys.argv) > 2 else "out.npz", **_out)\n'
                "    for _k, _v in _out.items():\n"
                "        print(_k, np.shape(_v))\n")
