"""`ofa-eval ingest`: load complete run folders (docs/artifacts.md) into the store.

Each run's predictions are scored with its task's metric; the run variants the protocol needs
are derived from the snapshot scores:
- LAST: the last snapshot;
- SRC-DEV: the snapshot with the best source-language validation score (earliest on a tie);
- CA: the run's within-run checkpoint average (its own predictions, subject `ca`);
- TRG-DEV: for each target language, the snapshot with the best validation score in that
  language; the run's `target-dev` criterion is the mean of those best validation scores.

On target-language test sets, each variant's per-example sufficient statistics are stored too
(`example_stats`), for the joint draws x examples bootstrap.

Everything is read and checked before the store is touched; then one transaction writes it all.
Weights are never unpickled: only safetensors headers are read, to catch truncated files.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ofa_eval.errors import OfaError
from ofa_eval.keys import examples_key, file_sha256
from ofa_eval.parquet import read_parquet
from ofa_eval.run_format import FORMAT_VERSION, MANIFEST, prediction_file
from ofa_eval.store import ensure_eval_set, ensure_task, transaction
from ofa_eval.tasks import get_task
from ofa_eval.validation import check_run, check_run_folders, conflicts_with_store

REQUIRED_KEYS = ("format_version", "state", "task", "model", "learning_rate", "batch_size", "seed",
                 "snapshots", "eval_sets")


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
        return self.manifest.get("run_name") or self.path.name


def find_runs(root: Path) -> list[Path]:
    """Run folders under `root` (folders holding a manifest.json), or `root` itself."""
    root = Path(root)
    if not root.is_dir():
        raise OfaError(f"{root}: not a directory")
    if (root / "manifest.json").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("manifest.json"))


def read_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise OfaError(f"{path}: not a readable JSON manifest ({error})") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise OfaError(f"{path}: missing key(s) {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise OfaError(f"{path}: artifact format {manifest['format_version']} (this ofa-eval reads {FORMAT_VERSION})")
    return manifest


def check_safetensors(path: Path, expected_bytes: int | None) -> None:
    """A cheap integrity check: the header is well formed and every tensor's bytes lie inside the file."""
    from ofa_eval.safetensors_file import read_header

    read_header(path)
    size = path.stat().st_size
    if expected_bytes is not None and expected_bytes != size:
        raise OfaError(f"{path}: {size} bytes, the manifest says {expected_bytes}")


def _subjects(manifest: dict) -> list[str]:
    subjects = [f"snapshot-{s['index']:02d}" for s in manifest["snapshots"]]
    return subjects + (["ca"] if manifest.get("ca") is not None else [])


def is_target_test(eval_set: dict) -> bool:
    """The evaluation sets the protocol scores: target languages' test sets."""
    return eval_set["role"] == "target" and eval_set["split"] == "test"


@dataclass
class ExampleStats:
    """Per-example sufficient statistics of one subject on one evaluation set, in example_id order."""

    examples_sha256: str
    stats: dict  # statistic -> array of shape (n_examples,)


def score_predictions(task: str, gold_dir: Path, eval_sets: list[dict], predictions_dir: Path):
    """One subject's prediction files scored: ({set: {metric: value}}, {set: ExampleStats}).

    Sets are keyed (dataset, language, split); example statistics are kept for target-language
    test sets only, the sets the protocol's bootstrap resamples.
    """
    definition = get_task(task)
    metric, gold_column = definition.metric, definition.gold_column
    # the join renames the prediction column when the gold table has one of the same name
    joined_column = definition.prediction_column + ("_pred" if definition.prediction_column == gold_column else "")
    scores, example_stats = {}, {}
    for eval_set in eval_sets:
        key = (eval_set["dataset"], eval_set["language"], eval_set["split"])
        gold = read_parquet(gold_dir / eval_set["gold"], ("example_id", gold_column))
        path = predictions_dir / prediction_file(*key)
        predictions = read_parquet(path, ("example_id", definition.prediction_column))
        joined = gold.join(predictions, on="example_id", how="left", suffix="_pred").sort("example_id")
        if joined[joined_column].null_count():
            raise OfaError(f"{path}: no prediction for {joined[joined_column].null_count()} gold example(s)")
        stats = metric.example_stats(joined[gold_column].to_list(), joined[joined_column].to_list())
        values = metric.aggregate(stats)
        scores[key] = {name: float(values[name]) for name in metric.names}
        if is_target_test(eval_set):
            example_stats[key] = ExampleStats(examples_key(joined["example_id"].to_list()), stats)
    return scores, example_stats


def score_run(run_dir: Path) -> ScoredRun:
    """Read, check and score one complete run folder."""
    manifest = read_manifest(run_dir)
    task = manifest["task"]
    try:
        metric_name = get_task(task).primary_metric
    except OfaError as error:
        raise OfaError(f"{run_dir / MANIFEST}: {error}") from None
    run = ScoredRun(run_dir, manifest, metric_name, _checked_snapshots(run_dir, manifest))
    for subject in _subjects(manifest):
        scores, example_stats = score_predictions(task, run_dir, manifest["eval_sets"],
                                                  run_dir / "predictions" / subject)
        run.scores.update({(subject, *key): values for key, values in scores.items()})
        run.example_stats.update({(subject, *key): stats for key, stats in example_stats.items()})
    if manifest.get("ca") and manifest["ca"].get("weights"):
        path = run_dir / manifest["ca"]["weights"]
        check_safetensors(path, manifest["ca"].get("bytes"))
        run.ca_weights = {"weights_path": str(path.resolve()), "sha256": manifest["ca"].get("sha256") or file_sha256(path)}
    return run


def _checked_snapshots(run_dir: Path, manifest: dict) -> list[dict]:
    snapshots = []
    for snapshot in manifest["snapshots"]:
        weights = snapshot.get("weights")
        record = {"index": snapshot["index"], "step": snapshot["step"], "epoch": snapshot.get("epoch"),
                  "weights_path": None, "sha256": None, "bytes": None}
        if weights:
            path = run_dir / weights
            check_safetensors(path, snapshot.get("bytes"))
            record.update(weights_path=str(path.resolve()), bytes=path.stat().st_size,
                          sha256=snapshot.get("sha256") or file_sha256(path))
        snapshots.append(record)
    if not snapshots:
        raise OfaError(f"{run_dir / 'manifest.json'}: no snapshots")
    return snapshots


def _snapshot_subjects(run: ScoredRun) -> list[str]:
    return [f"snapshot-{s['index']:02d}" for s in sorted(run.manifest["snapshots"], key=lambda s: s["index"])]


def chosen_subjects(run: ScoredRun) -> dict[str, str]:
    """Which subject each variant is: LAST, the best source-dev snapshot (earliest on a tie), CA."""
    snapshots = _snapshot_subjects(run)
    source_dev = [(e["dataset"], e["language"]) for e in run.manifest["eval_sets"]
                  if e["role"] == "source" and e["split"] == "validation"]
    if not source_dev:
        raise OfaError(f"{run.path / 'manifest.json'}: no source-language validation set")
    by_source = [run.scores[(s, *source_dev[0], "validation")][run.metric_name] for s in snapshots]
    chosen = {"last": snapshots[-1], "src-dev": snapshots[by_source.index(max(by_source))]}
    if "ca" in _subjects(run.manifest):
        chosen["ca"] = "ca"
    return chosen


def variant_weights(run: ScoredRun) -> dict[str, tuple[str, str]]:
    """{variant: (weights path, sha256)} for the variants whose weights were kept."""
    files = {f"snapshot-{s['index']:02d}": (s["weights_path"], s["sha256"]) for s in run.snapshots}
    files["ca"] = (run.ca_weights["weights_path"], run.ca_weights["sha256"]) if run.ca_weights else (None, None)
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


@dataclass
class IngestSummary:
    ingested: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def ingest(con, root: Path, progress: bool = False) -> IngestSummary:
    """Ingest every complete, not yet ingested run under `root` in one transaction."""
    summary = IngestSummary()
    pending = []
    for run_dir in check_run_folders(root):
        manifest = read_manifest(run_dir)
        name = manifest.get("run_name") or run_dir.name
        conflict = conflicts_with_store(con, manifest, run_dir)
        if conflict:
            raise OfaError(conflict)
        if manifest["state"] != "complete":
            summary.incomplete.append(name)
        elif _is_ingested(con, manifest, name):
            summary.already.append(name)
        else:
            check_run(run_dir)
            pending.append(run_dir)
    scored = [score_run(run_dir) for run_dir in _progress(pending, progress, "scoring runs")]
    with transaction(con):
        for run in scored:
            _write_run(con, run)
            summary.ingested.append(run.external_id)
    return summary


def _progress(items, enabled: bool, description: str):
    if not enabled or not items:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="run")


def _is_ingested(con, manifest: dict, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM run_table WHERE task=? AND model=? AND external_id=?",
                            [manifest["task"], manifest["model"], name]).fetchall()[0][0])


def _write_run(con, run: ScoredRun) -> None:
    m = run.manifest
    ensure_task(con, m["task"], run.metric_name)
    run_id = con.execute(
        "INSERT INTO run_table (task, model, learning_rate, batch_size, seed, epochs, external_id, origin, path) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'ingest', ?) RETURNING run_id",
        [m["task"], m["model"], m["learning_rate"], m["batch_size"], m["seed"], m.get("epochs"),
         run.external_id, str(run.path.resolve())]).fetchall()[0][0]
    snapshot_ids = {}
    for s in run.snapshots:
        snapshot_ids[f"snapshot-{s['index']:02d}"] = con.execute(
            "INSERT INTO snapshot_table (run_id, snapshot_index, step, epoch, weights_path, weights_sha256, "
            "weights_bytes) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING snapshot_id",
            [run_id, s["index"], s["step"], s["epoch"], s["weights_path"], s["sha256"], s["bytes"]]).fetchall()[0][0]
    eval_set_ids = {(e["dataset"], e["language"], e["split"]): ensure_eval_set(
        con, m["task"], e["dataset"], e["language"], e["split"], e["role"], e.get("n_examples"))
        for e in m["eval_sets"]}
    rows = []
    for (subject, dataset, language, split), values in run.scores.items():
        if subject in snapshot_ids:
            rows += [(None, None, snapshot_ids[subject], eval_set_ids[(dataset, language, split)], k, v)
                     for k, v in values.items()]
    variants, target_dev = derive_variants(run)
    stat_rows = []
    for (variant, *key), subject in variants.items():
        eval_set_id = eval_set_ids[tuple(key)]
        rows += [(run_id, variant, None, eval_set_id, k, v) for k, v in run.scores[(subject, *key)].items()]
        if (subject, *key) in run.example_stats:
            stat_rows += example_stat_rows((run_id, variant, None), eval_set_id, run.example_stats[(subject, *key)])
    frame = pl.DataFrame(rows, orient="row", schema={
        "run_id": pl.Int64, "variant": pl.String, "snapshot_id": pl.Int64, "eval_set_id": pl.Int64,
        "metric": pl.String, "value": pl.Float64})
    con.register("incoming_scores", frame.to_arrow())
    con.execute("INSERT INTO score_table (run_id, variant, snapshot_id, eval_set_id, metric, value) "
                "SELECT * FROM incoming_scores")
    con.unregister("incoming_scores")
    insert_example_stats(con, stat_rows)
    if target_dev is not None:
        con.execute("INSERT INTO selection_table VALUES (?, 'trg-dev', 'target-dev', ?)", [run_id, target_dev])
    for variant, (path, sha256) in variant_weights(run).items():
        con.execute("INSERT INTO run_weight_table VALUES (?, ?, ?, ?)", [run_id, variant, path, sha256])


def example_stat_rows(subject: tuple, eval_set_id: int, example_stats: ExampleStats) -> list[tuple]:
    """example_stat_table rows of one subject, (run_id, variant, average_id), on one set."""
    return [(*subject, eval_set_id, name, example_stats.examples_sha256, values.astype(float).tolist())
            for name, values in example_stats.stats.items()]


def insert_example_stats(con, rows: list[tuple]) -> None:
    if not rows:
        return
    frame = pl.DataFrame(rows, orient="row", schema={
        "run_id": pl.Int64, "variant": pl.String, "average_id": pl.Int64, "eval_set_id": pl.Int64,
        "statistic": pl.String, "examples_sha256": pl.String, "values": pl.List(pl.Float64)})
    con.register("incoming_example_stats", frame.to_arrow())
    con.execute("INSERT INTO example_stat_table SELECT * FROM incoming_example_stats")
    con.unregister("incoming_example_stats")
