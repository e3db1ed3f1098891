"""Fine-tune one run and write its folder (docs/artifacts.md); a killed run resumes.

The recipe is the paper's: AdamW (weight decay 0.01 on matrices, none on biases and LayerNorm
weights), gradient norm clipped to 1.0, a linear schedule with 10% warm-up then decay to zero,
`epochs` passes over the training data, and `snapshots` snapshots (10) at every 10% of the
training steps, the last one at the last step. Every snapshot predicts every evaluation set
(source validation, target validation and test) and its source-validation score is computed
with the task's metric. A running mean of the snapshots' weights is the run's within-run
checkpoint average (CA), whose predictions are written as subject `ca`.

Weight storage: `all` keeps every snapshot; `needed` keeps only what the protocol uses: LAST,
the best snapshot on source validation so far (the earliest on a tie, as `ingest` picks it),
and CA. After each snapshot, `checkpoint/state.safetensors` holds everything needed to continue
(model, optimizer, scheduler, RNG states, step, the CA mean, the snapshot records: tensors in
safetensors, the rest as JSON in its header, `producers.checkpoint`); a restarted run continues
from it and produces the same weights as an uninterrupted one. The checkpoint is
removed when the run completes, and the manifest's `state` becomes `complete` last.

A run resumes only under the recipe that started it: the manifest records the complete recipe
(`producers.config.recipe_record`: every setting, the head, hashes of the data and of the base
model) from the start, and a run whose grid, data or model changed since is refused
(`RecipeChanged`, naming the differences) unless its folder is cleared to start over
(`restart_changed_runs`, `ofa-eval train --restart-changed`).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ofa_eval.artifacts import run_format
from ofa_eval.common.errors import OfaError
from producers import artifacts, checkpoint
from producers.batching import steps_per_epoch
from producers.finetune import fit, make_optimizer, make_scheduler
from producers.config import base_model_digest, json_sha256, recipe_changes, recipe_record
from producers.heads import HeadAlignment, apply_head, head_folder, read_head
from producers.modeling import load_model, load_tokenizer, pick_device
from producers.predict import predict, write_predictions
from producers.tasks import get_task


def snapshot_steps(total_steps: int, snapshots: int = 10) -> list[int]:
    """The steps after which snapshots are taken: every 1/snapshots of training, the last at the end."""
    if total_steps < snapshots:
        raise ValueError(f"{total_steps} training steps are too few for {snapshots} snapshots")
    return [k * total_steps // snapshots for k in range(1, snapshots + 1)]


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a run has done so far; saved in the checkpoint."""

    step: int = 0
    snapshots: list[dict] = field(default_factory=list)
    best: tuple[int, float] | None = None  # (snapshot index, source validation score)
    ca: dict | None = None  # running mean of the snapshots' weights


def train_run(config, data, run_dir, head: HeadAlignment | None = None, progress: bool = True,
              on_snapshot=None) -> Path:
    """Train one run into `run_dir`, resuming from its checkpoint; a complete run is left alone.

    `on_snapshot(index)` is called after each snapshot is fully written (tests use it to stop a
    run as if it had been killed). A started run whose recipe differs from this one raises
    `RecipeChanged`. With `progress`, start-up steps are told on stderr and every evaluation
    set gets a progress bar while a snapshot is evaluated.
    """
    from tqdm import tqdm
    from transformers import set_seed

    run_dir = Path(run_dir)
    manifest = artifacts.read_manifest_if_any(run_dir)
    if manifest is not None and manifest["state"] == "complete":
        return run_dir
    say = status_printer(config.name, progress)
    head = head or HeadAlignment()
    say("hashing the data and the base model" if manifest is None else "checking that the recipe is unchanged")
    recipe = run_recipe(config, data, head)
    if manifest is not None:
        check_same_recipe(run_dir, manifest, recipe)
    task, device = get_task(config.task), pick_device()
    set_seed(config.seed)
    say(f"building the model from {config.model_name_or_path} on {device}")
    tokenizer = load_tokenizer(config.model_name_or_path)
    model = load_model(task, config.model_name_or_path, data.label_names)
    apply_head(model, head)
    model.to(device)
    folder = RunFolder(run_dir, config, task, data, head, recipe, progress)
    folder.start(tokenizer, model.config)

    say(f"tokenizing {len(data.train)} training examples and {len(data.eval_sets)} evaluation sets "
        f"({sum(len(e.examples) for e in data.eval_sets)} examples)")
    train_features = task.train_features(data.train, tokenizer, config, data.label_names)
    eval_features = [task.eval_features(e.examples, tokenizer, config, data.label_names) for e in data.eval_sets]
    per_epoch = steps_per_epoch(len(train_features), config.batch_size)
    total = config.epochs * per_epoch
    schedule = snapshot_steps(total, config.snapshots)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total)
    state = load_checkpoint(folder.checkpoint, model, optimizer, scheduler) or RunState()
    if state.step:
        say(f"resuming after snapshot {len(state.snapshots)} (step {state.step} of {total})")
    folder.prune_weights(state)

    def on_step(step: int) -> None:
        if step not in schedule:
            return
        index = schedule.index(step) + 1
        take_snapshot(folder, model, state, index, step, step / per_epoch, eval_features, tokenizer.pad_token_id)
        state.step = step
        save_checkpoint(folder.checkpoint, model, optimizer, scheduler, state)
        folder.prune_weights(state)
        folder.write_manifest(state, total)
        model.train()
        if on_snapshot is not None:
            on_snapshot(index)

    with tqdm(total=total, initial=state.step, desc=config.name, unit="step", disable=not progress) as bar:
        fit(model, train_features, config, optimizer, scheduler, total, start_step=state.step,
            pad_token_id=tokenizer.pad_token_id, on_step=on_step, progress=bar)
    model.load_state_dict(state.ca)  # CA, in the model's own dtypes from here on
    folder.predict_all(model, run_format.CA_SUBJECT, eval_features, tokenizer.pad_token_id)
    folder.complete(state, total, folder.write_weights(run_format.CA_SUBJECT, model.state_dict()))
    return run_dir


def status_printer(name: str, enabled: bool):
    """say(message): one line `<name>: <message>` on stderr (kept clear of progress bars); nothing when not enabled."""
    from tqdm import tqdm

    def say(message: str) -> None:
        if enabled:
            tqdm.write(f"{name}: {message}", file=sys.stderr)

    return say


def take_snapshot(folder, model, state: RunState, index: int, step: int, epoch: float, eval_features,
                  pad_token_id: int) -> None:
    """Predict every evaluation set, update CA, keep the weights the storage policy asks for."""
    weights, subject = model.state_dict(), run_format.snapshot_subject(index)
    state.ca = running_mean(state.ca, weights, index)
    score = folder.predict_all(model, subject, eval_features, pad_token_id)
    is_best = state.best is None or score > state.best[1]
    if is_best:
        state.best = (index, score)
    record = {"index": index, "step": step, "epoch": round(epoch, 6), "source_validation": score,
              "weights": None, "sha256": None, "bytes": None}
    if folder.config.weight_storage == "all" or is_best or index == folder.config.snapshots:
        record.update(folder.write_weights(subject, weights))
    state.snapshots.append(record)
    if folder.config.weight_storage == "needed":
        for old in state.snapshots[:-1]:
            if old["index"] != state.best[0]:
                old.update(weights=None, sha256=None, bytes=None)


def running_mean(mean: dict | None, weights: dict, count: int) -> dict:
    """mean + (weights - mean) / count in float32 (integer tensors are copied)."""
    if mean is None:
        return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
                for k, v in weights.items()}
    for name, value in weights.items():
        if value.is_floating_point():
            mean[name] += (value.detach().float().cpu() - mean[name]) / count
        else:
            mean[name] = value.detach().cpu().clone()
    return mean


# --- the recipe a run resumes under ----------------------------------------------------------------


class RecipeChanged(OfaError):
    """A started run whose grid settings, data or base model differ from those it started with."""


def run_recipe(config, data, head: HeadAlignment) -> dict:
    """The recipe a run records at its start and is resumed under (`producers.config.recipe_record`)."""
    return recipe_record(config, data, head.manifest(), base_model_digest(config.model_name_or_path))


def recorded_recipe(manifest: dict) -> dict:
    """The recipe a manifest records; for a run started before recipes were recorded, the
    settings its manifest does hold."""
    from producers.config import RunConfig

    if "recipe" in manifest:
        return manifest["recipe"]["settings"]
    return {k: v for k, v in asdict(RunConfig.from_recipe(manifest)).items() if k != "model_name_or_path"}


def recipe_differences(manifest: dict, recipe: dict) -> list[str]:
    """What differs between the recipe a run started with and `recipe`, in the settings both name
    (a run started before a setting existed, or a head not made yet, leaves it out)."""
    recorded = recorded_recipe(manifest)
    shared = recorded.keys() & recipe.keys()
    return recipe_changes({k: recorded[k] for k in shared}, {k: recipe[k] for k in shared})


def check_same_recipe(run_dir: Path, manifest: dict, recipe: dict) -> None:
    changes = recipe_differences(manifest, recipe)
    if changes:
        raise recipe_changed(run_dir, changes)


def recipe_changed(run_dir: Path, changes: list[str], others: int = 0) -> RecipeChanged:
    more = f"; {others} more run(s) of the grid changed too" if others else ""
    return RecipeChanged(f"{Path(run_dir) / run_format.MANIFEST}: the grid changed since this run started "
                         f"({', '.join(changes)}){more}; rerun with --restart-changed to start these runs over")


def changed_runs(experiments, runs_dir) -> list[tuple[Path, list[str]]]:
    """The grid's started, unfinished runs whose recipe changed since they started, with the
    differences. An aligned head not made yet is not compared (its run checks it when it starts)."""
    changed = []
    for experiment in experiments:
        started = [(config, manifest) for config in experiment.runs()
                   if (manifest := artifacts.read_manifest_if_any(Path(runs_dir) / config.name)) is not None
                   and manifest["state"] != "complete"]
        if not started:
            continue
        data = experiment.load_data()
        head = existing_head(experiment, runs_dir)
        for config, manifest in started:
            recipe = run_recipe(config, data, head or HeadAlignment())
            if head is None:
                del recipe["head_alignment"], recipe["head_sha256"]
            changes = recipe_differences(manifest, recipe)
            if changes:
                changed.append((Path(runs_dir) / config.name, changes))
    return changed


def existing_head(experiment, runs_dir) -> HeadAlignment | None:
    """The aligned head the experiment's runs start from; None when it is not made yet."""
    if experiment.head_mode == "none":
        return HeadAlignment()
    return read_head(head_folder(runs_dir, experiment.head_config()))


def restart_changed_runs(experiments, runs_dir, restart: bool, say=print) -> list[Path]:
    """Refuse a grid whose started runs changed (`RecipeChanged`, naming the first one's
    differences), or, with `restart`, clear those runs' folders so that they start over."""
    changed = changed_runs(experiments, runs_dir)
    if changed and not restart:
        raise recipe_changed(*changed[0], others=len(changed) - 1)
    for run_dir, changes in changed:
        say(f"{run_dir.name}: starting over ({', '.join(changes)})")
        clear_run_folder(run_dir)
    return [run_dir for run_dir, _ in changed]


def clear_run_folder(run_dir: Path) -> None:
    """Delete a run folder's contents, the manifest last: a clearing cut short leaves the old
    manifest (still refused, or cleared again), never an old checkpoint without its manifest."""
    run_dir = Path(run_dir)
    manifest = run_dir / run_format.MANIFEST
    if not manifest.is_file():
        raise OfaError(f"{run_dir}: not a run folder (no {run_format.MANIFEST}), not cleared")
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry != manifest:
            entry.unlink()
    manifest.unlink()


# --- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, scheduler, state: RunState) -> None:
    """The run's resume state after a snapshot (`producers.checkpoint`: safetensors and JSON)."""
    progress = {"step": state.step, "snapshots": state.snapshots, "best": state.best}
    checkpoint.save(path, model, optimizer, scheduler, progress, state.ca)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> RunState | None:
    """Restore a run from its checkpoint; None when there is none."""
    if not path.is_file():
        return None
    progress, ca = checkpoint.load(path, model, optimizer, scheduler)
    best = tuple(progress["best"]) if progress["best"] is not None else None
    return RunState(step=progress["step"], snapshots=progress["snapshots"], best=best, ca=ca)


# --- the run folder --------------------------------------------------------------------------------


class RunFolder:
    """Writes one run's folder: inputs, gold, predictions, weights and the manifest."""

    def __init__(self, path: Path, config, task, data, head: HeadAlignment, recipe_settings: dict | None = None,
                 progress: bool = False):
        self.path, self.config, self.task, self.data, self.head = Path(path), config, task, data, head
        self.recipe_settings, self.progress = recipe_settings, progress  # `run_recipe`; bars per evaluation set
        self.checkpoint = self.path / "checkpoint" / checkpoint.FILE
        self.gold = {id(e): task.gold(e.examples, data.label_names) for e in data.eval_sets}

    def start(self, tokenizer, model_config) -> None:
        """Model config, tokenizer, evaluation inputs and gold, and a `running` manifest."""
        if artifacts.read_manifest_if_any(self.path) is not None:
            return
        model_dir = self.path / run_format.MODEL
        model_config.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        for eval_set in self.data.eval_sets:
            artifacts.write_table(self.path / run_format.inputs_file(*eval_set.key), {None: eval_set.examples})
            ids = [e["id"] for e in eval_set.examples]
            artifacts.write_table(self.path / run_format.gold_file(*eval_set.key),
                                  artifacts.gold_table(self.task.name, ids, self.gold[id(eval_set)]))
        self.write_manifest(RunState(), None)

    def predict_all(self, model, subject: str, eval_features, pad_token_id: int) -> float:
        """Write the subject's predictions on every evaluation set; return its source-validation score."""
        from tqdm import tqdm

        metric, device, score = self.task.metric, next(model.parameters()).device, None
        for eval_set, features in zip(self.data.eval_sets, eval_features):
            with tqdm(total=len(features), desc=f"{subject} {'/'.join(eval_set.key)}", unit="seq", leave=False,
                      disable=not self.progress) as bar:
                predictions = predict(model, self.task, eval_set, features, self.config, self.data.label_names,
                                      device, pad_token_id, bar)
            write_predictions(self.path / run_format.predictions_folder(subject), self.task, eval_set, predictions)
            if eval_set is self.data.source_validation:
                score = float(metric.compute(self.gold[id(eval_set)], predictions)[self.task.primary_metric])
        return score

    def write_weights(self, subject: str, weights: dict) -> dict:
        from safetensors.torch import save_file

        relative = run_format.weights_file(subject)
        path = self.path / relative
        with artifacts.atomic_path(path) as temporary:
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(temporary))
        return {"weights": relative, "sha256": artifacts.file_sha256(path), "bytes": path.stat().st_size}

    def prune_weights(self, state: RunState) -> None:
        """Delete weight files no snapshot record points to (superseded or left by a killed run)."""
        kept = {self.path / s["weights"] for s in state.snapshots if s["weights"]}
        for path in (self.path / run_format.WEIGHTS).glob("*.safetensors"):
            if path not in kept:
                path.unlink()

    def manifest(self, state: RunState, total_steps, ca=None, complete: bool = False) -> dict:
        manifest = {"format_version": run_format.FORMAT_VERSION, "state": "complete" if complete else "running",
                    "run_name": self.path.name, **self.config.recipe(),
                    "head_alignment": self.head.manifest(), "code_version": code_version(),
                    "snapshots_per_run": self.config.snapshots, "total_steps": total_steps,
                    "snapshots": state.snapshots, "ca": ca, "eval_sets": self._eval_set_entries()}
        if self.recipe_settings is not None:
            manifest["recipe"] = {"sha256": json_sha256(self.recipe_settings), "settings": self.recipe_settings}
        if self.data.label_names is not None and self.task.name != "qa":
            manifest["label_names"] = self.data.label_names
        return manifest

    def write_manifest(self, state: RunState, total_steps) -> None:
        artifacts.write_json(self.path / run_format.MANIFEST, self.manifest(state, total_steps))

    def complete(self, state: RunState, total_steps: int, ca: dict) -> None:
        """Remove the checkpoint, then mark the run complete (with its size on disk)."""
        shutil.rmtree(self.path / "checkpoint", ignore_errors=True)
        manifest = self.manifest(state, total_steps, ca, complete=True)
        manifest["bytes_on_disk"] = 0
        for _ in range(3):  # the manifest counts itself: settle the number of digits
            text = json.dumps(manifest, indent=1) + "\n"
            manifest["bytes_on_disk"] = artifacts.folder_bytes(self.path) - self._manifest_bytes() + len(text.encode())
        artifacts.write_json(self.path / run_format.MANIFEST, manifest)

    def _manifest_bytes(self) -> int:
        path = self.path / run_format.MANIFEST
        return path.stat().st_size if path.is_file() else 0

    def _eval_set_entries(self) -> list[dict]:
        return [{"dataset": e.dataset, "language": e.language, "split": e.split, "role": e.role,
                 "gold": run_format.gold_file(*e.key), "inputs": run_format.inputs_file(*e.key),
                 "n_examples": len(e.examples)} for e in self.data.eval_sets]


@functools.cache
def code_version() -> str:
    """`ofa-eval <version>`, plus the git commit when the code runs from a checkout."""
    from ofa_eval import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"ofa-eval {__version__}" + (f" ({commit})" if commit else "")
