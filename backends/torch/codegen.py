"""PyTorch specifics of the generated module (the rest is `backends.pysource`)."""
from __future__ import annotations

import keyword

from compiler.core.types import RUN_DTYPES, TensorType

from ..pysource import PyModuleGen, literal, node_hint, quote
from . import foreach

_TORCH_DTYPES = {"f64": "torch.float64", "f32": "torch.float32", "f16": "torch.float16", "bf16": "torch.bfloat16",
                 "i64": "torch.int64", "i32": "torch.int32", "bool": "torch.bool"}


def attr_path(root: str, name: str) -> str:
    """Source reaching the parameter/buffer ``name`` (dotted) from module ``root``."""
    src = root
    for part in name.split("."):
        if part.isidentifier() and not keyword.iskeyword(part):
            src = f"{src}.{part}"
        else:
            src = f"getattr({src}, {quote(part)})"
    return src


class TorchGen(PyModuleGen):
    backend = "torch"
    prelude_package = "backends.torch"
    imports = ("import torch", "import torch.nn.functional as F")
    run_dtypes = RUN_DTYPES

    def __init__(self, run_dtype: str = "f32", fuse_foreach: bool = True):
        super().__init__(run_dtype)
        self.fuse_foreach = fuse_foreach
        self.groups: dict[int, list[int]] = {}

    # the optimizer's per-parameter nodes as multi-tensor `_foreach_*` calls (foreach.py)
    def schedule(self, graph, order, results):
        if not self.fuse_foreach:
            return order
        order, self.groups = foreach.plan(graph, order, results)
        return order

    def lower_top(self, scope, graph, n):
        if n in self.groups:
            foreach.emit_group(scope, graph, self.groups[n], node_hint)
        else:
            scope.lower_node(graph, n)

    def dtype(self, dtype: str) -> str:
        """Float dtypes are the run dtype (torch.float32 in an f32 run)."""
        if self.is_float(dtype):
            dtype = self.run_dtype
        return _TORCH_DTYPES[dtype]

    def full(self, shape, value, dtype: str) -> str:
        if any(not isinstance(d, int) for d in shape):
            return (f"torch.full({self.shape(shape)}, {literal(value)}, "
                    f"dtype={self.dtype(dtype)}, device=_dev)")
        # A static constant is built once, with the module, as a non-persistent
        # buffer (moved by .to(device), absent from state_dict): not on every call.
        consts = self.__dict__.setdefault("consts", {})
        key = (tuple(shape), repr(value), self.dtype(dtype))
        if key not in consts:
            consts[key] = (f"_const{len(consts)}", tuple(shape), value, self.dtype(dtype))
        return f"self.{consts[key][0]}"

    def stack(self, items: str, axis: int) -> str:
        return f"torch.stack({items}, dim={axis})"

    def read_source(self, node, var: str) -> str:
        t: TensorType = node.type
        name = node.attrs["name"]
        if node.op in ("param", "state"):
            return f"{self.helper('param_or_feed')}(feeds, {quote(name)}, {attr_path('self', name)})"
        return f"torch.as_tensor(feeds[{quote(name)}], dtype={self.dtype(t.dtype)}, device=_dev)"

    def feed_dim(self, name: str, axis: int) -> str:
        return f"feeds[{quote(name)}].shape[{axis}]"

    def prologue(self, scope, sources) -> list[str]:
        g = self.graph
        held = g.params + g.states
        if held:
            where = attr_path("self", g.node(held[0]).attrs["name"])
            return [f"_dev = {where}.device"]
        fed = [n for n in sources if g.node(n).op in ("input", "noise")]
        if fed:
            name = g.node(fed[0]).attrs["name"]
            return [f"_dev = {self.helper('device_of')}(feeds[{quote(name)}])"]
        return ['_dev = torch.device("cpu")']

    def signature(self) -> str:
        return "def forward(self, feeds):"

    def header(self, graph, results) -> str:
        return (f'"""dlc: graph {graph.name!r} lowered to PyTorch (run dtype {self.run_dtype}).\n\n'
                "`Model()(feeds) -> dict`: an nn.Module holding every param and state under\n"
                "its dlc name (zeros: load a state_dict); feeds hold inputs and noise, and\n"
                "may override a param or state by name.\n"
                '"""')

    def footer(self) -> str:
        g = self.graph
        rows = []
        for n in g.params + g.states:
            node = g.node(n)
            t: TensorType = node.type
            if any(not isinstance(d, int) for d in t.shape):
                raise ValueError(f"{node.op} {node.attrs['name']!r} has a symbolic shape {t}; "
                                 "params and states need static shapes")
            rows.append(f"    ({quote(node.op)}, {quote(node.attrs['name'])}, "
                        f"{literal(tuple(t.shape))}, {self.dtype(t.dtype)}),")
        hold = self.helper("hold")
        consts = [f"    ({quote(name)}, {literal(shape)}, {literal(value)}, {dt}),"
                  for name, shape, value, dt in self.__dict__.get("consts", {}).values()]
        return "\n".join([
            "# (kind, dlc name, shape, dtype) of every param and state",
            "HELD = (", *rows, ")",
            "# (attribute, shape, value, dtype) of every constant, built once",
            "CONSTS = (", *consts, ")",
            "",
            "",
            'def build(module, device="cpu"):',
            '    """Register every param and state of HELD on `module` (zeros), and the constants."""',
            "    for kind, name, shape, dtype in HELD:",
            f"        {hold}(module, kind, name, shape, dtype, device)",
            "    for name, shape, value, dtype in CONSTS:",
            "        module.register_buffer(name, torch.full(shape, value, dtype=dtype, device=device),",
            "                               persistent=False)",
            "",
            "",
            "class Model(torch.nn.Module):",
            '    def __init__(self, device="cpu"):',
            "        super().__init__()",
            "        build(self, device)",
            "",
            "    def forward(self, feeds):",
            "        return forward(self, feeds)",
        ])
