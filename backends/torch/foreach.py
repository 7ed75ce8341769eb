"""Multi-tensor optimizer updates: independent per-parameter nodes as `torch._foreach_*`.

An optimizer in dlc is written per parameter (compiler/training/optim.py): Adam is
`lerp`, `lerp`, `adam_param` plus the weight decay's `mul`/`add` for each tensor,
SGD with momentum a `mul`/`add`/`sub` chain. Lowered one node at a time that is one
torch call per node per parameter; `torch.optim`'s multi-tensor path makes one
`torch._foreach_*` call per op over every parameter. Here the torch lowering does the
same for every spec, after the fact: the *update region* (nodes of these ops whose
every use is another such node or a `new:` result, i.e. the optimizer's arithmetic,
never the model's) is grouped by (op, attributes, operand layout), and each group of
two or more independent nodes becomes one `_foreach_` statement.

The values are the unfused lowering's, bit for bit: torch's foreach kernels apply
the same per-tensor op (on the CPU they loop over the list in C++; on CUDA they
batch the launches), and a shared operand is the same 0-d tensor. The statements
are scheduled by a topological sort of the graph with each group contracted to one
vertex, emitted where its last member was; a group whose members depend on each
other would close a cycle and is left unfused.
"""
from __future__ import annotations

import heapq

# op -> the foreach function; which operands may be one shared 0-d tensor
_BINARY = {"add": "torch._foreach_add", "sub": "torch._foreach_sub",
           "mul": "torch._foreach_mul", "div": "torch._foreach_div"}
_SHARED_OK = {"add": (0, 1), "mul": (0, 1), "div": (1,), "sub": ()}  # commutative or Tensor overload
_UNARY = {"sqrt": "torch._foreach_sqrt"}
REGION_OPS = set(_BINARY) | set(_UNARY) | {"lerp", "adam_param"}
# adam_param's step size and bias correction are shared scalars (its type rule)
_ADAM_SHARED = (3, 4)


def _key(graph, n):
    """The grouping key of node ``n``, or None when it cannot join a foreach call."""
    node = graph.node(n)
    t = graph.type(n)
    if not hasattr(t, "shape") or t.rank == 0:
        return None  # scalar arithmetic (the schedule's) gains nothing from a list
    layout = []
    for i, a in enumerate(node.args):
        at = graph.type(a)
        if tuple(at.shape) == tuple(t.shape) and at.dtype == t.dtype:
            if node.op == "adam_param" and i in _ADAM_SHARED:
                return None
            layout.append("list")
        elif at.rank == 0 and at.dtype == t.dtype and (
                (node.op in _BINARY and i in _SHARED_OK[node.op]) or
                (node.op == "adam_param" and i in _ADAM_SHARED)):
            layout.append(("shared", a))
        else:
            return None
    if node.op == "adam_param" and layout[:3] != ["list"] * 3:
        return None
    if node.op == "lerp" and layout != ["list", "list"]:
        return None
    if node.op in _BINARY and "list" not in layout:
        return None
    return (node.op, repr(sorted(node.attrs.items())), t.dtype, tuple(layout))


def _region(graph, order, results) -> set[int]:
    """Nodes of REGION_OPS whose every use is in the region or a `new:` result."""
    users: dict[int, list[int]] = {n: [] for n in order}
    for n in order:
        for a in graph.node(n).args:
            if a in users:
                users[a].append(n)
    updates = {v for k, v in results.items() if k.startswith("new:")}
    other_results = {v for k, v in results.items() if not k.startswith("new:")}
    region: set[int] = set()
    for n in reversed(order):  # users come later in a topological order
        if graph.node(n).op not in REGION_OPS or n in other_results:
            continue
        us = users[n]
        if (us or n in updates) and all(u in region for u in us):
            region.add(n)
    return region


def plan(graph, order, results) -> tuple[list[int], dict[int, list[int]]]:
    """(a lowering order, {first member: the members of its group in that order})."""
    region = _region(graph, order, results)
    groups: dict[tuple, list[int]] = {}
    for n in order:
        if n in region:
            k = _key(graph, n)
            if k is not None:
                groups.setdefault(k, []).append(n)
    live = [ms for ms in groups.values() if len(ms) > 1]
    depth = _depths(graph, order, region)
    split = False
    while True:
        sched, stuck = _contracted_sort(graph, order, live)
        if not stuck:
            break
        keep = [ms for i, ms in enumerate(live) if i not in stuck]
        if not split:
            # a group whose members read each other (SGD momentum's `add`s: the weight
            # decay's feeds the buffer's) splits by depth in the update region: nodes of
            # equal depth are independent, since a path from a region node stays in it
            for i in stuck:
                by_depth: dict[int, list[int]] = {}
                for m in live[i]:
                    by_depth.setdefault(depth[m], []).append(m)
                keep += [ms for ms in by_depth.values() if len(ms) > 1]
            split = True
        live = keep
    return sched, {ms[0]: ms for ms in live}


def _depths(graph, order, region) -> dict[int, int]:
    """Longest chain of region nodes ending at each region node."""
    depth: dict[int, int] = {}
    for n in order:
        if n in region:
            depth[n] = 1 + max((depth.get(a, 0) for a in graph.node(n).args), default=0)
    return depth


def _contracted_sort(graph, order, groups):
    """Kahn's sort with each group one vertex (ready when all its members' operands
    are), ties broken by the original position (a group's: its last member's)."""
    pos = {n: i for i, n in enumerate(order)}
    vert = {n: n for n in order}
    members: dict[object, list[int]] = {}
    for gi, ms in enumerate(groups):
        for m in ms:
            vert[m] = ("g", gi)
        members[("g", gi)] = ms
    prio = {v: pos[v] for v in order if not isinstance(vert[v], tuple)}
    prio.update({v: max(pos[m] for m in ms) for v, ms in members.items()})
    indeg = dict.fromkeys(prio, 0)
    succ: dict[object, list] = {v: [] for v in prio}
    selfdep = set()  # a member reading another member directly: a loop on the vertex
    for n in order:
        vn = vert[n]
        for a in set(graph.node(n).args):
            if a in vert and vert[a] == vn and a != n:
                selfdep.add(vn[1])
            elif a in vert and vert[a] != vn:
                succ[vert[a]].append(vn)
                indeg[vn] += 1
    ready = [(prio[v], i, v) for i, v in enumerate(prio) if indeg[v] == 0]
    heapq.heapify(ready)
    out, tie = [], len(prio)
    done = set()
    while ready:
        _, _, v = heapq.heappop(ready)
        done.add(v)
        out.extend(members.get(v, [v]) if isinstance(v, tuple) else [v])
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                tie += 1
                heapq.heappush(ready, (prio[w], tie, w))
    stuck = {v[1] for v in members if v not in done} | selfdep
    return out, stuck


def emit_group(scope, graph, members: list[int], node_hint) -> None:
    """One `_foreach_` statement (a few for adam_param) binding every member."""
    first = graph.node(members[0])
    op = first.op
    env = scope.env

    def lst(i):
        return "[" + ", ".join(env[graph.node(m).args[i]] for m in members) + "]"

    outs = [scope.bind(m, scope.fresh(node_hint(graph.node(m)))) for m in members]
    lhs = ", ".join(outs)
    note = f"  # {len(members)} tensors at once"
    if op == "lerp":
        scope.emit(f"{lhs} = torch._foreach_lerp({lst(0)}, {lst(1)}, {first.attrs['w']!r}){note}")
    elif op == "adam_param":
        # p - s m / (√v / bc2 + eps): the single-tensor rule's in-place chain, per list
        d = scope.fresh("adam_denom")
        step_size, bc2 = (env[a] for a in first.args[3:5])
        scope.emit(f"{d} = torch._foreach_sqrt({lst(2)}){note}")
        scope.emit(f"torch._foreach_div_({d}, {bc2})")
        scope.emit(f"torch._foreach_add_({d}, {first.attrs['eps']!r})")
        scope.emit(f"torch._foreach_div_({d}, {step_size})")
        scope.emit(f"{lhs} = torch._foreach_addcdiv({lst(0)}, {lst(1)}, {d}, value=-1.0)")
    elif op in _UNARY:
        scope.emit(f"{lhs} = {_UNARY[op]}({lst(0)}){note}")
    else:
        a, b = first.args
        la, lb = (graph.type(x).rank > 0 for x in (a, b))
        if la and lb:
            args = f"{lst(0)}, {lst(1)}"
        elif la:
            args = f"{lst(0)}, {env[b]}"
        else:  # shared first operand of a commutative op
            args = f"{lst(1)}, {env[a]}"
        scope.emit(f"{lhs} = {_BINARY[op]}({args}){note}")
