"""Predictions on evaluation sets: during training, and for averaged models afterwards.

`predict` runs a model over one evaluation set's features and decodes per-example predictions
with the task's own code. `predict_with_weights(run_dir, weights, out_dir)` is what
`ofa-eval materialize` calls: it rebuilds a run's model from the run folder (`model/` holds the
config and tokenizer, `inputs/` the evaluation examples), loads other weights (an average of
several runs' snapshots), and writes one prediction table per evaluation set into `out_dir`.
"""

from __future__ import annotations

import json
from pathlib import Path

from producers import artifacts
from producers.batching import collate, eval_batches
from producers.modeling import autocast, load_tokenizer, model_from_config, pick_device
from producers.tasks import EvalSet, get_task


def model_outputs(model, task, features: list[dict], batch_size: int, device, pad_token_id: int) -> list:
    """The task's per-feature outputs, in feature order; leaves the model in eval mode."""
    import torch

    model.eval()
    outputs = [None] * len(features)
    lengths = [len(f["input_ids"]) for f in features]
    with torch.inference_mode(), autocast(device):
        for indices in eval_batches(lengths, batch_size):
            batch = collate(features, indices, pad_token_id)
            output = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            for i, value in zip(indices, task.split_outputs(output, [lengths[i] for i in indices])):
                outputs[i] = value
    return outputs


def predict(model, task, eval_set: EvalSet, features, config, label_names, device, pad_token_id) -> list:
    """One prediction per example of the evaluation set."""
    outputs = model_outputs(model, task, features, config.eval_batch_size, device, pad_token_id)
    return task.decode(eval_set.examples, features, outputs, config, label_names)


def write_predictions(folder, task, eval_set: EvalSet, predictions: list) -> None:
    ids = [e["id"] for e in eval_set.examples]
    artifacts.write_table(Path(folder) / artifacts.table_name(eval_set),
                          artifacts.prediction_table(task.name, ids, predictions))


def read_inputs(run_dir, manifest: dict) -> list[EvalSet]:
    """The evaluation sets of a run folder, examples included (`inputs/`)."""
    from producers.formats import read_table

    return [EvalSet(e["dataset"], e["language"], e["split"], e["role"], read_table(Path(run_dir) / e["inputs"]))
            for e in manifest["eval_sets"]]


def predict_with_weights(run_dir, weights, out_dir) -> Path:
    """Predict every evaluation set of `run_dir` with the model weights in `weights`."""
    from safetensors.torch import load_file

    from producers.config import RunConfig

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest = json.loads((run_dir / artifacts.MANIFEST).read_text())
    config = RunConfig.from_recipe(manifest)
    task, device = get_task(manifest["task"]), pick_device()
    tokenizer = load_tokenizer(run_dir / "model")
    model = model_from_config(task, run_dir / "model")
    model.load_state_dict(load_file(str(weights)))
    model.to(device)
    for eval_set in read_inputs(run_dir, manifest):
        features = task.eval_features(eval_set.examples, tokenizer, config, manifest.get("label_names"))
        predictions = predict(model, task, eval_set, features, config, manifest.get("label_names"), device,
                              tokenizer.pad_token_id)
        write_predictions(out_dir, task, eval_set, predictions)
    return out_dir
