"""Predictions on evaluation sets: during training, and for averaged models afterwards.

`predict` runs a model over one evaluation set's features and decodes per-example predictions
with the task's own code. `predict_with_weights(run_dir, weights, out_dir)` is what
`ofa-eval materialize` calls: it rebuilds a run's model from the run folder (`model/` holds the
config and tokenizer, `inputs/` the evaluation examples), loads other weights (an average of
several runs' snapshots), and writes one prediction table per evaluation set into `out_dir`.

Materialization calls it for many averages of the same pool, whose reference runs share the
model config, tokenizer and evaluation inputs. So the built model and the tokenized evaluation
sets are kept for the next call (`Evaluation`, one in this process at a time), under a key made
of those files' contents, the task and the prediction settings: N averages build the model and
tokenize the inputs once, and each call only loads weights, runs the model and writes tables.
The cache is module state, so the function pickles by reference (submitit jobs) and each
process fills its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.artifacts import run_format
from producers import artifacts
from producers.batching import collate, eval_batches
from producers.modeling import autocast, load_tokenizer, model_from_config, pick_device
from producers.tasks import EvalSet, get_task

# On a CPU, a model this narrow (hidden size) runs fastest on one thread: its matrix products are
# too small to share out, and extra threads wait for cores that other processes hold (the
# quickstart's hidden size of 64: 4-6x faster on one thread of a loaded 2-core machine,
# benchmarks/results/materialize-cpu.md). The quickstart trains on one thread for the same reason.
ONE_THREAD_MAX_WIDTH = 128

# RunConfig fields that only shape training; every other one may change features or decoding
TRAINING_ONLY = ("model", "model_name_or_path", "learning_rate", "batch_size", "seed", "epochs", "weight_decay",
                 "warmup_ratio", "max_grad_norm", "snapshots", "weight_storage")


def model_outputs(model, task, features: list[dict], batch_size: int, device, pad_token_id: int,
                  progress=None) -> list:
    """The task's per-feature outputs, in feature order; leaves the model in eval mode.

    `progress.update(n)` (a tqdm bar) is called with the number of features of each batch done.
    """
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
            if progress is not None:
                progress.update(len(indices))
    return outputs


def predict(model, task, eval_set: EvalSet, features, config, label_names, device, pad_token_id,
            progress=None) -> list:
    """One prediction per example of the evaluation set."""
    outputs = model_outputs(model, task, features, config.eval_batch_size, device, pad_token_id, progress)
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


@contextlib.contextmanager
def cpu_threads_for(model, device):
    """One torch thread while a narrow model runs on a CPU (ONE_THREAD_MAX_WIDTH); else as set."""
    from ofa_eval.weights.averaging import torch_threads

    width = getattr(model.config, "hidden_size", None)
    if device.type != "cpu" or width is None or width > ONE_THREAD_MAX_WIDTH:
        yield
        return
    with torch_threads(1):
        yield


@dataclass
class Evaluation:
    """A reference run's model (built once; weights are loaded into it) and tokenized evaluation sets."""

    key: str
    task: object
    model: object
    device: object
    pad_token_id: int
    label_names: list[str] | None
    eval_sets: list[tuple[EvalSet, list[dict]]]

    @classmethod
    def build(cls, key: str, run_dir: Path, manifest: dict, config) -> Evaluation:
        from tqdm import tqdm

        task, device = get_task(manifest["task"]), pick_device()
        examples = sum(e.get("n_examples") or 0 for e in manifest["eval_sets"])
        tqdm.write(f"{run_dir.name}: building the model on {device} and tokenizing {len(manifest['eval_sets'])} "
                   f"evaluation sets ({examples} examples), once for the averages of its pool", file=sys.stderr)
        tokenizer = load_tokenizer(run_dir / run_format.MODEL)
        model = model_from_config(task, run_dir / run_format.MODEL).to(device)
        label_names = manifest.get("label_names")
        eval_sets = [(e, task.eval_features(e.examples, tokenizer, config, label_names))
                     for e in read_inputs(run_dir, manifest)]
        return cls(key, task, model, device, tokenizer.pad_token_id, label_names, eval_sets)

    def predict(self, weights, out_dir: Path, config) -> None:
        """Load `weights` into the model and write its predictions on every evaluation set."""
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(weights), device=str(self.device)))
        with cpu_threads_for(self.model, self.device):
            for eval_set, features in self.eval_sets:
                predictions = predict(self.model, self.task, eval_set, features, config, self.label_names,
                                      self.device, self.pad_token_id)
                write_predictions(out_dir, self.task, eval_set, predictions)


_evaluation: Evaluation | None = None  # the last one this process used


def evaluation_key(run_dir: Path, manifest: dict, config) -> str:
    """What the model and the features depend on: the task, the prediction settings, the label
    names, and the contents of `model/` (config, tokenizer) and of the evaluation inputs."""
    from producers.config import file_digest

    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in TRAINING_ONLY}
    files = sorted(p for p in (run_dir / run_format.MODEL).iterdir() if p.is_file())
    described = {"settings": settings, "label_names": manifest.get("label_names"),
                 "model": {p.name: file_digest(p) for p in files},
                 "eval_sets": [{**{k: e[k] for k in ("dataset", "language", "split", "role")},
                                "inputs": file_digest(run_dir / e["inputs"])} for e in manifest["eval_sets"]]}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def predict_with_weights(run_dir, weights, out_dir) -> Path:
    """Predict every evaluation set of `run_dir` with the model weights in `weights`, reusing the
    model and tokenized inputs of the previous call when they are the same (`evaluation_key`)."""
    from producers.config import RunConfig

    global _evaluation
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest = json.loads((run_dir / run_format.MANIFEST).read_text())
    config = RunConfig.from_recipe(manifest)
    key = evaluation_key(run_dir, manifest, config)
    if _evaluation is None or _evaluation.key != key:
        _evaluation = None  # free the previous model before building the next
        _evaluation = Evaluation.build(key, run_dir, manifest, config)
    _evaluation.predict(weights, out_dir, config)
    return out_dir
