"""`ofa-eval check`: recompute benchmark tables from the store and list disagreeing cells."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ofa_eval.common.errors import OfaError
from ofa_eval.results.formatting import PROTOCOL_COLUMNS
from ofa_eval.evaluation import DrawOptions, compute_protocol, get_strategy, pools_in_store
from ofa_eval.store.database import connected

DEFAULT_TOLERANCE = 0.1


def _number(path, line, column, text, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise OfaError(f"{path}:{line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise OfaError(f"{path}:{line}: column {column!r} is not finite: {text!r}")
    return value


def _valid_pair(strategy: str, variant: str) -> bool:
    try:
        return get_strategy(strategy).accepts_variant(variant)
    except OfaError:
        return False


def read_table(path: str) -> list[dict]:
    """Rows of a benchmark table, validated; raises OfaError naming the file and line."""
    if not Path(path).is_file():
        raise OfaError(f"{path}: file not found")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OfaError(f"{path}: not a UTF-8 CSV file") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PROTOCOL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise OfaError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            if not _valid_pair(raw["strategy"], raw["variant"]):
                raise OfaError(f"{path}:{line}: unknown strategy/variant {raw['strategy']}/{raw['variant']}")
            rows.append({
                "file": path, "line": line, "task": raw["task"], "model": raw["model"],
                "strategy": raw["strategy"], "variant": raw["variant"],
                "runs": _number(path, line, "runs", raw["runs"], int),
                "mean": _number(path, line, "mean", raw["mean"]),
                "std": _number(path, line, "std", raw["std"]) if raw["std"] else None,
                "draws": _number(path, line, "draws", raw["draws"], int) if raw["draws"] else None,
                "tolerance": _number(path, line, "tolerance", raw["tolerance"])
                if raw.get("tolerance") else DEFAULT_TOLERANCE,
            })
    if not rows:
        raise OfaError(f"{path}: no rows")
    return rows


def _compare(expected: dict, actual: dict) -> list[str]:
    where = (f"{expected['file']}:{expected['line']}: {expected['task']}/{expected['model']} "
             f"{expected['strategy']} {expected['variant']} r={expected['runs']}")
    failures = []
    for column in ("mean", "std"):
        want, got = expected[column], actual[column]
        if want is None:
            continue
        if got is None or abs(got - want) > expected["tolerance"] + 1e-9:
            shown = "none" if got is None else f"{got:.3f}"
            failures.append(f"{where}: {column} {shown}, table {want} (tolerance {expected['tolerance']})")
    if expected["draws"] is not None and expected["draws"] != actual["draws"]:
        failures.append(f"{where}: {actual['draws']} draws, table {expected['draws']}")
    return failures


def check_tables(db_path: str, paths, options: DrawOptions, soup_k: int) -> tuple[list[str], int]:
    """Failure lines and the number of cells checked."""
    expected = [row for path in paths for row in read_table(path)]
    with connected(db_path, read_only=True) as con:
        return _check_pools(con, expected, options, soup_k)


def _check_pools(con, expected: list[dict], options: DrawOptions, soup_k: int) -> tuple[list[str], int]:
    failures, checked = [], 0
    for (task, model), rows in _by_pool(expected).items():
        pairs = list(dict.fromkeys((r["strategy"], r["variant"]) for r in rows))
        max_runs = max(r["runs"] for r in rows)
        pools = pools_in_store(con, (task,), (model,))
        computed, _ = compute_protocol(con, pools, pairs, options, max_runs, soup_k, record=False)
        by_key = {(r["strategy"], r["variant"], r["runs"]): r for r in computed}
        for row in rows:
            failures += _compare(row, by_key[(row["strategy"], row["variant"], row["runs"])])
            checked += 1
    return failures, checked


def _by_pool(rows: list[dict]) -> dict:
    pools: dict = {}
    for row in rows:
        pools.setdefault((row["task"], row["model"]), []).append(row)
    return pools
