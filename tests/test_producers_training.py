"""Producers with real (tiny) training: run folders, head alignment, resuming, predicting, launchers.

Everything trains a 1-layer, 32-wide XLM-R-shaped model on a few dozen synthetic examples for
about a dozen steps, offline, on one CPU thread.
"""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def world(tiny_world):
    """A synthetic corpus and a tiny model folder, shared by the module's tests."""
    return tiny_world("producers")


def task_data(world, task):
    from producers.data import load_task_data

    return load_task_data(task, {"directory": f"data/{task}", "dataset": f"synth-{task}"}, world)


def run_config(world, task="nli", **changes):
    from producers.config import RunConfig

    values = dict(task=task, model="tiny", model_name_or_path=str(world / "model"), learning_rate=3e-3,
                  batch_size=8, seed=1, epochs=2, max_length=48, stride=16)
    return RunConfig(**{**values, **changes})


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(a: dict, b: dict):
    import torch

    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- a complete run folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("task,storage", [("nli", "needed"), ("qa", "all"), ("ner", "needed")])
def test_run_folder_is_complete_and_ingestible(world, tmp_path, task, storage):
    from ofa_eval.common.keys import file_sha256
    from ofa_eval.artifacts.scoring import check_safetensors, score_run
    from producers.artifacts import folder_bytes
    from producers.train import snapshot_steps, train_run

    config = run_config(world, task, weight_storage=storage)
    data = task_data(world, task)
    run = train_run(config, data, tmp_path / config.name, progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "complete" and not (run / "checkpoint").exists()
    assert manifest["bytes_on_disk"] == folder_bytes(run)
    assert [s["step"] for s in manifest["snapshots"]] == snapshot_steps(manifest["total_steps"])
    # 40 examples in batches of 8, 2 epochs; QA's long contexts make more than one window
    assert manifest["total_steps"] == 10 if task != "qa" else manifest["total_steps"] > 10
    for key in ("task", "model", "model_name_or_path", "learning_rate", "batch_size", "seed", "epochs",
                "max_length", "weight_decay", "warmup_ratio", "max_grad_norm", "head_alignment", "code_version",
                "weight_storage", "snapshots", "ca", "eval_sets", "bytes_on_disk"):
        assert key in manifest, key
    assert ("label_names" in manifest) == (task != "qa")
    subjects = [f"snapshot-{i:02d}" for i in range(1, 11)] + ["ca"]
    for eval_set in manifest["eval_sets"]:
        assert (run / eval_set["gold"]).is_file() and (run / eval_set["inputs"]).is_file()
        for subject in subjects:
            assert (run / "predictions" / subject / Path(eval_set["gold"]).name).is_file()
    kept = [s["index"] for s in manifest["snapshots"] if s["weights"]]
    if storage == "all":
        assert kept == list(range(1, 11))
    else:
        scores = [s["source_validation"] for s in manifest["snapshots"]]
        assert kept == sorted({scores.index(max(scores)) + 1, 10})
    for record in [*manifest["snapshots"], manifest["ca"]]:
        if record["weights"]:
            check_safetensors(run / record["weights"], record["bytes"])
            assert file_sha256(run / record["weights"]) == record["sha256"]
    assert sorted(p.name for p in (run / "weights").iterdir()) == sorted(
        [f"snapshot-{i:02d}.safetensors" for i in kept] + ["ca.safetensors"])
    scored = score_run(run)
    best = max(s["source_validation"] for s in manifest["snapshots"])
    assert max(v[scored.metric_name] for (subject, _, language, split), v in scored.scores.items()
               if subject.startswith("snapshot") and language == "en" and split == "validation") == pytest.approx(best)


def test_ca_is_the_mean_of_the_snapshots(world, tmp_path):
    import torch

    from producers.train import train_run

    config = run_config(world, "ner", weight_storage="all", learning_rate=1e-2)
    run = train_run(config, task_data(world, "ner"), tmp_path / config.name, progress=False)
    snapshots = [weights(run / f"weights/snapshot-{i:02d}.safetensors") for i in range(1, 11)]
    ca = weights(run / "weights/ca.safetensors")
    for name, value in ca.items():
        assert torch.allclose(value, torch.stack([s[name] for s in snapshots]).mean(0), atol=1e-6), name


def test_predict_with_weights_reproduces_the_runs_predictions(world, tmp_path):
    import polars as pl

    from producers.predict import predict_with_weights
    from producers.train import train_run

    config = run_config(world, "qa")
    run = train_run(config, task_data(world, "qa"), tmp_path / config.name, progress=False)
    out = predict_with_weights(run, run / "weights" / "snapshot-10.safetensors", tmp_path / "again")
    for path in (run / "predictions" / "snapshot-10").iterdir():
        assert pl.read_parquet(out / path.name).equals(pl.read_parquet(path))


# --- resuming ------------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(world, tmp_path):
    import polars as pl

    from producers.train import train_run

    config = run_config(world, "nli", weight_storage="all")
    data = task_data(world, "nli")
    reference = train_run(config, data, tmp_path / "reference", progress=False)

    def kill_after_fourth(index):
        if index == 4:
            raise Killed

    resumed = tmp_path / "resumed"
    with pytest.raises(Killed):
        train_run(config, data, resumed, progress=False, on_snapshot=kill_after_fourth)
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["state"] == "running" and len(manifest["snapshots"]) == 4
    assert_checkpoint_is_safetensors_and_json(resumed / "checkpoint" / "state.safetensors", snapshots=4)
    (resumed / "weights" / "snapshot-05.safetensors").write_bytes(b"left by a killed job")
    train_run(config, data, resumed, progress=False)
    assert json.loads((resumed / "manifest.json").read_text())["state"] == "complete"
    assert not (resumed / "checkpoint").exists()
    for name in [f"snapshot-{i:02d}" for i in range(1, 11)] + ["ca"]:
        assert_same_tensors(weights(reference / f"weights/{name}.safetensors"),
                            weights(resumed / f"weights/{name}.safetensors"))
        for path in (reference / "predictions" / name).iterdir():
            assert pl.read_parquet(resumed / "predictions" / name / path.name).equals(pl.read_parquet(path))


def assert_checkpoint_is_safetensors_and_json(path, snapshots):
    """The resume state is tensors in safetensors and the rest JSON in its header: nothing pickled."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()["ofa_eval_checkpoint"])
        names = set(handle.keys())
    assert len(document["progress"]["snapshots"]) == snapshots
    assert document["scheduler"]["last_epoch"] == document["progress"]["step"]
    assert {"rng/torch", "rng/numpy"} <= names
    assert any(n.startswith("model/") for n in names) and any(n.startswith("ca/") for n in names)
    assert any(n.endswith("/exp_avg_sq") for n in names if n.startswith("optimizer/"))


# --- head alignment ------------------------------------------------------------------------------------


def test_frozen_copied_head_is_identical_across_runs(world, tmp_path):
    from producers.heads import head_folder, prepare_head, read_head
    from producers.modeling import tensors_sha256
    from producers.train import train_run

    data = task_data(world, "nli")
    initial = run_config(world, "nli", batch_size=32, epochs=1, learning_rate=1e-3)
    head = prepare_head("frozen-copied", initial, data, head_folder(tmp_path, initial))
    assert read_head(head_folder(tmp_path, initial)) == head
    saved = weights(head.path)
    assert tensors_sha256(saved) == head.sha256
    runs = [train_run(run_config(world, "nli", learning_rate=lr, seed=seed, weight_storage="all"), data,
                      tmp_path / f"run-{lr}-{seed}", head, progress=False) for lr, seed in ((3e-3, 1), (1e-2, 2))]
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["head_alignment"] == {"mode": "frozen-copied", "head_sha256": head.sha256}
        for path in (run / "weights").iterdir():
            trained = weights(path)
            assert_same_tensors({k: trained[k] for k in saved}, saved)
    first, second = (weights(run / "weights" / "snapshot-10.safetensors") for run in runs)
    assert all(not first[k].equal(second[k]) for k in first if k not in saved)  # the bodies differ


def test_shared_init_head_starts_every_run_alike_and_trains(world, tmp_path):
    from producers.heads import prepare_head
    from producers.train import train_run

    data = task_data(world, "ner")
    config = run_config(world, "ner", learning_rate=1e-2)
    head = prepare_head("shared-init", config, data, tmp_path / "head")
    again = prepare_head("shared-init", config, data, tmp_path / "head")
    assert again == head
    saved = weights(head.path)
    run = train_run(config, data, tmp_path / "run", head, progress=False)
    trained = weights(run / "weights" / "snapshot-10.safetensors")
    assert all(not trained[k].equal(saved[k]) for k in saved)  # the shared head is trained
    assert json.loads((run / "manifest.json").read_text())["head_alignment"]["mode"] == "shared-init"


# --- grids and launchers --------------------------------------------------------------------------------


def write_grid(world, path, tasks=("ner",), seeds=(1, 2), head="shared-init"):
    lines = ['model = "tiny"', 'model_name_or_path = "./model"', "learning_rates = [1e-2]", "batch_sizes = [8]",
             f"seeds = {list(seeds)}", "epochs = 2", "max_length = 48", 'weight_storage = "needed"']
    for task in tasks:
        lines += [f"[{task}]", f'data = {{ directory = "data/{task}", dataset = "synth-{task}" }}',
                  f'head_alignment = {{ mode = "{head}", learning_rate = 1e-3, batch_size = 32, epochs = 1 }}']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_command_trains_a_grid_locally(world, tmp_path):
    from click.testing import CliRunner

    from producers.commands import train

    grid = write_grid(world, world / "grid-command.toml", seeds=(1,))
    result = CliRunner().invoke(train, [str(grid), "--out", str(tmp_path / "runs"), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "ner-tiny-lr0.01-bs8-seed1" / "manifest.json").is_file()
    assert (tmp_path / "runs" / "_heads" / "ner-tiny" / "head.json").is_file()
    again = CliRunner().invoke(train, [str(grid), "--out", str(tmp_path / "runs"), "--quiet"])
    assert again.exit_code == 0 and "1 run(s) complete" in again.output


def test_submitit_local_executor_runs_the_grid(world, tmp_path, monkeypatch):
    from producers.grid import load_grid

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs run side by side on few cores
    from producers.launch import make_executor, submit

    experiments = load_grid(write_grid(world, world / "grid-submitit.toml", seeds=(1,)))
    runs = tmp_path / "runs"
    executor = make_executor(tmp_path / "logs", cluster="local", timeout_min=10)
    jobs = submit(experiments, runs, executor)
    assert len(jobs) == 2  # the head job, then the array of runs (one run here, to keep the test short)
    results = [job.result() for job in jobs]
    assert results[0].endswith("ner-tiny")
    for folder in results[1:]:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        assert manifest["state"] == "complete"
        assert manifest["head_alignment"]["head_sha256"] == json.loads(
            (runs / "_heads" / "ner-tiny" / "head.json").read_text())["sha256"]
    assert submit(experiments, runs, executor) == []  # nothing left to do
