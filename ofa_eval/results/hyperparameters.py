"""`ofa-eval grid`: the per-hyperparameter table (the paper's appendix Table 3)."""

from __future__ import annotations

from ofa_eval.common.errors import OfaError

VARIANT_ORDER = ("last", "src-dev", "ca", "trg-dev")

_GRID_SQL = """
WITH source_dev AS (
    SELECT sc.run_id, sc.variant, sc.value
    FROM score_table sc
    JOIN eval_set_table e USING (eval_set_id)
    JOIN task_table t ON t.task = e.task AND t.metric = sc.metric
    WHERE e.role = 'source' AND e.split = 'validation'
)
SELECT v.learning_rate, v.batch_size, v.variant, count(*) AS seeds,
       avg(s.value) AS src_dev_mean, stddev_samp(s.value) AS src_dev_std,
       avg(v.target_test) AS target_mean, stddev_samp(v.target_test) AS target_std
FROM run_variants v
LEFT JOIN source_dev s ON s.run_id = v.run_id AND s.variant = v.variant
WHERE v.task = ? AND v.model = ?
GROUP BY ALL
ORDER BY v.learning_rate, v.batch_size
"""


def grid_rows(con, task: str, model: str) -> tuple[list[dict], list[str]]:
    """One row per (learning rate, batch size) with mean/std over seeds for every variant."""
    records = con.execute(_GRID_SQL, [task, model]).fetchall()
    if not records:
        raise OfaError(f"no scored runs of task {task!r} with model {model!r} in the store")
    variants = [v for v in VARIANT_ORDER if any(r[2] == v for r in records)]
    rows: dict[tuple, dict] = {}
    for lr, bs, variant, seeds, sd_mean, sd_std, t_mean, t_std in records:
        row = rows.setdefault((lr, bs), {"learning_rate": lr, "batch_size": bs, "seeds": seeds})
        row.update({f"{variant} src-dev": sd_mean, f"{variant} src-dev std": sd_std,
                    f"{variant} target": t_mean, f"{variant} target std": t_std})
    columns = ["learning_rate", "batch_size", "seeds"]
    for variant in variants:
        columns += [f"{variant} src-dev", f"{variant} src-dev std", f"{variant} target", f"{variant} target std"]
    if "trg-dev" in variants:  # TRG-DEV has no source validation score of its own
        columns = [c for c in columns if not c.startswith("trg-dev src-dev")]
    return list(rows.values()), columns
