"""Artifacts in: run folders and released results, checked, scored and written to the store.

- `run_format`: every file and folder name of a run folder and of an averaged-model folder;
- `value_rules` and `validation`: every rule a run folder must satisfy (`ofa-eval validate`);
- `scoring`: one run folder's predictions scored per snapshot, variant and evaluation set;
- `ingest`: scoring in worker processes, staging, then one short insert (`ofa-eval ingest`);
- `release` and `release_pickles`: the paper's released results (`ofa-eval import ofa-xlt`).
"""

from ofa_eval.common.lazy import lazy_face

__all__ = ["import_release", "ingest_runs", "score_run", "validate_runs"]
__getattr__, __dir__ = lazy_face(__name__, {
    "import_release": "release", "ingest_runs": "ingest", "score_run": "scoring", "validate_runs": "validation",
})
