"""A run resumes only under the recipe it started with: `train` refuses an interrupted run whose
grid changed since (naming the differences), and `--restart-changed` starts it over.

A 1-layer, 32-wide XLM-R-shaped model trains on 40 synthetic NER examples in batches of 4 (10
steps per epoch), offline, on one CPU thread; each run takes a few seconds.
"""

import functools
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RUN = "ner-tiny-lr0.01-bs4-seed1"


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world("resume-recipe")


def write_grid(world, name, epochs=3, train_limit=None):
    limit = f", train_limit = {train_limit}" if train_limit is not None else ""
    path = world / name
    path.write_text("\n".join([
        'model = "tiny"', 'model_name_or_path = "./model"', "learning_rates = [1e-2]", "batch_sizes = [4]",
        "seeds = [1]", f"epochs = {epochs}", "max_length = 48", 'weight_storage = "all"', "[ner]",
        f'data = {{ directory = "data/ner", dataset = "synth-ner"{limit} }}', 'head_alignment = { mode = "none" }',
    ]) + "\n")
    return path


class Killed(Exception):
    pass


def kill_after_first_snapshot(index):
    if index == 1:
        raise Killed


def interrupted_run(cli, world, runs, monkeypatch, grid):
    """Train `grid` into `runs` and kill it right after its first snapshot."""
    from producers import train

    with monkeypatch.context() as patch:
        patch.setattr(train, "train_run", functools.partial(train.train_run, on_snapshot=kill_after_first_snapshot))
        with pytest.raises(Killed):
            cli("train", grid, "--out", runs, "--quiet")
    manifest = json.loads((runs / RUN / "manifest.json").read_text())
    assert manifest["state"] == "running" and len(manifest["snapshots"]) == 1
    return manifest


def files_of(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_edited_grid_is_refused_and_restart_changed_trains_the_new_recipe(cli, world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    runs = tmp_path / "runs"
    before = interrupted_run(cli, world, runs, monkeypatch, write_grid(world, "grid-3-epochs.toml", epochs=3))
    assert before["total_steps"] == 30
    edited = write_grid(world, "grid-2-epochs.toml", epochs=2)

    refused = cli("train", edited, "--out", runs, "--quiet")
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {runs / RUN / 'manifest.json'}: the grid changed since this run started (epochs 3 -> 2); "
        "rerun with --restart-changed to start these runs over"]
    assert json.loads((runs / RUN / "manifest.json").read_text()) == before  # nothing was touched

    restarted = cli("train", edited, "--out", runs, "--quiet", "--restart-changed")
    assert restarted.exit_code == 0, restarted.output
    assert f"{RUN}: starting over (epochs 3 -> 2)" in restarted.stderr
    manifest = json.loads((runs / RUN / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["epochs"] == 2
    # 2 epochs of 10 steps, a snapshot every 10% of them: nothing of the 30-step recipe is left
    assert manifest["total_steps"] == 20
    assert [s["step"] for s in manifest["snapshots"]] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]

    fresh = tmp_path / "fresh"
    assert cli("train", edited, "--out", fresh, "--quiet").exit_code == 0
    assert files_of(runs / RUN) == files_of(fresh / RUN)
    for path in (fresh / RUN / "weights").iterdir():
        ours, theirs = load_file(str(runs / RUN / "weights" / path.name)), load_file(str(path))
        assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours), path.name


def test_changed_example_limit_is_named(cli, world, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    interrupted_run(cli, world, runs, monkeypatch, write_grid(world, "grid-all-examples.toml"))
    refused = cli("train", write_grid(world, "grid-20-examples.toml", train_limit=20), "--out", runs, "--quiet")
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert line.startswith(f"error: {runs / RUN / 'manifest.json'}: the grid changed since this run started "
                           "(train_examples 40 -> 20, train_sha256 "), line
    assert line.endswith("); rerun with --restart-changed to start these runs over"), line


def test_unchanged_grid_resumes(cli, world, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    grid = write_grid(world, "grid-unchanged.toml")
    interrupted_run(cli, world, runs, monkeypatch, grid)
    resumed = cli("train", grid, "--out", runs, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((runs / RUN / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["total_steps"] == 30


def test_restart_changed_leaves_a_run_alone_while_its_slurm_job_is_queued(cli, world, tmp_path, monkeypatch):
    """Clearing the folder under a job that still trains it would corrupt the run: refused."""
    import shutil

    from ofa_eval.jobs import slurm as jobs

    runs = tmp_path / "runs"
    before = interrupted_run(cli, world, runs, monkeypatch, write_grid(world, "grid-queued.toml", epochs=3))
    (runs / "_slurm").mkdir()
    (runs / "_slurm" / "jobs.json").write_text(json.dumps({RUN: {"job_id": "77_0", "log": "77_0_log.err"}}))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(jobs, "queue_states", lambda job_ids: {"77_0": ("RUNNING", "None")})
    edited = write_grid(world, "grid-queued-2.toml", epochs=2)
    refused = cli("train", edited, "--out", runs, "--quiet", "--restart-changed")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (f"error: {runs / RUN}: SLURM job 77_0 still trains this run; cancel it "
                                      "(scancel 77_0) or let it end before --restart-changed")
    assert json.loads((runs / RUN / "manifest.json").read_text()) == before
