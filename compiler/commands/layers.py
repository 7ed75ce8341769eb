"""The per-layer table of `dlc summary` / `dlc check`, in the style of torchinfo.

Computed from the elaborated graph, so it holds for any spec: parameters are named
``<instance path>.<param>`` (``encoder.0.self_attn.q_proj.W``), so each path prefix is
a row (nested for composites and `repeat`). A compute node belongs to the layer whose
parameter it reads (directly or through a shape op: a transpose of ``W``); its output
type gives the layer's output shape, and matmul / conv nodes give the MACs:
``prod(out) * K`` for a matmul over K, ``prod(out) * C_in * prod(kernel)`` for a conv.
FLOPs are 2 * MACs (one multiply, one add), as torchinfo and fvcore count them.
"""
from __future__ import annotations

import re

from compiler.core.types import shape_str

BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8}
_THROUGH = {"transpose", "reshape", "broadcast_to", "expand_dims", "cast", "squeeze"}


def eval_dim(d, dims: dict) -> int:
    """A dim (int, or "2*B*T", "T-1") with its symbols read from `dims` (missing: 1)."""
    if isinstance(d, int):
        return d
    expr = re.sub(r"[A-Za-z_]\w*", lambda m: str(int(dims.get(m.group(0), 1))), str(d))
    if not re.fullmatch(r"[\d*+\- ]+", expr):
        return 1
    return int(eval(expr, {"__builtins__": {}}))  # only digits and * + - are left


def _numel(shape, dims):
    n = 1
    for d in shape:
        n *= eval_dim(d, dims)
    return n


def _owner(g, nid, param_path, depth=2):
    """The instance path of a parameter this node reads (through shape ops), or None."""
    for a in g.node(nid).args:
        if a in param_path:
            return param_path[a]
        if depth and g.node(a).op in _THROUGH:
            p = _owner(g, a, param_path, depth - 1)
            if p:
                return p
    return None


def _macs(g, node, dims) -> int:
    t = node.type
    if not hasattr(t, "shape"):
        return 0
    if node.op == "matmul":
        a = g.type(node.args[0])
        return _numel(t.shape, dims) * eval_dim(a.shape[-1], dims)
    if node.op == "conv":
        w = g.type(node.args[1])
        return _numel(t.shape, dims) * _numel(w.shape[1:], dims)
    return 0


def layer_table(m, dims: dict | None = None, dtype: str = "f32") -> dict:
    dims = dict(dims or {})
    g = m.graph
    param_path = {}
    for nid in g.params:
        name = g.node(nid).name or ""
        param_path[nid] = name.rsplit(".", 1)[0] if "." in name else ""
    rows: dict[str, dict] = {}

    def row(path):
        if path not in rows:
            parts = path.split(".")
            rows[path] = {"layer": path, "name": parts[-1], "depth": len(parts) - 1,
                          "output_shape": None, "params": 0, "macs": 0, "_last": -1}
        return rows[path]

    for nid, path in param_path.items():
        if not path:
            continue
        parts = path.split(".")
        size = _numel(g.type(nid).shape, dims)
        for i in range(1, len(parts) + 1):
            row(".".join(parts[:i]))["params"] += size
    unowned_macs = 0
    for nid in g.topo_order():
        node = g.node(nid)
        if node.op in ("input", "param", "state", "noise", "const"):
            continue
        path = _owner(g, nid, param_path)
        macs = _macs(g, node, dims)
        if not path:
            unowned_macs += macs
            continue
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            r = row(".".join(parts[:i]))
            r["macs"] += macs
            if nid > r["_last"] and hasattr(node.type, "shape"):
                r["_last"], r["output_shape"] = nid, list(node.type.shape)
    # a layer's output: the latest node that reads its parameters, then what follows it
    # directly through elementwise ops (the activation of Dense(h, relu)) stays its own
    first = _first_params(param_path)
    ordered = sorted(rows.values(), key=lambda r: (first.get(r["layer"], 1 << 60), r["depth"]))
    for r in ordered:
        r.pop("_last", None)
        r["flops"] = 2 * r["macs"]
    total_params = sum(_numel(g.type(n).shape, dims) for n in g.params)
    total_macs = sum(r["macs"] for r in ordered if r["depth"] == 0) + unowned_macs
    by_dtype = {}
    for n in g.params:
        dt = dtype if g.type(n).dtype in BYTES else g.type(n).dtype
        by_dtype[dt] = by_dtype.get(dt, 0) + _numel(g.type(n).shape, dims) * BYTES.get(dt, 8)
    return {"rows": ordered, "total_params": total_params, "total_macs": total_macs,
            "total_flops": 2 * total_macs, "other_macs": unowned_macs, "dims": dims,
            "dtype": dtype, "param_bytes": sum(by_dtype.values()), "param_bytes_by_dtype": by_dtype,
            "hparams": {k: _plain(v) for k, v in g.meta.get("hparams", {}).items()}}


def _first_params(param_path) -> dict:
    """Each layer path (and every prefix of one) -> the smallest id of a parameter under
    it. One pass over the parameters: a scan of them per row was quadratic (2,000 rows
    of a 10k-node stack: seconds)."""
    first: dict = {}
    for n, p in param_path.items():
        if not p:
            continue
        parts = p.split(".")
        for i in range(1, len(parts) + 1):
            key = ".".join(parts[:i])
            if n < first.get(key, 1 << 60):
                first[key] = n
    return first


def _plain(v):
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _human(n: int) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= k:
            return f"{n / k:.2f}{unit}"
    return str(n)


def render_table(info: dict, title: str = "", color: bool = False) -> str:
    """The table as text, through rich (colour only when asked: a terminal, no NO_COLOR)."""
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title or None, show_lines=False, header_style="bold" if color else None)
    for col, just in (("layer", "left"), ("output shape", "left"), ("params", "right"),
                      ("MACs", "right"), ("FLOPs", "right")):
        t.add_column(col, justify=just)
    for r in info["rows"]:
        t.add_row("  " * r["depth"] + r["name"],
                  shape_str(r["output_shape"]) if r["output_shape"] is not None else "-",
                  f"{r['params']:,}", _human(r["macs"]), _human(r["flops"]))
    dims = ", ".join(f"{k}={v}" for k, v in info["dims"].items()) or "every symbolic dim = 1"
    foot = [f"total params: {info['total_params']:,}",
            f"param memory ({info['dtype']}): {info['param_bytes'] / 2**20:.3f} MiB "
            f"({info['param_bytes']:,} bytes)",
            f"total MACs: {info['total_macs']:,} ({_human(info['total_macs'])}), "
            f"FLOPs: {_human(info['total_flops'])}  [for {dims}]"]
    if info["hparams"]:
        foot.append("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in info["hparams"].items()))
    con = Console(width=110, color_system="auto" if color else None, force_terminal=color,
                  no_color=not color, record=True, file=_Null())
    con.print(t)
    for line in foot:
        con.print(line, highlight=False, markup=False)
    return con.export_text(styles=color).rstrip()


class _Null:
    def write(self, s):
        return len(s)

    def flush(self):
        pass
