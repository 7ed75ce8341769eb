"""The table `dlc equiv` prints, and its JSON."""
from __future__ import annotations

from dataclasses import asdict

from compiler.commands.equiv.compare import FACTOR, MAX_SCALE, REFERENCE, Comparison, EquivReport

# ---- the table -------------------------------------------------------------------------------

_VERDICT_STYLE = {"ok": "green", "FAIL": "bold red", "ERROR": "bold red", "ill-conditioned": "yellow"}


def _table(head: tuple, rows: list, left: int, color: bool, verdict: int | None = None) -> list[str]:
    """A rich table as text lines, like `check`/`summary`: colour only when `color`
    (a terminal, no NO_COLOR / --no-color), plain characters otherwise. The first `left`
    columns are left-aligned, the rest right-aligned; column `verdict` is coloured."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    t = Table(box=box.SIMPLE_HEAD, header_style="bold" if color else None, pad_edge=False)
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i < left or i == verdict else "right", no_wrap=True)
    for r in rows:
        cells = [Text(str(c)) for c in r]
        if color and verdict is not None:
            cells[verdict].stylize(_VERDICT_STYLE.get(str(r[verdict]), ""))
        t.add_row(*cells)
    con = Console(width=400, color_system="auto" if color else None, force_terminal=color,
                  no_color=not color, record=True, file=_Null())
    con.print(t)
    return [ln.rstrip() for ln in con.export_text(styles=color).splitlines() if ln.strip()]


class _Null:
    def write(self, s):
        return len(s)

    def flush(self):
        pass


def render(report: EquivReport, verbose: bool = True, color: bool = False) -> str:
    if not verbose:
        return render_short(report, color)
    lines = [f"equiv {report.model}: reference {REFERENCE}, seed {report.seed}, dims={report.dim}, "
             f"data {report.data}, {report.steps} train step(s); backends: {', '.join(report.backends[1:])}"]
    rows = []
    for c, steps in _merge_steps(report.comparisons):
        tensor = c.tensor if not steps else (
            f"step {steps[0]}: {c.tensor}" if len(steps) == 1 else
            f"steps {steps[0]}-{steps[-1]}: {c.tensor}")
        if c.error:
            tol, verdict = "-", "ERROR"
        elif c.ill_conditioned:
            tol = f"n/a (sensitivity {c.sensitivity:.3g}, spread {c.spread:.3g})"
            verdict = "ill-conditioned"
        else:
            tol = f"{c.atol:.3g}+{c.rtol:.3g}|r|" + (f" (x{c.tol_scale:.3g})"
                                                    if c.tol_scale > 1 else "")
            verdict = "ok" if c.ok else "FAIL"
        rows.append((c.phase, tensor, c.pair, "-" if c.error else f"{c.max_abs:.2e}",
                     "-" if c.error else f"{c.max_rel:.2e}", tol, verdict))
    head = ("phase", "tensor", "backend pair", "max abs err", "max rel err", "tolerance", "ok")
    lines += _table(head, rows, 3, color, verdict=6)
    for c in report.comparisons:
        if c.error:
            lines.append(f"error: {c.phase} on {c.backend}: {c.error}")
    for s in report.skipped:
        lines.append(f"skipped {s['phase']}: {s['reason']}")
    if any(c.ill_conditioned for c in report.comparisons):
        lines.append("ill-conditioned: the reference moves by more than "
                     f"{MAX_SCALE / FACTOR:g}x the tolerance when its inputs move by one "
                     "rounding error (sensitivity), or the other float32 backends are that far "
                     "from it (spread); such tensors are not judged and do not fail the run")
    for d in report.divergences:
        where = f" at step {d.step}" if d.step else ""
        lines.append(f"divergence in {d.phase}{where}, {d.backend} vs {d.reference} "
                     f"({d.nodes_compared} nodes compared): {d.message}")
        if d.found:
            if d.line is not None:
                lines.append(f"    {d.line}")
                if d.col:
                    lines.append("    " + " " * (d.col - 1) + "^")
            if d.index is not None:
                lines.append(f"    worst entry {list(d.index)}: {d.value!r} ({d.backend}) vs "
                             f"{d.ref_value!r} ({d.reference}); args: {', '.join(d.args)}")
    n_bad = len(report.failures())
    lines.append("all backends agree" if report.ok else
                 f"{n_bad} of {len(report.comparisons)} comparisons out of tolerance")
    return "\n".join(lines)


def render_short(report: EquivReport, color: bool = False) -> str:
    """`dlc equiv` without --verbose: one row per phase and backend pair (how many
    tensors, the worst errors, how many out of tolerance), then the failures in full."""
    groups: dict = {}
    for c in report.comparisons:
        g = groups.setdefault((c.phase, c.pair), {"n": 0, "bad": 0, "abs": 0.0, "rel": 0.0})
        g["n"] += 1
        g["bad"] += 0 if (c.ok or c.ill_conditioned) and not c.error else 1
        if not c.error:
            g["abs"], g["rel"] = max(g["abs"], c.max_abs), max(g["rel"], c.max_rel)
    lines = [f"equiv {report.model}: reference {REFERENCE}, seed {report.seed}, data {report.data}, "
             f"{report.steps} train step(s) (--verbose for every tensor)"]
    head = ("phase", "backend pair", "tensors", "max abs err", "max rel err", "out of tol")
    rows = [(ph, pair, str(g["n"]), f"{g['abs']:.2e}", f"{g['rel']:.2e}", str(g["bad"]))
            for (ph, pair), g in groups.items()]
    lines += _table(head, rows, 2, color)
    full = render(report).splitlines()
    lines += [ln for ln in full[1:] if ln.startswith(("error:", "skipped", "divergence"))]
    lines.append(full[-1])
    return "\n".join(lines)


def _merge_steps(comparisons):
    """Training rows of one tensor and backend pair merged over steps (the worst of
    each figure); the JSON payload keeps every step."""
    out, index = [], {}
    for c in comparisons:
        if c.step is None or c.error:
            out.append([c, []])
            continue
        key = (c.phase, c.tensor, c.backend, c.reference)
        if key not in index:
            index[key] = len(out)
            out.append([Comparison(**asdict(c)), [c.step]])
            continue
        m, steps = out[index[key]]
        steps.append(c.step)
        m.max_abs, m.max_rel = max(m.max_abs, c.max_abs), max(m.max_rel, c.max_rel)
        m.tol_ratio, m.ok = max(m.tol_ratio, c.tol_ratio), m.ok and c.ok
        m.ill_conditioned = m.ill_conditioned or c.ill_conditioned
        m.sensitivity, m.spread = max(m.sensitivity, c.sensitivity), max(m.spread, c.spread)
        if c.tol_scale > m.tol_scale:
            m.tol_scale, m.atol, m.rtol = c.tol_scale, c.atol, c.rtol
    return [(c, sorted(s)) for c, s in out]
