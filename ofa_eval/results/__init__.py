"""Results out: analyses over protocol curves, the report, table checks and rendering.

- `analysis`: `compare` (paired differences, P(A>B), per-language tests) and `correlate`
  (tracking of the oracle, regret, per-language correlation);
- `report`: the Markdown/HTML report with its figures;
- `checking`: `ofa-eval check` against benchmark tables;
- `hyperparameters`: the per-hyperparameter table of `ofa-eval grid`;
- `formatting`: rows as text tables, CSV, JSON, Markdown and LaTeX.

The report imports matplotlib, so this face is lazy.
"""

from ofa_eval.common.lazy import lazy_face

__all__ = ["check_tables", "compare_pool", "correlate_pool", "grid_rows", "render_protocol", "render_rows",
           "write_report"]
__getattr__, __dir__ = lazy_face(__name__, {
    "check_tables": "checking", "compare_pool": "analysis", "correlate_pool": "analysis",
    "grid_rows": "hyperparameters", "render_protocol": "formatting", "render_rows": "formatting",
    "write_report": "report",
})
