"""Jobs on a SLURM cluster: records of what was submitted, bounded waiting, partial results.

- `slurm`: idempotent submission through submitit (a `jobs.json` record plus `squeue`), job
  arrays, waiting with a timeout, failure reports with logs, requests fitted to `sinfo`.
"""

from ofa_eval.jobs.slurm import Outcome, Record, Unfinished, fit_request, require_slurm, submit_array, wait_for

__all__ = ["Outcome", "Record", "Unfinished", "fit_request", "require_slurm", "submit_array", "wait_for"]
