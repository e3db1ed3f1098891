"""Recording results in the store with the settings that produced them."""

from __future__ import annotations

import json

from ofa_eval.store.database import insert_rows

RESULT_COLUMNS = ("task", "model", "strategy", "variant", "runs", "mean", "std", "draws", "ci_low", "ci_high",
                  "settings")


def record_results(con, rows: list[dict], settings: dict) -> None:
    """Append protocol rows (`protocol_results`) with the settings that produced them."""
    if not rows:
        return
    text = json.dumps(settings, sort_keys=True)
    insert_rows(con, "protocol_result_table", RESULT_COLUMNS,
                [(r["task"], r["model"], r["strategy"], r["variant"], r["runs"], r["mean"], r["std"], r["draws"],
                  r.get("ci_low"), r.get("ci_high"), text) for r in rows])


def record_analysis(con, analysis: str, task: str, model: str, rows: list[dict], settings: dict) -> None:
    """Append analysis rows (`analysis_results`: correlate, compare) with their settings."""
    if not rows:
        return
    text = json.dumps(settings)
    insert_rows(con, "analysis_result_table", ("analysis", "task", "model", "row", "settings"),
                [(analysis, task, model, json.dumps(row), text) for row in rows])
