"""A corpus of damaged copies of real run folders (written by the producers' trainer, tiny model):
`ingest` refuses every kind with a one-line error and leaves an empty and a filled store as they
were; `validate` lists a problem for every damaged folder and passes clean ones.

Every case is a folder holding the damaged run (or runs) and one clean run, so a refusal that
still wrote the clean run would show in the store.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
SIZES = {"train": 40, "validation": 8, "test": 8}
NLI_TEST = "synth-nli__far__test.parquet"
NLI_SOURCE = "synth-nli__en__validation.parquet"


# --- real run folders, and stores -------------------------------------------------------------------


def train(world: Path, task: str, seed: int, storage: str = "needed") -> Path:
    from producers.config import RunConfig
    from producers.data import load_task_data
    from producers.train import train_run

    data = load_task_data(task, {"directory": f"data/{task}", "dataset": f"synth-{task}"}, world)
    config = RunConfig(task=task, model="tiny", model_name_or_path=str(world / "model"), learning_rate=3e-3,
                       batch_size=8, seed=seed, epochs=2, max_length=48, stride=16, weight_storage=storage)
    return train_run(config, data, world / "runs" / config.name, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Real run folders: NLI (seeds 1 and 2), QA and NER."""
    import torch

    from producers import modeling, synthetic

    torch.set_num_threads(1)
    world = tmp_path_factory.mktemp("trained")
    synthetic.write_corpus(world / "data", sizes=SIZES)
    modeling.build_tiny_model(world / "model", synthetic.corpus_texts(world / "data"), vocab_size=300, **TINY)
    return {"nli": train(world, "nli", 1), "nli-2": train(world, "nli", 2), "qa": train(world, "qa", 1, "all"),
            "ner": train(world, "ner", 1)}


def run_cli(db: Path, *args):
    """`ofa-eval --db DB ARGS` in-process, exceptions caught: a traceback would show as result.exception."""
    from ofa_eval.cli import main

    return CliRunner().invoke(main, ["--db", str(db), *map(str, args)], catch_exceptions=True)


@pytest.fixture(scope="module")
def filled_store(trained, tmp_path_factory) -> Path:
    """A store holding the NLI seed-2, QA and NER runs."""
    db = tmp_path_factory.mktemp("filled") / "filled.duckdb"
    for key in ("nli-2", "qa", "ner"):
        result = run_cli(db, "ingest", trained[key], "--quiet")
        assert result.exit_code == 0, result.output
    return db


def empty_store(db: Path) -> Path:
    from ofa_eval.store.database import connected

    with connected(str(db)):
        pass
    return db


def store_dump(db: Path) -> dict[str, list]:
    """Every row of every public view."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        views = [name for (name,) in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
        return {view: con.execute(f'SELECT * FROM "{view}" ORDER BY ALL').fetchall() for view in views}
    finally:
        con.close()


# --- damage ------------------------------------------------------------------------------------------


def edit_manifest(run: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))  # NaN and Infinity as Python writes them


def edit_table(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


def copy_run(source: Path, destination: Path, seed: int) -> Path:
    """A copy of a real run folder as another run: its own seed and run name (`<parent>-<folder>`)."""
    shutil.copytree(source, destination, symlinks=True)
    edit_manifest(destination, lambda m: m.update(seed=seed, run_name=f"{destination.parent.name}-{destination.name}"))
    return destination


def set_snapshot(index: int, **values):
    return lambda m: m["snapshots"][index].update(values)


def outside_copy(run: Path, relative: str) -> Path:
    """A copy of one of the run's files outside the run folder."""
    outside = run.parents[2] / "outside" / run.parent.name / Path(relative).name
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / relative, outside)
    return outside


class Unpickled:
    """Makes a folder if anything ever unpickles it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@dataclass
class Case:
    name: str
    damage: Callable[[Path], None]  # damages the run folder `damaged` (in a case folder beside a clean run)
    where: str  # the file the error names, relative to the damaged run folder
    fragment: str  # part of the error message
    base: str = "nli"


def _pickle_weights(run: Path) -> None:
    (run / "weights/ca.safetensors").write_bytes(pickle.dumps(Unpickled(run.parent / "UNPICKLED")))


def _header_length(run: Path, length: int) -> None:
    path = run / "weights/snapshot-10.safetensors"
    path.write_bytes(length.to_bytes(8, "little") + path.read_bytes()[8:])


def _symlink_out(run: Path, relative: str) -> None:
    outside = outside_copy(run, relative)
    (run / relative).unlink()
    (run / relative).symlink_to(outside)


def _leftover_snapshot(run: Path) -> None:
    shutil.copytree(run / "predictions/snapshot-10", run / "predictions/snapshot-11")


def _resumed_after_edit(run: Path) -> None:
    """The grid's epochs went from 2 to 1 and the run resumed past its new end, then completed."""
    edit_manifest(run, lambda m: m.update(epochs=1, total_steps=5))


def _duplicate(run: Path, same_name: bool) -> None:
    """A twin of the run: the same run name (another seed), or the same configuration and seed (another name)."""
    twin = run.parent / "damaged-twin"
    shutil.copytree(run, twin)
    edit_manifest(twin, lambda m: m.update(seed=999) if same_name else m.update(run_name="twin"))


CASES = [
    Case("label-as-text", lambda r: edit_table(r / f"predictions/snapshot-03/{NLI_TEST}",
                                               lambda t: t.with_columns(pl.col("label").cast(pl.String))),
         f"predictions/snapshot-03/{NLI_TEST}", "holds String, not integer labels"),
    Case("gold-label-out-of-range", lambda r: edit_table(r / f"gold/{NLI_TEST}", lambda t: t.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(3).otherwise(pl.col("label")).alias("label"))),
         f"gold/{NLI_TEST}", "label(s) outside 0..2"),
    Case("predicted-label-out-of-range", lambda r: edit_table(r / f"predictions/ca/{NLI_TEST}",
                                                              lambda t: t.with_columns(pl.lit(-1).alias("label"))),
         f"predictions/ca/{NLI_TEST}", "outside 0..2"),
    Case("nan-learning-rate", lambda r: edit_manifest(r, lambda m: m.update(learning_rate=float("nan"))),
         "manifest.json", "learning_rate is NaN, not a finite number"),
    Case("nan-source-validation", lambda r: edit_manifest(r, set_snapshot(2, source_validation=float("nan"))),
         "manifest.json", "snapshots[2].source_validation is NaN"),
    Case("inf-source-validation", lambda r: edit_manifest(r, set_snapshot(4, source_validation=float("inf"))),
         "manifest.json", "snapshots[4].source_validation is Infinity"),
    Case("running-run-with-nan", lambda r: edit_manifest(r, lambda m: m.update(state="running", warmup_ratio=float("-inf"))),
         "manifest.json", "warmup_ratio is -Infinity, not a finite number"),
    Case("batch-size-as-text", lambda r: edit_manifest(r, lambda m: m.update(batch_size="8")),
         "manifest.json", "batch_size is '8', not an integer"),
    Case("batch-size-beyond-the-store", lambda r: edit_manifest(r, lambda m: m.update(batch_size=2**40)),
         "manifest.json", "batch_size is 1099511627776, outside"),
    Case("short-gold", lambda r: edit_table(r / f"gold/{NLI_SOURCE}", lambda t: t.head(len(t) - 1)),
         f"gold/{NLI_SOURCE}", "7 rows, the manifest's n_examples is 8"),
    Case("duplicate-example-id", lambda r: edit_table(r / f"predictions/snapshot-01/{NLI_TEST}", lambda t: t.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.col("example_id").first()).otherwise(pl.col("example_id")))),
         f"predictions/snapshot-01/{NLI_TEST}", "rows share an example id"),
    Case("foreign-example-id", lambda r: edit_table(r / f"predictions/snapshot-02/{NLI_TEST}", lambda t: t.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("stranger")).otherwise(pl.col("example_id")).alias("example_id"))),
         f"predictions/snapshot-02/{NLI_TEST}", "1 example id(s) not in the gold table, e.g. 'stranger'"),
    Case("duplicate-configuration", lambda r: _duplicate(r, same_name=False),
         "../damaged-twin/manifest.json", "the same task, model, learning rate, batch size and seed as"),
    Case("duplicate-run-name", lambda r: _duplicate(r, same_name=True),
         "../damaged-twin/manifest.json", "run 'duplicate-run-name-damaged' (nli, tiny) is also in"),
    Case("dotdot-path", lambda r: edit_manifest(r, set_snapshot(9, weights="../../outside.safetensors")),
         "manifest.json", "snapshots[9].weights is '../../outside.safetensors', a path that leaves the run folder"),
    Case("absolute-path", lambda r: edit_manifest(r, lambda m: m["eval_sets"][0].update(
        gold=str(outside_copy(r, f"gold/{NLI_SOURCE}")))),
         "manifest.json", "eval_sets[0].gold is '/"),
    Case("symlink-out-file", lambda r: _symlink_out(r, "weights/snapshot-10.safetensors"),
         "weights/snapshot-10.safetensors", "a symbolic link to /"),
    Case("symlink-out-gold", lambda r: _symlink_out(r, f"gold/{NLI_TEST}"), f"gold/{NLI_TEST}", "outside the run folder"),
    Case("resumed-after-edit", _resumed_after_edit, "manifest.json", "snapshot 6 at step 6, past total_steps 5"),
    Case("too-many-snapshots", lambda r: edit_manifest(r, lambda m: m.update(snapshots_per_run=5)),
         "manifest.json", "10 snapshots, snapshots_per_run is 5"),
    Case("off-schedule-step", lambda r: edit_manifest(r, lambda m: m.update(total_steps=12)),
         "manifest.json", "snapshot 5 at step 5; with 12 total_steps and 10 snapshots_per_run it is taken at step 6"),
    Case("leftover-snapshot-folder", _leftover_snapshot, "predictions/snapshot-11",
         "a prediction folder the manifest does not list"),
    Case("leftover-weights", lambda r: shutil.copy(r / "weights/ca.safetensors", r / "weights/snapshot-07.safetensors"),
         "weights/snapshot-07.safetensors", "a weight file the manifest does not list"),
    Case("header-length-overflow", lambda r: _header_length(r, 0xFFFFFFFFFFFFFFFF),
         "weights/snapshot-10.safetensors", "not a safetensors file (header length 18446744073709551615)"),
    Case("header-past-the-end", lambda r: _header_length(r, 10**6),
         "weights/snapshot-10.safetensors", "truncated safetensors file"),
    Case("pickle-for-safetensors", _pickle_weights, "weights/ca.safetensors", "safetensors"),
    Case("truncated-weights", lambda r: (r / "weights/ca.safetensors").write_bytes(
        (r / "weights/ca.safetensors").read_bytes()[:-10]), "weights/ca.safetensors", "truncated safetensors file"),
    Case("unreadable-header", lambda r: (r / "weights/ca.safetensors").write_bytes(
        (20).to_bytes(8, "little") + b"{not json at all!!}" + b"\0" * 64), "weights/ca.safetensors",
         "unreadable safetensors header"),
    Case("wrong-weight-size", lambda r: edit_manifest(r, lambda m: m["ca"].update(bytes=12)),
         "weights/ca.safetensors", "the manifest says 12"),
    Case("missing-column", lambda r: edit_table(r / f"predictions/snapshot-05/{NLI_TEST}", lambda t: t.drop("label")),
         f"predictions/snapshot-05/{NLI_TEST}", "missing column(s) label"),
    Case("missing-predictions", lambda r: (r / f"predictions/ca/{NLI_TEST}").unlink(),
         f"predictions/ca/{NLI_TEST}", "file not found"),
    Case("corrupt-table", lambda r: (r / f"gold/{NLI_TEST}").write_bytes(b"PAR1 garbage"),
         f"gold/{NLI_TEST}", "not a readable Parquet file"),
    Case("bad-manifest-json", lambda r: (r / "manifest.json").write_text("{not json"),
         "manifest.json", "not a readable JSON manifest"),
    Case("unknown-format-version", lambda r: edit_manifest(r, lambda m: m.update(format_version=2)),
         "manifest.json", "artifact format 2 (this ofa-eval reads 1)"),
    Case("unknown-task", lambda r: edit_manifest(r, lambda m: m.update(task="no-such-task")),
         "manifest.json", "unknown task 'no-such-task'"),
    Case("qa-gold-as-struct", lambda r: edit_table(r / "gold/synth-qa__far__test.parquet", lambda t: t.with_columns(
        pl.struct(text=pl.col("answers"), answer_start=pl.col("answers").list.eval(pl.lit(0))).alias("answers"))),
         "gold/synth-qa__far__test.parquet", "not lists of answer strings", base="qa"),
    Case("qa-answer-as-list", lambda r: edit_table(r / "predictions/snapshot-01/synth-qa__far__test.parquet",
                                                   lambda t: t.with_columns(pl.concat_list("answer"))),
         "predictions/snapshot-01/synth-qa__far__test.parquet", "not strings", base="qa"),
    Case("ner-unknown-tag", lambda r: edit_table(r / "predictions/ca/synth-ner__far__test.parquet", lambda t: t.with_columns(
        pl.col("tags").list.eval(pl.element().str.replace(r"^.*$", "B-MISC")))),
         "predictions/ca/synth-ner__far__test.parquet", "'B-MISC' not in label_names", base="ner"),
    Case("ner-tag-count", lambda r: edit_table(r / "predictions/ca/synth-ner__far__test.parquet", lambda t: t.with_columns(
        pl.col("tags").list.concat(pl.concat_list(pl.lit("O"))))),
         "predictions/ca/synth-ner__far__test.parquet", "different number of predicted and gold tags", base="ner"),
]
# Runs that are fine on their own but already in the filled store (copies of its NLI seed-2 run)
STORE_CASES = [
    Case("same-configuration-as-stored", lambda r: None, "manifest.json",
         "the store already has run 'nli-tiny-lr0.003-bs8-seed2'", base="nli-2"),
    Case("same-name-as-stored-elsewhere", lambda r: None, "manifest.json",
         "the store already has a run named 'nli-tiny-lr0.003-bs8-seed2' (nli, tiny), ingested from", base="nli-2"),
]


@pytest.fixture(scope="module")
def corpus(trained, tmp_path_factory) -> Path:
    """corpus/<case>/{damaged, clean}: every case's damaged run beside a clean one, each with its own seed."""
    root = tmp_path_factory.mktemp("corpus")
    for number, case in enumerate(CASES + STORE_CASES):
        folder = root / "cases" / case.name
        if case in STORE_CASES:
            shutil.copytree(trained[case.base], folder / "damaged")
            if case.name == "same-configuration-as-stored":
                edit_manifest(folder / "damaged", lambda m: m.update(run_name="damaged"))
        else:
            case.damage(copy_run(trained[case.base], folder / "damaged", seed=100 + number))
        copy_run(trained["nli"], folder / "clean", seed=300 + number)
    return root / "cases"


def assert_refused(result, case: Case, folder: Path):
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output + result.stderr
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    named = os.path.normpath(folder / "damaged" / case.where)
    assert lines[0].startswith(f"error: {named}: ") and case.fragment in lines[0], (named, lines[0])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("store", ["empty", "filled"])
def test_damaged_run_is_refused_and_the_store_unchanged(corpus, filled_store, tmp_path, case, store):
    db = tmp_path / "store.duckdb"
    shutil.copy(filled_store, db) if store == "filled" else empty_store(db)
    before = store_dump(db)
    assert_refused(run_cli(db, "ingest", corpus / case.name, "--quiet"), case, corpus / case.name)
    assert store_dump(db) == before
    assert not (corpus / case.name / "UNPICKLED").exists()


@pytest.mark.parametrize("case", STORE_CASES, ids=lambda case: case.name)
def test_run_already_in_the_store_under_another_name_or_path(corpus, filled_store, tmp_path, case):
    db = tmp_path / "store.duckdb"
    shutil.copy(filled_store, db)
    before = store_dump(db)
    assert_refused(run_cli(db, "ingest", corpus / case.name, "--quiet"), case, corpus / case.name)
    assert store_dump(db) == before


def test_the_undamaged_runs_ingest(corpus, tmp_path):
    """What the refusals are measured against: a case's clean run ingests, and so do the runs that
    conflict only with the filled store."""
    for case in [CASES[0], *STORE_CASES]:
        db = empty_store(tmp_path / f"{case.name}.duckdb")
        folder = corpus / case.name / ("clean" if case in CASES else "")
        result = run_cli(db, "ingest", folder, "--quiet")
        assert result.exit_code == 0, result.output
        assert f"{1 if case in CASES else 2} run(s) ingested" in result.stdout


# --- a run folder without its manifest ---------------------------------------------------------------


@pytest.fixture
def without_manifest(trained, tmp_path) -> Path:
    runs = tmp_path / "runs"
    copy_run(trained["nli"], runs / "clean", seed=7)
    copy_run(trained["nli"], runs / "no-manifest", seed=8)
    (runs / "no-manifest" / "manifest.json").unlink()
    return runs


@pytest.mark.parametrize("store", ["empty", "filled"])
def test_ingest_run_without_manifest_is_an_error(without_manifest, filled_store, tmp_path, store):
    db = tmp_path / "store.duckdb"
    shutil.copy(filled_store, db) if store == "filled" else empty_store(db)
    before = store_dump(db)
    result = run_cli(db, "ingest", without_manifest / "no-manifest")
    assert result.exit_code == 2 and "Traceback" not in result.output + result.stderr
    manifest = without_manifest / "no-manifest" / "manifest.json"
    assert result.stderr == f"error: {manifest}: file not found (a run folder without its manifest)\n"
    assert store_dump(db) == before


def test_ingest_runs_warns_about_a_folder_without_manifest(without_manifest, tmp_path):
    result = run_cli(tmp_path / "store.duckdb", "ingest", without_manifest, "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 run(s) ingested" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {without_manifest / 'no-manifest'}: no manifest.json, skipped "
                        "(a run that never started writing, or a damaged copy)"]


def test_validate_without_manifest(without_manifest, tmp_path):
    folder = run_cli(tmp_path / "unused.duckdb", "validate", without_manifest / "no-manifest")
    assert folder.exit_code == 1 and "manifest.json: file not found" in folder.stdout
    root = run_cli(tmp_path / "unused.duckdb", "validate", without_manifest)
    assert root.exit_code == 0 and "warning: " in root.stderr and "no-manifest" in root.stderr
    assert not (tmp_path / "unused.duckdb").exists()


# --- validate -------------------------------------------------------------------------------------------


def test_validate_lists_every_damaged_folder(corpus, tmp_path):
    result = run_cli(tmp_path / "unused.duckdb", "validate", corpus)
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stdout.strip().splitlines()
    for case in CASES:
        named = os.path.normpath(corpus / case.name / "damaged" / case.where)
        assert any(line.startswith(f"{named}: ") and case.fragment in line for line in lines), case.name
    assert not any("/clean/" in line for line in lines)  # nothing wrong with the clean runs
    assert lines[-1] == f"{2 * len(CASES + STORE_CASES) + 2} run folder(s) checked, {len(lines) - 1} problem(s)"


def test_validate_reports_every_problem_of_a_folder(trained, tmp_path):
    run = copy_run(trained["nli"], tmp_path / "runs" / "damaged", seed=5)
    edit_manifest(run, lambda m: m.update(learning_rate=float("inf"), seed=True))
    _leftover_snapshot(run)
    _header_length(run, 0xFFFFFFFFFFFFFFFF)
    result = run_cli(tmp_path / "unused.duckdb", "validate", tmp_path / "runs")
    assert result.exit_code == 1
    assert [line.split(": ", 1)[0] for line in result.stdout.splitlines()[:-1]] == [
        str(run / "manifest.json"), str(run / "manifest.json"), str(run / "weights/snapshot-10.safetensors"),
        str(run / "predictions/snapshot-11")]


def test_validate_passes_real_runs(trained, tmp_path):
    for key, run in trained.items():
        result = run_cli(tmp_path / "unused.duckdb", "validate", run)
        assert result.exit_code == 0 and result.stdout == "1 run folder(s) checked, 0 problem(s)\n", (key, result.output)
