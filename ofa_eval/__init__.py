"""ofa-eval: honest, reproducible zero-shot cross-lingual transfer evaluation.

The notebook API (ofa_eval.api, docs/python-api.md) is this package's face: `ofa_eval.protocol`,
`compare`, `correlate`, `language_gains`, `sql`, `grid`, `figures` and `report` take a store's
path and return polars DataFrames (figures: matplotlib Figures). They are loaded on first use.

The statistics path (store, evaluation, sql, check, grid, report, this API) imports neither
torch nor transformers; only the producers and the averaging/materializing commands do.
"""

from ofa_eval.common.lazy import lazy_face

__version__ = "0.1.0"

__all__ = ["OfaNote", "__version__", "compare", "correlate", "figures", "grid", "language_gains", "protocol", "report",
           "sql"]
__getattr__, __dir__ = lazy_face(__name__, {
    "protocol": "api", "compare": "api", "correlate": "api", "language_gains": "api", "sql": "api", "grid": "api",
    "figures": "api", "report": "api", "OfaNote": "api",
})
