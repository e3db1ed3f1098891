"""Adopt runs trained elsewhere: a Hugging Face Trainer output folder becomes a run folder.

`adopt(trainer_dir, task, data_spec, out)` reads the Trainer's `checkpoint-<step>/` folders
(`model.safetensors` or a sharded `model.safetensors.index.json`, `config.json`,
`trainer_state.json`), predicts every checkpoint on the task's evaluation sets with the
producers' predictor, averages the checkpoints into the run's CA (`ofa_eval.weights.averaging`) and
predicts with it too, and writes the run folder of docs/artifacts.md ("Runs trained
elsewhere" there says exactly what is read and written). Each checkpoint is one snapshot, in
step order, however many there are.

Nothing pickled is ever read: not `training_args.bin`, nor `optimizer.pt`, `scheduler.pt`,
`rng_state.pth` or `pytorch_model.bin`. The learning rate, batch size and seed come from the
command line, else from a `training_args.json` (`TrainingArguments.to_json_string()`) in the
Trainer folder or its last checkpoint, else (the batch size only) from `trainer_state.json`;
when one is still unknown, adopting stops before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.artifacts import run_format
from ofa_eval.common.errors import OfaError
from ofa_eval.weights.safetensors_file import SHARD_INDEX, SINGLE_FILE
from producers import artifacts
from producers.train import RunFolder, RunState

CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE = "trainer_state.json"
TRAINING_ARGS_JSON = "training_args.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONS = {"learning_rate": "--learning-rate", "batch_size": "--batch-size", "seed": "--seed"}
# settings of a grid's task table that shape prediction (the rest of a grid is its own runs' recipe)
PREDICTION_SETTINGS = ("max_length", "stride", "n_best", "max_answer_length", "eval_batch_size")
# recipe fields of a manifest that a Trainer folder may not tell (besides epochs); recorded only when it does
TRAINER_RECIPE = ("weight_decay", "warmup_ratio", "max_grad_norm")
GENERIC_LABEL = re.compile(r"LABEL_\d+")


@dataclass(frozen=True)
class Checkpoint:
    """One `checkpoint-<step>/` folder of a Trainer run."""

    path: Path
    step: int
    epoch: float | None

    @property
    def weights(self) -> Path:
        single = self.path / SINGLE_FILE
        return single if single.is_file() else self.path / SHARD_INDEX


@dataclass
class TrainerRun:
    """What a Trainer output folder says: its checkpoints, its last trainer state, its training arguments."""

    path: Path
    checkpoints: list[Checkpoint]
    state: dict
    arguments: dict

    @property
    def last(self) -> Checkpoint:
        return self.checkpoints[-1]


# --- reading the Trainer folder --------------------------------------------------------------------


def read_json(path: Path) -> dict:
    """A JSON object from a file; {} when there is no file."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OfaError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(value, dict):
        raise OfaError(f"{path}: not a JSON object")
    return value


def read_trainer_dir(trainer_dir) -> TrainerRun:
    """The checkpoints (in step order) and settings of a Trainer output folder."""
    path = Path(trainer_dir)
    if not path.is_dir():
        raise OfaError(f"{path}: not a directory")
    checkpoints = [_checkpoint(folder) for folder in _checkpoint_folders(path)]
    state = read_json(path / TRAINER_STATE) or read_json(checkpoints[-1].path / TRAINER_STATE)
    arguments = read_json(path / TRAINING_ARGS_JSON) or read_json(checkpoints[-1].path / TRAINING_ARGS_JSON)
    return TrainerRun(path, checkpoints, state, arguments)


def _checkpoint_folders(path: Path) -> list[Path]:
    folders = [p for p in path.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    if not folders:
        raise OfaError(f"{path}: no checkpoint-<step> folders (a Trainer output folder saved with save_strategy)")
    return sorted(folders, key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def _checkpoint(folder: Path) -> Checkpoint:
    if not (folder / "config.json").is_file():
        raise OfaError(f"{folder / 'config.json'}: file not found")
    if not ((folder / SINGLE_FILE).is_file() or (folder / SHARD_INDEX).is_file()):
        raise OfaError(f"{folder}: no {SINGLE_FILE} (weights in pickles, such as pytorch_model.bin, are never "
                       "read: save the run with safetensors)")
    state = read_json(folder / TRAINER_STATE)
    step = state.get("global_step", int(CHECKPOINT_NAME.fullmatch(folder.name).group(1)))
    epoch = state.get("epoch")
    return Checkpoint(folder, int(step), round(float(epoch), 6) if epoch is not None else None)


def hyperparameters(run: TrainerRun, learning_rate=None, batch_size=None, seed=None) -> tuple[dict, dict]:
    """({learning_rate, batch_size, seed}, {name: where it came from}); OfaError naming what is unknown.

    The batch size read from the folder is trainer_state.json's `train_batch_size` (per device,
    times the GPUs of one process) times training_args.json's `gradient_accumulation_steps`.
    """
    given = {"learning_rate": learning_rate, "batch_size": batch_size, "seed": seed}
    found = _from_files(run)
    values = {name: given[name] if given[name] is not None else found[name][0] for name in OPTIONS}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise OfaError(f"{run.path}: no {', '.join(n.replace('_', ' ') for n in missing)} in {TRAINER_STATE} or "
                       f"{TRAINING_ARGS_JSON} (training_args.bin is a pickle and is never read); pass "
                       f"{', '.join(OPTIONS[n] for n in missing)}")
    sources = {name: OPTIONS[name] if given[name] is not None else found[name][1] for name in OPTIONS}
    return _checked_hyperparameters(run.path, values), sources


def _from_files(run: TrainerRun) -> dict[str, tuple]:
    """{name: (value or None, the file(s) it comes from)} for the learning rate, batch size and seed."""
    arguments = run.arguments
    per_step, source = run.state.get("train_batch_size"), TRAINER_STATE
    if per_step is None:
        per_step, source = arguments.get("per_device_train_batch_size"), TRAINING_ARGS_JSON
    accumulation = arguments.get("gradient_accumulation_steps")
    if accumulation is not None and source == TRAINER_STATE:
        source = f"{TRAINER_STATE} and {TRAINING_ARGS_JSON}"
    batch_size = None if per_step is None else per_step * (accumulation or 1)
    return {"learning_rate": (arguments.get("learning_rate"), TRAINING_ARGS_JSON),
            "batch_size": (batch_size, source), "seed": (arguments.get("seed"), TRAINING_ARGS_JSON)}


def _checked_hyperparameters(path: Path, values: dict) -> dict:
    try:
        checked = {"learning_rate": float(values["learning_rate"]), "batch_size": int(values["batch_size"]),
                   "seed": int(values["seed"])}
    except (TypeError, ValueError):
        raise OfaError(f"{path}: hyperparameters {values} are not numbers") from None
    if checked["learning_rate"] <= 0 or checked["batch_size"] < 1:
        raise OfaError(f"{path}: learning rate {checked['learning_rate']} and batch size {checked['batch_size']} "
                       "must be positive")
    return checked


def trainer_recipe(run: TrainerRun) -> dict:
    """The manifest's epochs, and the recipe fields training_args.json gives (docs/artifacts.md)."""
    epochs = run.state.get("num_train_epochs", run.arguments.get("num_train_epochs"))
    recipe = {"epochs": int(epochs)} if epochs is not None and float(epochs) >= 1 else {}
    recipe.update({key: run.arguments[key] for key in TRAINER_RECIPE if run.arguments.get(key) is not None})
    return recipe


def tokenizer_folder(run: TrainerRun, tokenizer=None) -> Path:
    """Where the tokenizer is: --tokenizer, else the last checkpoint, else the Trainer folder."""
    if tokenizer is not None:
        return Path(tokenizer)
    for folder in (run.last.path, run.path):
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    raise OfaError(f"{run.path}: no tokenizer ({' or '.join(TOKENIZER_FILES)}) in {run.last.path.name}/ or in "
                   "the folder itself; pass --tokenizer PATH")


def check_labels(model_config, label_names, config_path: Path) -> None:
    """The checkpoint's classifier labels are the task's (LABEL_0, LABEL_1, ... stand for them in order)."""
    if not label_names:
        return
    labels = [model_config.id2label[i] for i in range(model_config.num_labels)]
    if all(GENERIC_LABEL.fullmatch(label) for label in labels) and len(labels) == len(label_names):
        return
    if labels != list(label_names):
        raise OfaError(f"{config_path}: the model's labels {labels} are not the task's {list(label_names)} "
                       "(in that order)")


# --- the evaluation data --------------------------------------------------------------------------


def evaluation_data(task: str, data_spec: str):
    """(TaskData, grid settings) from a grid file's task table or an inline TOML data table.

    `data_spec` is a grid file (the one `ofa-eval train` reads: its `data` table and its
    prediction settings for `task`) or a table like `{ directory = "data/nli" }` (paths
    relative to the working directory).
    """
    from producers.data import load_task_data

    if Path(data_spec).is_file():
        from producers.grid import load_grid

        experiment = load_grid(data_spec, tasks=(task,))[0]
        return experiment.load_data(), experiment.settings
    return load_task_data(task, _inline_table(data_spec)), {}


def _inline_table(text: str) -> dict:
    try:
        value = tomllib.loads(f"data = {text}")["data"]
    except tomllib.TOMLDecodeError as error:
        value, problem = None, str(error)
    else:
        problem = "not a table"
    if not isinstance(value, dict):
        raise OfaError(f"--data: {text!r} is neither a grid file nor a TOML table such as "
                       f"'{{ directory = \"data/nli\", dataset = \"my-nli\" }}' ({problem})")
    return value


# --- the run folder ---------------------------------------------------------------------------------


class AdoptedRunFolder(RunFolder):
    """A run folder written from a Trainer run: the producers' format, with what the Trainer told."""

    def __init__(self, path, config, task, data, recipe: dict, adopted: dict):
        from producers.heads import HeadAlignment

        super().__init__(path, config, task, data, HeadAlignment())
        self.recipe, self.adopted = recipe, adopted

    def manifest(self, state, total_steps, ca=None, complete=False) -> dict:
        manifest = super().manifest(state, total_steps, ca, complete)
        for key in (*TRAINER_RECIPE, "epochs", "head_alignment"):  # unknown for a run trained elsewhere
            manifest.pop(key, None)
        return {**manifest, **self.recipe, "adopted": self.adopted}


def prepare_out(out: Path) -> bool:
    """False when `out` already holds a complete run; clears an adoption that was interrupted."""
    manifest = artifacts.read_manifest_if_any(out)
    if manifest is not None and manifest.get("state") == "complete":
        return False
    if manifest is not None and "adopted" in manifest:
        shutil.rmtree(out)
    elif out.is_file() or (out.exists() and any(out.iterdir())):
        raise OfaError(f"{out}: exists and is not a run folder written by adopt; choose another --out")
    return True


def link_weights(source: Path, run_dir: Path, subject: str) -> dict:
    """The checkpoint's weights as the subject's weight file: a hard link, else a copy (one file
    from a sharded checkpoint); returns the manifest's weights record."""
    relative = run_format.weights_file(subject)
    destination = run_dir / relative
    if source.name == SHARD_INDEX:
        from ofa_eval.weights.averaging import average_checkpoints

        destination.parent.mkdir(parents=True, exist_ok=True)
        average_checkpoints([source.parent], destination)
    else:
        _link_or_copy(source, destination)
    return weights_record(run_dir, relative)


def _link_or_copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.tmp-{secrets.token_hex(4)}")
    try:
        try:
            os.link(source, temporary)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def weights_record(run_dir: Path, relative: str) -> dict:
    path = run_dir / relative
    return {"weights": relative, "sha256": artifacts.file_sha256(path), "bytes": path.stat().st_size}


def load_weights(model, path: Path, origin: Path) -> None:
    """Load a weight file into the model (strictly, as `predict_with_weights` does); OfaError naming `origin`."""
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise OfaError(f"{origin}: the weights do not fit the task's model "
                       f"({str(error).splitlines()[0].rstrip(':.')})") from None


# --- adopting ---------------------------------------------------------------------------------------


def adopt(trainer_dir, task: str, data_spec: str, out, *, model: str | None = None, learning_rate=None,
          batch_size=None, seed=None, max_length: int | None = None, tokenizer=None, progress=None) -> Path:
    """Write the run folder `out` from the Trainer output folder `trainer_dir`; returns `out`.

    A complete run folder at `out` is left alone. `progress(line)` hears of each checkpoint.
    """
    from producers.config import RunConfig
    from producers.tasks import get_task

    out, say = Path(out), progress or (lambda line: None)
    run = read_trainer_dir(trainer_dir)
    values, sources = hyperparameters(run, learning_rate, batch_size, seed)
    if not prepare_out(out):
        say(f"{out}: already a complete run")
        return out
    data, settings = evaluation_data(task, data_spec)
    model = model or settings.get("model")
    if not model:
        raise OfaError(f"{data_spec}: no model name; pass --model NAME (the pool it joins: runs of one task and model)")
    prediction = {key: settings[key] for key in PREDICTION_SETTINGS if key in settings}
    prediction.update({"max_length": max_length} if max_length is not None else {})
    config = RunConfig(task=task, model=model, model_name_or_path=str(run.path.resolve()), **values,
                       snapshots=len(run.checkpoints), weight_storage="all", **prediction)
    adopted = {"trainer_dir": str(run.path.resolve()), "checkpoints": [c.path.name for c in run.checkpoints],
               "max_steps": run.state.get("max_steps"), "hyperparameters_from": sources}
    folder = AdoptedRunFolder(out, config, get_task(task), data, trainer_recipe(run), adopted)
    predict_checkpoints(folder, run, tokenizer_folder(run, tokenizer), say)
    return out


def predict_checkpoints(folder: AdoptedRunFolder, run: TrainerRun, tokenizer_dir: Path, say) -> None:
    """Every checkpoint as a snapshot, then their average as CA: weights, predictions, manifest."""
    from transformers import AutoConfig

    from producers.modeling import load_tokenizer, model_from_config, pick_device, quiet_transformers

    quiet_transformers()
    model_config = AutoConfig.from_pretrained(run.last.path)
    check_labels(model_config, folder.data.label_names, run.last.path / "config.json")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    folder.start(tokenizer, model_config)
    model = model_from_config(folder.task, folder.path / run_format.MODEL).to(pick_device())
    eval_features = [folder.task.eval_features(e.examples, tokenizer, folder.config, folder.data.label_names)
                     for e in folder.data.eval_sets]
    state = RunState()
    for index, checkpoint in enumerate(run.checkpoints, start=1):
        subject = run_format.snapshot_subject(index)
        record = link_weights(checkpoint.weights, folder.path, subject)
        load_weights(model, folder.path / record["weights"], checkpoint.weights)
        score = folder.predict_all(model, subject, eval_features, tokenizer.pad_token_id)
        state.snapshots.append({"index": index, "step": checkpoint.step, "epoch": checkpoint.epoch,
                                "source_validation": score, **record})
        state.step = checkpoint.step
        folder.write_manifest(state, None)
        say(f"{checkpoint.path.name} -> {subject}: source validation {score:.2f}")
    folder.prune_weights(state)
    ca = write_ca(folder, state)
    load_weights(model, folder.path / ca["weights"], folder.path / ca["weights"])
    score = folder.predict_all(model, run_format.CA_SUBJECT, eval_features, tokenizer.pad_token_id)
    say(f"CA of {len(state.snapshots)} checkpoints: source validation {score:.2f}")
    folder.complete(state, None, ca)


def write_ca(folder: AdoptedRunFolder, state: RunState) -> dict:
    """The uniform average of the snapshots' weights (`ofa_eval.weights.averaging`), as the run's CA."""
    from ofa_eval.weights.averaging import average_checkpoints

    relative = run_format.weights_file(run_format.CA_SUBJECT)
    average_checkpoints([folder.path / s["weights"] for s in state.snapshots], folder.path / relative)
    return weights_record(folder.path, relative)
