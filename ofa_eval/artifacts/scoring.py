"""Reading and scoring one run folder's predictions, and deriving its run variants.

Each subject's predictions are scored with the run's task metric; the run variants the protocol
needs are derived from the snapshot scores:
- LAST: the last snapshot;
- SRC-DEV: the snapshot with the best source-language validation score (earliest on a tie);
- CA: the run's within-run checkpoint average (its own predictions, subject `ca`);
- TRG-DEV: for each target language, the snapshot with the best validation score in that
  language; the run's `target-dev` criterion is the mean of those best validation scores.

On target-language test sets, each subject's per-example sufficient statistics are kept too
(`ExampleStats`), for the joint draws x examples bootstrap. `ofa_eval.artifacts.ingest` writes what this
computes for run folders; `ofa_eval.averages.materialize` scores averaged models' predictions with it.
Nothing here opens the store, and weights are never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ofa_eval.common.errors import OfaError
from ofa_eval.common.keys import examples_key, file_sha256
from ofa_eval.store.parquet import read_parquet
from ofa_eval.artifacts.run_format import (CA_SUBJECT, EXAMPLE_ID, GOLD, MANIFEST, prediction_file, predictions_folder,
                                 run_name, snapshot_subject, subjects)
from ofa_eval.tasks.registry import get_task
from ofa_eval.artifacts.validation import check_run, read_manifest_json


@dataclass
class ScoredRun:
    """One run folder, read, checked and scored; nothing written yet."""

    path: Path
    manifest: dict
    metric_name: str
    snapshots: list[dict]
    ca_weights: dict | None = None
    # (subject, dataset, language, split) -> {metric: value}
    scores: dict[tuple[str, str, str, str], dict[str, float]] = field(default_factory=dict)
    # (subject, dataset, language, split) -> per-example statistics (target test sets only)
    example_stats: dict[tuple[str, str, str, str], "ExampleStats"] = field(default_factory=dict)

    @property
    def external_id(self) -> str:
        return run_name(self.manifest, self.path)


def read_manifest(run_dir: Path) -> dict:
    """A run folder's manifest as JSON (validation.check_run checks its content)."""
    parsed, problems = read_manifest_json(Path(run_dir))
    if problems:
        raise OfaError(problems[0].line())
    return parsed


def check_safetensors(path: Path, expected_bytes: int | None) -> None:
    """A cheap integrity check: the header is well formed and every tensor's bytes lie inside the file."""
    from ofa_eval.weights.safetensors_file import read_header

    read_header(path)
    size = path.stat().st_size
    if expected_bytes is not None and expected_bytes != size:
        raise OfaError(f"{path}: {size} bytes, the manifest says {expected_bytes}")


def is_target_test(eval_set: dict) -> bool:
    """The evaluation sets the protocol scores: target languages' test sets."""
    return eval_set["role"] == "target" and eval_set["split"] == "test"


@dataclass
class ExampleStats:
    """Per-example sufficient statistics of one subject on one evaluation set, in example_id order."""

    examples_sha256: str
    stats: dict  # statistic -> array of shape (n_examples,)


@dataclass(frozen=True)
class SortedGold:
    """A gold table in example_id order, read and hashed once for every subject scored on it."""

    ids: pl.Series
    values: object  # numpy array (numeric labels) or list (answers, tags): what the metric reads
    examples_sha256: str | None  # only where example statistics are kept (target test sets)

    @classmethod
    def of(cls, ids: pl.Series, values: pl.Series, keep_statistics: bool) -> "SortedGold":
        order = ids.arg_sort()
        ids = ids.gather(order)
        key = examples_key(ids.to_list()) if keep_statistics else None
        return cls(ids, _metric_input(values.gather(order)), key)


def _metric_input(values: pl.Series):
    """Numeric columns as a numpy array; nested ones (answers, tags) as the lists the metric walks."""
    return values.to_numpy() if values.dtype.is_numeric() else values.to_list()


def score_subject(metric, gold: SortedGold, ids: pl.Series, values: pl.Series, path: Path):
    """One subject's predictions on one set: ({metric: value}, ExampleStats or None)."""
    if ids.equals(gold.ids):  # already in example_id order (gold.ids is sorted): nothing to reorder
        stats = metric.example_stats(gold.values, _metric_input(values))
        return _scored(metric, stats, gold)
    order = ids.arg_sort()
    ids = ids.gather(order)
    if len(ids) != len(gold.ids) or not (ids == gold.ids).all():
        missing = int((~gold.ids.is_in(ids.implode())).sum())
        raise OfaError(f"{path}: no prediction for {missing} gold example(s)" if missing
                       else f"{path}: example ids that are not the gold table's")
    return _scored(metric, metric.example_stats(gold.values, _metric_input(values.gather(order))), gold)


def _scored(metric, stats: dict, gold: SortedGold):
    aggregated = metric.aggregate(stats)
    scores = {name: float(aggregated[name]) for name in metric.names}
    return scores, (ExampleStats(gold.examples_sha256, stats) if gold.examples_sha256 else None)


def score_predictions(task: str, gold_dir: Path, eval_sets: list[dict], predictions_dir: Path):
    """One subject's prediction files scored: ({set: {metric: value}}, {set: ExampleStats}).

    Sets are keyed (dataset, language, split); example statistics are kept for target-language
    test sets only, the sets the protocol's bootstrap resamples. (Run folders are scored from the
    tables validation read, `score_run`; this reads the files, for averaged models.)
    """
    definition = get_task(task)
    scores, example_stats = {}, {}
    for eval_set in eval_sets:
        key = (eval_set["dataset"], eval_set["language"], eval_set["split"])
        gold_table = read_parquet(gold_dir / eval_set["gold"], (EXAMPLE_ID, definition.gold_column))
        gold = SortedGold.of(gold_table[EXAMPLE_ID], gold_table[definition.gold_column], is_target_test(eval_set))
        path = predictions_dir / prediction_file(*key)
        predictions = read_parquet(path, (EXAMPLE_ID, definition.prediction_column))
        scores[key], stats = score_subject(definition.metric, gold, predictions[EXAMPLE_ID],
                                           predictions[definition.prediction_column], path)
        if stats is not None:
            example_stats[key] = stats
    return scores, example_stats


def score_run(run_dir: Path, manifest: dict | None = None) -> ScoredRun:
    """Validate and score one complete run folder, reading each table once; `manifest`: its
    manifest as ingest read it (then the file is not read again)."""
    run_dir = Path(run_dir)
    tables = {}
    manifest = check_run(run_dir, tables, manifest)
    definition = get_task(manifest["task"])
    run = ScoredRun(run_dir, manifest, definition.primary_metric, _snapshot_records(run_dir, manifest),
                    _ca_weights(run_dir, manifest))
    for eval_set in manifest["eval_sets"]:
        key = (eval_set["dataset"], eval_set["language"], eval_set["split"])
        gold = SortedGold.of(*tables.pop((GOLD, *key)), is_target_test(eval_set))
        for subject in subjects(manifest):
            path = run_dir / predictions_folder(subject) / prediction_file(*key)
            scores, stats = score_subject(definition.metric, gold, *tables.pop((subject, *key)), path)
            run.scores[(subject, *key)] = scores
            if stats is not None:
                run.example_stats[(subject, *key)] = stats
    return run


def _weights_record(run_dir: Path, record: dict) -> tuple[str | None, str | None, int | None]:
    """(resolved path, sha256, bytes) of a snapshot's or CA's weights; the file is hashed only when
    the manifest has no hash (validation checked the file itself)."""
    if not record.get("weights"):
        return None, None, None
    path = run_dir / record["weights"]
    return str(path.resolve()), record.get("sha256") or file_sha256(path), path.stat().st_size


def _snapshot_records(run_dir: Path, manifest: dict) -> list[dict]:
    records = []
    for snapshot in manifest["snapshots"]:
        path, sha256, size = _weights_record(run_dir, snapshot)
        records.append({"index": snapshot["index"], "step": snapshot["step"], "epoch": snapshot.get("epoch"),
                        "weights_path": path, "sha256": sha256, "bytes": size})
    return records


def _ca_weights(run_dir: Path, manifest: dict) -> dict | None:
    path, sha256, _ = _weights_record(run_dir, manifest.get("ca") or {})
    return {"weights_path": path, "sha256": sha256} if path else None


def _snapshot_subjects(run: ScoredRun) -> list[str]:
    return [snapshot_subject(s["index"]) for s in sorted(run.manifest["snapshots"], key=lambda s: s["index"])]


def chosen_subjects(run: ScoredRun) -> dict[str, str]:
    """Which subject each variant is: LAST, the best source-dev snapshot (earliest on a tie), CA."""
    snapshots = _snapshot_subjects(run)
    source_dev = [(e["dataset"], e["language"]) for e in run.manifest["eval_sets"]
                  if e["role"] == "source" and e["split"] == "validation"]
    if not source_dev:
        raise OfaError(f"{run.path / MANIFEST}: no source-language validation set")
    by_source = [run.scores[(s, *source_dev[0], "validation")][run.metric_name] for s in snapshots]
    chosen = {"last": snapshots[-1], "src-dev": snapshots[by_source.index(max(by_source))]}
    if CA_SUBJECT in subjects(run.manifest):
        chosen["ca"] = CA_SUBJECT
    return chosen


def variant_weights(run: ScoredRun) -> dict[str, tuple[str, str]]:
    """{variant: (weights path, sha256)} for the variants whose weights were kept."""
    files = {snapshot_subject(s["index"]): (s["weights_path"], s["sha256"]) for s in run.snapshots}
    files[CA_SUBJECT] = (run.ca_weights["weights_path"], run.ca_weights["sha256"]) if run.ca_weights else (None, None)
    return {variant: files[subject] for variant, subject in chosen_subjects(run).items() if files[subject][0]}


def derive_variants(run: ScoredRun) -> tuple[dict, float | None]:
    """Which subject each run variant is on each evaluation set, and the target-dev criterion.

    Returns ({(variant, dataset, language, split): subject}, target_dev): LAST, SRC-DEV and CA
    are one subject on every set; TRG-DEV is, per target test set, the snapshot with the best
    validation score in that language.
    """
    metric = run.metric_name
    snapshots = _snapshot_subjects(run)
    variants = {}
    for variant, subject in chosen_subjects(run).items():
        for (s, dataset, language, split) in run.scores:
            if s == subject:
                variants[(variant, dataset, language, split)] = subject
    best_dev = []
    for e in run.manifest["eval_sets"]:
        if not is_target_test(e):
            continue
        dev_key = (e["dataset"], e["language"], "validation")
        if not any((s, *dev_key) in run.scores for s in snapshots):
            continue
        dev = [run.scores[(s, *dev_key)][metric] for s in snapshots]
        best_dev.append(max(dev))
        variants[("trg-dev", e["dataset"], e["language"], "test")] = snapshots[dev.index(max(dev))]
    target_dev = sum(best_dev) / len(best_dev) if best_dev else None
    return variants, target_dev
