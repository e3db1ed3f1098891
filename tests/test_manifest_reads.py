"""Ingest reads each run's manifest.json once (issue 21): phase 1 reads and checks it, and the
manifest's text travels with the run to validation and scoring (issue 20: the text, not the
parsed manifest, so that the parent's memory does not grow four times as fast with the runs)."""

import io
import json
import tracemalloc
from pathlib import Path

import duckdb

from synthetic_runs import write_grid


def _count_manifest_opens(monkeypatch) -> dict[Path, int]:
    """Count every open of a file named manifest.json, by folder (pathlib's read_text goes through io.open)."""
    opens: dict[Path, int] = {}
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).name == "manifest.json":
            folder = Path(file).parent.resolve()
            opens[folder] = opens.get(folder, 0) + 1
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    return opens


def test_ingest_opens_each_manifest_once(tmp_path, monkeypatch):
    from ofa_eval.artifacts.ingest import ingest_runs

    runs = write_grid(tmp_path / "runs")
    opens = _count_manifest_opens(monkeypatch)
    db = tmp_path / "store.duckdb"
    summary = ingest_runs(str(db), tmp_path / "runs", workers=1)  # one process: every open is counted here
    assert sorted(summary.ingested) == sorted(runs)
    assert opens == {(tmp_path / "runs" / name).resolve(): 1 for name in runs}
    with duckdb.connect(str(db), read_only=True) as con:  # the manifests' content reached the store
        stored = con.execute("SELECT external_id, learning_rate, batch_size FROM run_table").fetchall()
    assert sorted(stored) == sorted((name, lr, bs) for name, ((lr, bs), _) in runs.items())


def test_counting_sees_a_second_read(tmp_path, monkeypatch):
    """The counter itself: reading a manifest twice, as validation and scoring each did, counts 2."""
    from ofa_eval.artifacts.scoring import read_manifest, score_run

    write_grid(tmp_path / "runs")
    run = next((tmp_path / "runs").iterdir())
    opens = _count_manifest_opens(monkeypatch)
    score_run(run, read_manifest(run))
    assert opens == {run.resolve(): 1}
    score_run(run)
    assert opens == {run.resolve(): 2}


def _held_bytes(make) -> tuple[object, int]:
    """(what `make()` returns, the bytes of Python memory it still holds)."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        made = make()
        held = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    return made, held


def test_checked_manifests_hold_text_not_parsed_manifests(tmp_path):
    """What phase 1 hands on for each run, until its worker takes it, weighs less than half of the
    parsed manifests (measured against json.loads of the same files), and is the file's content."""
    from ofa_eval.artifacts.validation import check_run_folders

    write_grid(tmp_path / "runs")
    folders = sorted((tmp_path / "runs").iterdir())
    check_run_folders(tmp_path / "runs")  # the first call fills caches (imports, the task registry): not measured
    parsed, parsed_bytes = _held_bytes(lambda: [json.loads((f / "manifest.json").read_text()) for f in folders])
    checked, checked_bytes = _held_bytes(lambda: check_run_folders(tmp_path / "runs"))
    assert checked_bytes < parsed_bytes / 2, (checked_bytes, parsed_bytes)
    assert [checked[f].parsed() for f in folders] == parsed
    assert [(checked[f].fields["task"], checked[f].fields["seed"], checked[f].fields["state"]) for f in folders] \
        == [(m["task"], m["seed"], m["state"]) for m in parsed]
