"""The run folder format (docs/artifacts.md): every file and folder name, in one place.

The producers write run folders and `ofa-eval ingest` reads them; both take the names from
here. Column names of the gold and prediction tables depend on the task and come from the task
registry (`ofa_eval.tasks`: `gold_column`, `prediction_column`). Plain Python only.

    runs/<run-name>/
      manifest.json
      gold/<dataset>__<language>__<split>.parquet
      inputs/<dataset>__<language>__<split>.parquet
      predictions/<subject>/<dataset>__<language>__<split>.parquet
      weights/<subject>.safetensors
      model/

A subject is one set of weights that predicted: `snapshot-01` ... `snapshot-NN`, or `ca`, the
run's within-run checkpoint average. An averaged model (`ofa-eval materialize`) gets a folder
holding `average.json`, its weights and `predictions/`.
"""

from __future__ import annotations

from pathlib import Path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
AVERAGE_MANIFEST = "average.json"
AVERAGE_WEIGHTS = "model.safetensors"

GOLD = "gold"
INPUTS = "inputs"
PREDICTIONS = "predictions"
WEIGHTS = "weights"
MODEL = "model"
EXAMPLE_ID = "example_id"  # the join key of gold and prediction tables

CA_SUBJECT = "ca"


def snapshot_subject(index: int) -> str:
    """`snapshot-07` for snapshot 7."""
    return f"snapshot-{index:02d}"


def run_name(manifest: dict, run_dir) -> str:
    """A run's name in the store: its manifest's `run_name`, else its folder's name."""
    name = manifest.get("run_name")
    return name if isinstance(name, str) and name else Path(run_dir).name


def subjects(manifest: dict) -> list[str]:
    """Every subject whose predictions a run folder holds: its snapshots, then CA when it has one."""
    names = [snapshot_subject(s["index"]) for s in manifest["snapshots"]]
    return names + ([CA_SUBJECT] if manifest.get("ca") is not None else [])


def prediction_file(dataset: str, language: str, split: str) -> str:
    """The file name of one evaluation set's table (the same in gold/, inputs/ and predictions/<subject>/)."""
    return f"{dataset}__{language}__{split}.parquet"


def gold_file(dataset: str, language: str, split: str) -> str:
    """An evaluation set's gold table, relative to the run folder."""
    return f"{GOLD}/{prediction_file(dataset, language, split)}"


def inputs_file(dataset: str, language: str, split: str) -> str:
    """An evaluation set's examples, relative to the run folder."""
    return f"{INPUTS}/{prediction_file(dataset, language, split)}"


def predictions_folder(subject: str) -> str:
    """A subject's prediction tables, relative to the run folder."""
    return f"{PREDICTIONS}/{subject}"


def weights_file(subject: str) -> str:
    """A subject's weights, relative to the run folder."""
    return f"{WEIGHTS}/{subject}.safetensors"
