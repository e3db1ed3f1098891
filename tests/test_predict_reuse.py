"""`predict_with_weights` across calls: the model is built and the inputs tokenized once per pool,
and every call still predicts exactly what the training loop predicted with those weights.

Two tiny QA runs of one pool (1-layer, 32-wide XLM-R-shaped model, 40 synthetic examples), and
one NER run of another; offline, one CPU thread.
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def runs(tiny_world):
    from producers.config import RunConfig
    from producers.data import load_task_data
    from producers.train import train_run

    root = tiny_world("predict-reuse")
    folders = {}
    for task, seed in (("qa", 1), ("qa", 2), ("ner", 1)):
        data = load_task_data(task, {"directory": f"data/{task}", "dataset": f"synth-{task}"}, root)
        config = RunConfig(task=task, model="tiny", model_name_or_path=str(root / "model"), learning_rate=3e-3,
                           batch_size=8, seed=seed, epochs=2, max_length=48, stride=16, weight_storage="all")
        folders[(task, seed)] = train_run(config, data, root / config.name, progress=False)
    return folders


def test_one_build_per_pool_and_the_training_loops_predictions(runs, tmp_path, monkeypatch):
    import polars as pl

    from producers import predict

    builds = []
    real_build = predict.Evaluation.build
    monkeypatch.setattr(predict.Evaluation, "build",
                        classmethod(lambda cls, *args: builds.append(args[1].name) or real_build(*args)))
    monkeypatch.setattr(predict, "_evaluation", None)
    calls = [(("qa", 1), "snapshot-03"), (("qa", 2), "snapshot-10"), (("qa", 1), "ca"), (("ner", 1), "snapshot-05"),
             (("ner", 1), "ca"), (("qa", 2), "snapshot-01")]
    for n, (run, subject) in enumerate(calls):
        out = predict.predict_with_weights(runs[run], runs[run] / "weights" / f"{subject}.safetensors",
                                           tmp_path / str(n))
        expected = sorted((runs[run] / "predictions" / subject).iterdir())
        assert expected and sorted(p.name for p in out.iterdir()) == [p.name for p in expected]
        for path in expected:
            assert pl.read_parquet(out / path.name).equals(pl.read_parquet(path)), (run, subject, path.name)
    # the QA runs share model config, tokenizer and inputs: built again only when the pool changes
    assert builds == [runs[("qa", 1)].name, runs[("ner", 1)].name, runs[("qa", 2)].name]
