"""Averaged models the protocol needs: planned, made (averaged and predicted), ingested.

- `materialize`: plan (which member sets the strategies' draws need and the store lacks) ->
  make (average the weights, predict with the predictor the command layer hands in) -> ingest;
- `defaults`: the defaults the command line shows without importing the rest.
"""

from ofa_eval.common.lazy import lazy_face

__all__ = ["materialize_missing", "plan"]
__getattr__, __dir__ = lazy_face(__name__, {"materialize_missing": "materialize", "plan": "materialize"})
