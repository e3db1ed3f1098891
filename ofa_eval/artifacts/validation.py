"""Validation of run folders (docs/artifacts.md, "What `validate` and `ingest` check"): every check, in one place
(the rules for single manifest values are `ofa_eval.artifacts.value_rules`).

`validate_run` lists every problem of one run folder; `validate_runs` those of every run folder
under a root, plus the problems between folders (one run identity in two folders). `ofa-eval
validate` prints them all; `ofa-eval ingest` stops at the first (`check_run_folders`,
`check_run`) and refuses a run the store already holds under another name or path
(`conflicts_with_store`).

What is checked depends on the run's state: a running run's files are still being written, so
only its manifest and its symbolic links are checked; a complete run's files are checked too.
Cheap checks only: tables are read, but weights are not hashed (their safetensors headers are
parsed and their sizes compared with the manifest) and nothing is ever unpickled. No torch.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.artifacts import value_rules as rules
from ofa_eval.common.errors import OfaError
from ofa_eval.artifacts.run_format import (AVERAGE_MANIFEST, CA_SUBJECT, EXAMPLE_ID, FORMAT_VERSION, GOLD, MANIFEST,
                                 PREDICTIONS, WEIGHTS, predictions_folder, prediction_file, run_name,
                                 snapshot_subject)

STATES = ("running", "complete")
ROLES = ("source", "target", "extra")
WEIGHT_STORAGE = ("all", "needed")
HEAD_MODES = ("frozen-copied", "shared-init", "none")
IDENTITY_KEYS = ("task", "model", "learning_rate", "batch_size", "seed")
EPOCH_TOLERANCE = 2e-6  # the producers round a snapshot's epoch to 6 decimals
INT32 = 2**31 - 1  # the store's INTEGER columns


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run folder: the file (or folder) it is in, and what."""

    path: Path
    message: str

    def line(self) -> str:
        return f"{self.path}: {self.message}"


# ---------------------------------------------------------------------------------------------
# The manifest

SNAPSHOT = rules.Record({
    "index": (True, rules.integer(1, INT32)),
    "step": (True, rules.integer(1)),
    "epoch": (False, rules.optional(rules.number(minimum=0))),
    "source_validation": (False, rules.optional(rules.number(0, 100))),
    "weights": (False, rules.optional(rules.relative_path)),
    "sha256": (False, rules.optional(rules.sha256)),
    "bytes": (False, rules.optional(rules.integer(0))),
})
EVAL_SET = rules.Record({
    "dataset": (True, rules.plain_name),
    "language": (True, rules.plain_name),
    "split": (True, rules.plain_name),
    "role": (True, rules.choice(*ROLES)),
    "gold": (True, rules.relative_path),
    "inputs": (False, rules.relative_path),
    "n_examples": (False, rules.integer(1, INT32)),
})
WEIGHTS_RECORD = rules.Record({
    "weights": (False, rules.optional(rules.relative_path)),
    "sha256": (False, rules.optional(rules.sha256)),
    "bytes": (False, rules.optional(rules.integer(0))),
}, nullable=True)
MANIFEST_FIELDS = {
    "state": (True, rules.choice(*STATES)),
    "task": (True, rules.text),
    "model": (True, rules.text),
    "learning_rate": (True, rules.number(positive=True)),
    "batch_size": (True, rules.integer(1, INT32)),
    "seed": (True, rules.integer()),
    "snapshots": (True, rules.Records(SNAPSHOT)),
    "eval_sets": (True, rules.Records(EVAL_SET)),
    "run_name": (False, rules.plain_name),
    "model_name_or_path": (False, rules.text),
    "epochs": (False, rules.optional(rules.integer(1, INT32))),
    "max_length": (False, rules.integer(1)),
    "weight_decay": (False, rules.number(minimum=0)),
    "warmup_ratio": (False, rules.number(0, 1)),
    "max_grad_norm": (False, rules.optional(rules.number(minimum=0))),
    "weight_storage": (False, rules.choice(*WEIGHT_STORAGE)),
    "code_version": (False, rules.text),
    "label_names": (False, rules.label_names),
    "head_alignment": (False, rules.Record({"mode": (True, rules.choice(*HEAD_MODES)),
                                            "head_sha256": (False, rules.optional(rules.sha256))})),
    "task_settings": (False, rules.Record({key: (False, rules.integer(1)) for key in
                                           ("stride", "n_best", "max_answer_length", "eval_batch_size")})),
    "snapshots_per_run": (False, rules.integer(1)),
    "total_steps": (False, rules.optional(rules.integer(1))),
    "bytes_on_disk": (False, rules.integer(0)),
    "ca": (False, WEIGHTS_RECORD),
}


def read_manifest_text(run_dir: Path) -> tuple[str | None, object, list[Problem]]:
    """(the manifest file's text, that text parsed as JSON: any JSON value), or why it cannot be
    read: the one place validation and ingest open a run's manifest."""
    path = Path(run_dir) / MANIFEST
    try:
        text = path.read_text()
        return text, json.loads(text), []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, None, [Problem(path, f"not a readable JSON manifest ({error})")]


def read_manifest_json(run_dir: Path) -> tuple[object, list[Problem]]:
    """The manifest file parsed as JSON (any JSON value), or why it cannot be."""
    _, parsed, problems = read_manifest_text(run_dir)
    return parsed, problems


def _read_manifest(run_dir: Path, parsed: object = None) -> tuple[dict | None, list[Problem]]:
    """The manifest when it can be interpreted at all (a JSON object of a known format), and why not.
    `parsed`: the manifest's JSON already read (`read_manifest_json`); otherwise it is read here."""
    path = run_dir / MANIFEST
    if parsed is None:
        parsed, problems = read_manifest_json(run_dir)
        if problems:
            return None, problems
    manifest = parsed
    if not isinstance(manifest, dict):
        return None, [Problem(path, f"not a readable JSON manifest (a JSON {type(manifest).__name__}, not an object)")]
    if "format_version" not in manifest:
        return None, [Problem(path, "missing key(s) format_version")]
    if manifest["format_version"] != FORMAT_VERSION or type(manifest["format_version"]) is not int:
        return None, [Problem(path, f"artifact format {rules.shown(manifest['format_version'])} "
                                    f"(this ofa-eval reads {FORMAT_VERSION})")]
    return manifest, []


# What the file checks and the consistency checks read: when one of these is malformed they are skipped
FILE_KEYS = ("state", "task", "snapshots", "eval_sets", "ca", "label_names")
CONSISTENCY_KEYS = FILE_KEYS + ("snapshots_per_run", "total_steps", "epochs", "weight_storage")


def manifest_problems(run_dir: Path, parsed: object = None) -> tuple[dict | None, list[Problem]]:
    """(the manifest, or None where its files cannot be checked; its problems): every field's type,
    finiteness and range, the task, and the consistency of its snapshot and evaluation set records.
    `parsed`: the manifest's JSON when the caller has read it already."""
    manifest, problems = _read_manifest(run_dir, parsed)
    if manifest is None:
        return None, problems
    by_key = {key: rules.field_problems(manifest, {key: spec}, "") for key, spec in MANIFEST_FIELDS.items()}
    messages = [message for found in by_key.values() for message in found]
    task_problem = None if by_key["task"] else _task_problem(manifest)
    messages += [task_problem] if task_problem else []
    if not any(by_key[key] for key in CONSISTENCY_KEYS):
        messages += _snapshot_problems(manifest) + _eval_set_problems(manifest) + _weight_storage_problems(manifest)
    usable = not any(by_key[key] for key in FILE_KEYS) and task_problem is None
    return (manifest if usable else None), [Problem(run_dir / MANIFEST, message) for message in messages]


def _task_problem(manifest: dict) -> str | None:
    from ofa_eval.tasks.registry import get_task

    try:
        get_task(manifest.get("task"))
    except OfaError as error:
        return str(error)
    return None


def _snapshot_problems(manifest: dict) -> list[str]:
    snapshots, complete = manifest["snapshots"], manifest["state"] == "complete"
    per_run, total = manifest.get("snapshots_per_run"), manifest.get("total_steps")
    indexes, steps = [s["index"] for s in snapshots], [s["step"] for s in snapshots]
    problems = []
    if complete and not snapshots:
        problems.append("a complete run without snapshots")
    if indexes != list(range(1, len(indexes) + 1)):
        problems.append(f"snapshot indexes are {indexes}, not 1..{len(indexes)} in order")
    if per_run is not None and (len(snapshots) > per_run or (complete and len(snapshots) != per_run)):
        problems.append(f"{len(snapshots)} snapshots, snapshots_per_run is {per_run}")
    if any(later <= earlier for earlier, later in zip(steps, steps[1:])):
        problems.append(f"snapshot steps {steps} do not increase")
    if total is not None:
        problems += _schedule_problems(snapshots, total, per_run)
        problems += _epoch_problems(snapshots, total, manifest.get("epochs"))
    return problems


def _schedule_problems(snapshots: list[dict], total: int, per_run: int | None) -> list[str]:
    """Snapshots at every 1/snapshots_per_run of the total_steps, the last at the last step."""
    past = [s for s in snapshots if s["step"] > total]
    if past:
        return [f"snapshot {past[0]['index']} at step {past[0]['step']}, past total_steps {total}"
                + (f" ({len(past)} snapshots past it)" if len(past) > 1 else "")]
    if per_run is None or per_run > total:
        return [] if per_run is None else [f"total_steps {total} is fewer than snapshots_per_run {per_run}"]
    for s in snapshots[:per_run]:
        expected = s["index"] * total // per_run
        if s["step"] != expected:
            return [f"snapshot {s['index']} at step {s['step']}; with {total} total_steps and {per_run} "
                    f"snapshots_per_run it is taken at step {expected}"]
    return []


def _epoch_problems(snapshots: list[dict], total: int, epochs: int | None) -> list[str]:
    if epochs is None:
        return []
    for s in snapshots:
        if s.get("epoch") is not None and abs(s["epoch"] - s["step"] * epochs / total) > EPOCH_TOLERANCE:
            return [f"snapshot {s['index']} at epoch {s['epoch']}, but step {s['step']} of {total} "
                    f"total_steps over {epochs} epochs is epoch {round(s['step'] * epochs / total, 6)}"]
    return []


def _eval_set_problems(manifest: dict) -> list[str]:
    keys = [(e["dataset"], e["language"], e["split"]) for e in manifest["eval_sets"]]
    problems = [f"eval set {'/'.join(key)} is listed twice" for n, key in enumerate(keys) if key in keys[:n]]
    if manifest["state"] == "complete" and not any(e["role"] == "source" and e["split"] == "validation"
                                                   for e in manifest["eval_sets"]):
        problems.append("no source-language validation set (role source, split validation)")
    return problems


def _weight_storage_problems(manifest: dict) -> list[str]:
    """A complete run keeps the weights its weight_storage promises: every snapshot, or at least LAST."""
    snapshots, storage = manifest["snapshots"], manifest.get("weight_storage")
    if manifest["state"] != "complete" or not snapshots or storage is None:
        return []
    missing = [s["index"] for s in snapshots if not s.get("weights")]
    if storage == "all" and missing:
        return [f"weight_storage is 'all' but snapshot(s) {missing} have no weights"]
    if snapshots[-1]["index"] in missing:
        return [f"the last snapshot ({snapshots[-1]['index']}) has no weights"]
    return []


# ---------------------------------------------------------------------------------------------
# The files of a run folder


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, its symbolic links resolved, lies in `root` (itself resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


def link_problems(run_dir: Path) -> list[Problem]:
    """Symbolic links anywhere in the run folder that lead out of it (a link loop counts as leaving)."""
    root, problems = run_dir.resolve(), []
    for folder, dirs, files in os.walk(run_dir):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            if path.is_symlink() and not _inside(path, root):
                problems.append(Problem(path, f"a symbolic link to {os.readlink(path)}, outside the run folder"))
    return problems


def _weight_records(manifest: dict) -> list[tuple[str, dict]]:
    records = [(f"snapshots[{n}]", s) for n, s in enumerate(manifest["snapshots"])]
    return records + ([("ca", manifest["ca"])] if manifest.get("ca") else [])


def weight_problems(run_dir: Path, manifest: dict) -> list[Problem]:
    """Every weight file the manifest names: present, a well-formed safetensors file, of the recorded size."""
    from ofa_eval.weights.safetensors_file import read_header

    root, problems = run_dir.resolve(), []
    for where, record in _weight_records(manifest):
        if not record.get("weights"):
            continue
        path = run_dir / record["weights"]
        if not _inside(path, root):
            continue  # reported by link_problems
        try:
            if not path.is_file():
                problems.append(Problem(path, f"file not found ({where}.weights in {MANIFEST})"))
                continue
            read_header(path)
            size = path.stat().st_size
        except OfaError as error:
            problems.append(_problem_from(error, path))
            continue
        except OSError as error:
            problems.append(_unreadable(path, error))
            continue
        if record.get("bytes") is not None and record["bytes"] != size:
            problems.append(Problem(path, f"{size} bytes, the manifest says {record['bytes']}"))
    return problems


def _unreadable(path: Path, error: OSError) -> Problem:
    return Problem(path, f"cannot be read ({error.strerror or error})")


def _problem_from(error: OfaError, path: Path) -> Problem:
    """A Problem from an OfaError whose message starts with `path` (as the file readers' do)."""
    message, prefix = str(error), f"{path}: "
    return Problem(path, message[len(prefix):] if message.startswith(prefix) else message)


def leftover_problems(run_dir: Path, manifest: dict) -> list[Problem]:
    """Prediction folders and weight files of a complete run that its manifest does not list
    (left by an earlier attempt, e.g. a run resumed after its grid was edited)."""
    subjects = {snapshot_subject(s["index"]) for s in manifest["snapshots"]}
    subjects |= {CA_SUBJECT} if manifest.get("ca") else set()
    weights = {(run_dir / r["weights"]).resolve() for _, r in _weight_records(manifest) if r.get("weights")}
    problems = [Problem(folder, "a prediction folder the manifest does not list")
                for folder in _visible(run_dir / PREDICTIONS) if folder.name not in subjects]
    problems += [Problem(path, "a weight file the manifest does not list")
                 for path in _visible(run_dir / WEIGHTS) if path.resolve() not in weights]
    return problems


def _visible(folder: Path) -> list[Path]:
    """The entries of `folder` (none if it is absent), without hidden ones (temporary files of a killed write)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
# Gold and prediction tables


@dataclass
class _Table:
    path: Path
    ids: object  # polars Series of example ids
    values: object  # polars Series of the task's value column


def _read_table(path: Path, root: Path, column: str) -> tuple[_Table | None, list[Problem]]:
    """A gold or prediction table with well-formed example ids, or its problems."""
    from ofa_eval.store.parquet import read_parquet

    if not _inside(path, root):
        return None, []  # reported by link_problems
    try:
        frame = read_parquet(path, (EXAMPLE_ID, column))
    except OfaError as error:
        return None, [_problem_from(error, path)]
    except OSError as error:
        return None, [_unreadable(path, error)]
    ids = frame[EXAMPLE_ID]
    if str(ids.dtype) != "String":
        return None, [Problem(path, f"column '{EXAMPLE_ID}' holds {ids.dtype}, not strings")]
    if ids.null_count():
        return None, [Problem(path, f"column '{EXAMPLE_ID}' has {ids.null_count()} missing value(s)")]
    if ids.n_unique() < len(ids):
        duplicated = ids.filter(ids.is_duplicated())
        return None, [Problem(path, f"{len(duplicated)} rows share an example id, e.g. {duplicated[0]!r}")]
    return _Table(path, ids, frame[column]), []


def table_problems(run_dir: Path, manifest: dict, tables: dict | None = None) -> list[Problem]:
    """Every evaluation set's gold table and every subject's prediction table: present, readable,
    with the task's columns and value types, one row per example, the same example ids.

    `tables`, when given, receives every table read, so that ingest scores without reading again:
    {(GOLD or a subject, dataset, language, split): (example ids, values)} (polars Series)."""
    from ofa_eval.tasks.registry import get_task

    task, root, problems = get_task(manifest["task"]), run_dir.resolve(), []
    subjects = [snapshot_subject(s["index"]) for s in manifest["snapshots"]]
    subjects += [CA_SUBJECT] if manifest.get("ca") else []
    for eval_set in manifest["eval_sets"]:
        key = (eval_set["dataset"], eval_set["language"], eval_set["split"])
        gold, found = _read_table(run_dir / eval_set["gold"], root, task.gold_column)
        problems += found
        _keep(tables, (GOLD, *key), gold)
        gold_values = _value_problems_of(task, "gold", gold, manifest.get("label_names")) if gold is not None else []
        problems += (_row_count_problems(gold, eval_set) if gold is not None else []) + gold_values
        for subject in subjects:
            path = run_dir / predictions_folder(subject) / prediction_file(
                eval_set["dataset"], eval_set["language"], eval_set["split"])
            predictions, found = _read_table(path, root, task.prediction_column)
            problems += found
            _keep(tables, (subject, *key), predictions)
            if predictions is not None:
                problems += _prediction_problems(task, predictions, gold, manifest.get("label_names"),
                                                 pair=not gold_values)
    return problems


def _keep(tables: dict | None, key: tuple, table: _Table | None) -> None:
    if tables is not None and table is not None:
        tables[key] = (table.ids, table.values)


def _row_count_problems(gold: _Table, eval_set: dict) -> list[Problem]:
    expected = eval_set.get("n_examples")
    if expected is None or len(gold.ids) == expected:
        return []
    return [Problem(gold.path, f"{len(gold.ids)} rows, the manifest's n_examples is {expected}")]


def _value_problems_of(task, kind: str, table: _Table, label_names) -> list[Problem]:
    problem = task.value_problem(kind, table.values, label_names)
    return [Problem(table.path, problem)] if problem else []


def _prediction_problems(task, predictions: _Table, gold: _Table | None, label_names, pair: bool) -> list[Problem]:
    """The prediction table's values, its example ids against the gold's (None: unreadable) and,
    when both tables' values are well formed (`pair`: the gold's are), pairs of gold and predicted values."""
    problems = _value_problems_of(task, "prediction", predictions, label_names)
    if gold is None:
        return problems
    in_gold_order = predictions.ids.equals(gold.ids)  # as the producers write them: no set comparison needed
    id_problem = None if in_gold_order else _id_problem(gold.ids, predictions.ids)
    if id_problem:
        return problems + [Problem(predictions.path, id_problem)]
    if pair and not problems:
        if in_gold_order and gold.ids.is_sorted():
            pair_problem = task.pair_problem(gold.ids, gold.values, predictions.values)
        else:
            gold_order, order = gold.ids.arg_sort(), predictions.ids.arg_sort()
            pair_problem = task.pair_problem(gold.ids.gather(gold_order), gold.values.gather(gold_order),
                                             predictions.values.gather(order))
        problems += [Problem(predictions.path, pair_problem)] if pair_problem else []
    return problems


def _id_problem(gold_ids, prediction_ids) -> str | None:
    missing = gold_ids.filter(~gold_ids.is_in(prediction_ids.implode()))
    extra = prediction_ids.filter(~prediction_ids.is_in(gold_ids.implode()))
    parts = []
    if len(missing):
        parts.append(f"no prediction for {len(missing)} gold example(s), e.g. {missing[0]!r}")
    if len(extra):
        parts.append(f"{len(extra)} example id(s) not in the gold table, e.g. {extra[0]!r}")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# One run folder, and every run folder under a root


def validate_run(run_dir: Path, tables: dict | None = None, parsed: object = None) -> list[Problem]:
    """Every problem of one run folder (an empty list when it is fine); `tables`: see `table_problems`;
    `parsed`: the manifest's JSON when the caller has read it already."""
    run_dir = Path(run_dir)
    manifest, problems = manifest_problems(run_dir, parsed)
    problems += _unreadable_as_problem(link_problems, run_dir)
    if manifest is not None and manifest["state"] == "complete":
        problems += _unreadable_as_problem(weight_problems, run_dir, manifest)
        problems += _unreadable_as_problem(table_problems, run_dir, manifest, tables)
        problems += _unreadable_as_problem(leftover_problems, run_dir, manifest)
    return problems


def _unreadable_as_problem(check, run_dir: Path, *args) -> list[Problem]:
    """`check`'s problems; a file it could not read at all (permissions, a name too long) is one."""
    try:
        return check(run_dir, *args)
    except OSError as error:
        return [_unreadable(Path(error.filename or run_dir), error)]


def check_run(run_dir: Path, tables: dict | None = None, parsed: object = None) -> dict:
    """The manifest of a run folder without problems; OfaError with the first problem otherwise.
    `tables`, when given, receives the gold and prediction tables read (see `table_problems`);
    `parsed`: the manifest's JSON when the caller has read it already (it is not read again)."""
    run_dir = Path(run_dir)
    if parsed is None:
        parsed, problems = read_manifest_json(run_dir)
        if problems:
            raise OfaError(problems[0].line())
    problems = validate_run(run_dir, tables, parsed)
    if problems:
        raise OfaError(problems[0].line())
    return parsed


def looks_like_run(folder: Path) -> bool:
    """A folder holding what a run folder holds from its start (gold/ or predictions/), but not an averaged model."""
    return not (folder / AVERAGE_MANIFEST).exists() and any((folder / name).is_dir() for name in (GOLD, PREDICTIONS))


@dataclass
class Discovery:
    """What is under a root: run folders (with a manifest), run-like folders without one, and warnings."""

    run_dirs: list[Path]
    without_manifest: list[Path]
    warnings: list[str]


def find_run_folders(root: Path) -> Discovery:
    """The run folders under `root` (or `root` itself): folders holding a manifest.json. Folders that
    look like run folders but have no manifest are listed apart; symbolic links are not followed."""
    root = Path(root)
    if not root.is_dir():
        raise OfaError(f"{root}: not a directory")
    if (root / MANIFEST).is_file():
        return Discovery([root], [], [])
    if looks_like_run(root):
        return Discovery([], [root], [])
    found = Discovery([], [], [])
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        if MANIFEST in files:
            found.run_dirs.append(here)
            dirs.clear()
        elif here != root and looks_like_run(here):
            found.without_manifest.append(here)
            dirs.clear()
        for name in [d for d in dirs if (here / d).is_symlink()]:
            if (here / name / MANIFEST).is_file() or looks_like_run(here / name):
                found.warnings.append(f"{here / name}: a symbolic link to a run folder, not followed")
    found.warnings += [f"{folder}: no {MANIFEST}, skipped (a run that never started writing, or a damaged copy)"
                       for folder in found.without_manifest]
    if not found.run_dirs:
        found.warnings.append(f"{root}: no run folders (folders holding a {MANIFEST})")
    return found


def _identity(manifest: dict) -> tuple | None:
    """(task, model, learning rate, batch size, seed) when every part is well formed."""
    values = tuple(manifest.get(key) for key in IDENTITY_KEYS)
    task, model, learning_rate, batch_size, seed = values
    if not (isinstance(task, str) and isinstance(model, str) and rules.is_number(learning_rate)
            and math.isfinite(learning_rate) and type(batch_size) is int and type(seed) is int):
        return None
    return task, model, float(learning_rate), batch_size, seed


def identity_problems(manifests: dict[Path, dict]) -> list[Problem]:
    """Two run folders that are one run: the same run name (task, model), or the same task, model,
    learning rate, batch size and seed. Each problem names both folders."""
    problems, names, configurations = [], {}, {}
    for run_dir, manifest in manifests.items():
        identity = _identity(manifest)
        if identity is None:
            continue
        name = (identity[0], identity[1], run_name(manifest, run_dir))
        if name in names:
            problems.append(Problem(run_dir / MANIFEST,
                                    f"run {name[2]!r} ({name[0]}, {name[1]}) is also in {names[name]}"))
        elif identity in configurations:
            problems.append(Problem(run_dir / MANIFEST, "the same task, model, learning rate, batch size and seed "
                                                        f"as {configurations[identity]}"))
        names.setdefault(name, run_dir)
        configurations.setdefault(identity, run_dir)
    return problems


def _identity_fields(manifest: dict) -> dict:
    """What `identity_problems` and ingest's plan read of a manifest (only that: a lab's store has
    thousands of runs, and whole manifests would make memory grow with their number)."""
    return {key: manifest[key] for key in (*IDENTITY_KEYS, "run_name", "state") if key in manifest}


def _readable_manifests(run_dirs: list[Path]) -> dict[Path, dict]:
    """`_identity_fields` of each readable manifest."""
    manifests = {}
    for run_dir in run_dirs:
        manifest, _ = _read_manifest(run_dir)
        if manifest is not None:
            manifests[run_dir] = _identity_fields(manifest)
    return manifests


def validate_runs(root: Path) -> tuple[list[Path], list[Problem], list[str]]:
    """(run folders, every problem of every run folder under `root` and between them, warnings).

    `root` itself a run-like folder without a manifest is a problem; such folders under it are warnings.
    """
    found = find_run_folders(root)
    problems = [Problem(folder / MANIFEST, "file not found (a run folder without its manifest)")
                for folder in found.without_manifest if folder == Path(root)]
    for run_dir in found.run_dirs:
        problems += validate_run(run_dir)
    problems += identity_problems(_readable_manifests(found.run_dirs))
    return found.run_dirs, problems, found.warnings


@dataclass(frozen=True)
class CheckedManifest:
    """A manifest `check_run_folders` checked: the fields ingest plans with (`_identity_fields`)
    and the file's text, which the worker scoring the run parses again. Parsed, a manifest takes
    about four times the memory of its text, and ingest holds every pending run's until its
    worker takes it: with dicts, the parent's peak memory grew with the number of runs."""

    fields: dict
    text: str

    def parsed(self) -> dict:
        return json.loads(self.text)


def check_run_folders(root: Path, warn: Callable[[str], None] | None = None) -> dict[Path, CheckedManifest]:
    """For ingest: {run folder: its checked manifest} under `root` (each file read once, here:
    ingest passes the text on) and no run in two folders.

    OfaError with the first problem: `root` a run folder without a manifest, a malformed manifest
    (of a running run too), or two folders holding one run. Run-like folders without a manifest
    under `root` are skipped with a warning (`warn`, default: a `warning:` line on stderr).
    """
    root = Path(root)
    found = find_run_folders(root)
    if found.without_manifest == [root]:
        raise OfaError(f"{root / MANIFEST}: file not found (a run folder without its manifest)")
    for line in found.warnings:
        (warn or _warn_on_stderr)(line)
    checked = {run_dir: _checked_manifest(run_dir) for run_dir in found.run_dirs}
    problems = identity_problems({run_dir: manifest.fields for run_dir, manifest in checked.items()})
    if problems:
        raise OfaError(problems[0].line())
    return checked


def _checked_manifest(run_dir: Path) -> CheckedManifest:
    text, parsed, problems = read_manifest_text(run_dir)
    if not problems:
        manifest, problems = manifest_problems(run_dir, parsed)
    if problems:
        raise OfaError(problems[0].line())
    return CheckedManifest(_identity_fields(manifest), text)


def _warn_on_stderr(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def conflicts_with_store(con, manifest: dict, run_dir: Path) -> str | None:
    """Why the store cannot take this run, or None: it already holds the run's name (for its task
    and model) from another folder, or another run of the same task, model, learning rate, batch
    size and seed. A run ingested before from this very folder is no conflict (ingest skips it)."""
    identity = _identity(manifest)
    if identity is None:
        return None
    task, model, learning_rate, batch_size, seed = identity
    name, here = run_name(manifest, Path(run_dir)), str(Path(run_dir).resolve())
    rows = con.execute(
        "SELECT external_id, path, origin FROM runs WHERE task = ? AND model = ? AND "
        "(external_id = ? OR (learning_rate = ? AND batch_size = ? AND seed = ?)) ORDER BY run_id",
        [task, model, name, learning_rate, batch_size, seed]).fetchall()
    for external_id, path, origin in rows:
        if external_id == name and path == here:
            continue
        where = f"ingested from {path}" if path else f"imported from {origin}"
        if external_id == name:
            return f"{Path(run_dir) / MANIFEST}: the store already has a run named {name!r} ({task}, {model}), {where}"
        return (f"{Path(run_dir) / MANIFEST}: the store already has run {external_id!r} ({where}) with the same "
                f"task, model, learning rate, batch size and seed")
    return None
