"""Rendering rows as text tables, CSV, JSON, Markdown and LaTeX.

`render_rows` prints any list of dict rows (SQL results, grids). `render_protocol` prints
protocol rows: CSV and JSON stay long (one row per strategy, variant and r); the table,
Markdown and LaTeX forms are wide, like the paper: one line per r, one "mean ± std" column per
strategy/variant.

Where every draw at some r holds the same runs (a row with `distinct_draws` 1), the wide forms
print the mean with "(1 distinct draw)" instead of a std of 0 that reads like a finding. Columns
in AS_WRITTEN are settings, not measurements: printed as written, never rounded.
"""

from __future__ import annotations

import csv
import io
import json
import math

PROTOCOL_COLUMNS = ("task", "model", "strategy", "variant", "runs", "mean", "std", "draws")
OPTIONAL_PROTOCOL_COLUMNS = ("distinct_draws", "ci_low", "ci_high")  # in CSV/JSON where the rows have them
AS_WRITTEN = frozenset({"learning_rate"})  # 1e-05 stays 1e-05: shortest repr that round-trips
SINGLE_DRAW = "(1 distinct draw)"


def _cell(value, digits: int | None = None, column: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if column in AS_WRITTEN:
            return repr(value)
        return f"{value:.{digits}f}" if digits is not None else repr(round(value, 6))
    return str(value)


def render_rows(rows: list[dict], columns: list[str], fmt: str, digits: int | None = None) -> str:
    if fmt == "json":
        return json.dumps([{c: _json_value(r.get(c)) for c in columns} for r in rows], indent=1, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c), column=c) for c in columns])
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c), digits, c) for c in columns] for row in rows]
    return _grid(list(columns), cells, fmt)


def _json_value(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _grid(header: list[str], cells: list[list[str]], fmt: str) -> str:
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    if fmt == "latex":
        spec = "l" * len(header)
        body = [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in cells]
        return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                          " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule",
                          *body, r"\bottomrule", r"\end{tabular}"])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *cells)] if header else []
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")


def render_protocol(rows: list[dict], fmt: str) -> str:
    if fmt in ("csv", "json"):
        extra = [c for c in OPTIONAL_PROTOCOL_COLUMNS if any(c in row for row in rows)]
        return render_rows(rows, list(PROTOCOL_COLUMNS) + extra, fmt)
    blocks = []
    for (task, model), group in _group(rows, ("task", "model")).items():
        pairs = list(dict.fromkeys((r["strategy"], r["variant"]) for r in group))
        by_cell = {(r["strategy"], r["variant"], r["runs"]): r for r in group}
        runs = sorted({r["runs"] for r in group})
        header = ["r"] + [f"{s} {v}" for s, v in pairs]
        cells = [[str(n)] + [_mean_std(by_cell.get((s, v, n))) for s, v in pairs] for n in runs]
        draws = sorted({r["draws"] for r in group})
        over = "every possible draw" if len(draws) > 2 else f"{'/'.join(map(str, draws))} draws"
        shown = "mean [bootstrap CI]" if "ci_low" in group[0] else "mean ± std"
        title = f"{task} / {model} ({shown} over {over}, percent)"
        heading = {"markdown": f"**{title}**\n", "latex": f"% {title}"}.get(fmt, title)
        blocks.append(heading + "\n" + _grid(header, cells, fmt))
    return "\n\n".join(blocks)


def _mean_std(row: dict | None) -> str:
    if row is None:
        return ""
    single = row.get("distinct_draws") == 1
    if row.get("ci_low") is not None:
        interval = f"{row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
        return f"{interval} {SINGLE_DRAW}" if single else interval
    if single:
        return f"{row['mean']:.1f} {SINGLE_DRAW}"
    if row["std"] is None:
        return f"{row['mean']:.1f}"
    return f"{row['mean']:.1f} ± {row['std']:.1f}"


def _group(rows: list[dict], keys: tuple[str, ...]) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups
