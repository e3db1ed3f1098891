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
and CA. After each snapshot, `checkpoint/state.pt` holds everything needed to continue (model,
optimizer, scheduler, RNG states, step, the CA mean, the snapshot records); a restarted run
continues from it and produces the same weights as an uninterrupted one. The checkpoint is
removed when the run completes, and the manifest's `state` becomes `complete` last.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from producers import artifacts
from producers.batching import collate, steps_per_epoch, training_batches
from producers.heads import HeadAlignment, apply_head
from producers.modeling import autocast, load_model, load_tokenizer, pick_device
from producers.predict import predict, write_predictions
from producers.tasks import get_task


def snapshot_steps(total_steps: int, snapshots: int = 10) -> list[int]:
    """The steps after which snapshots are taken: every 1/snapshots of training, the last at the end."""
    if total_steps < snapshots:
        raise ValueError(f"{total_steps} training steps are too few for {snapshots} snapshots")
    return [k * total_steps // snapshots for k in range(1, snapshots + 1)]


def make_optimizer(model, config):
    """AdamW over the trainable parameters; no weight decay on biases and LayerNorm weights."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused)


def make_scheduler(optimizer, config, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)


def fit(model, features, config, optimizer, scheduler, total_steps: int, *, start_step: int = 0,
        pad_token_id: int = 1, on_step=None, progress=None) -> None:
    """The training loop: steps start_step + 1 .. total_steps, calling on_step(step) after each."""
    import torch

    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    lengths = [len(f["input_ids"]) for f in features]
    model.train()
    for step, indices in training_batches(lengths, config.batch_size, config.seed, total_steps, start_step,
                                          group_by_length=device.type == "cuda"):
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(features, indices, pad_token_id).items()}
        with autocast(device):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress.update(1)
            if step % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if on_step is not None:
            on_step(step)


def fine_tune(model, task, data, config, progress: bool = False) -> None:
    """Train `model` on the task's training data with no snapshots (the head-alignment fine-tune)."""
    from tqdm import tqdm

    model.to(pick_device())
    tokenizer = load_tokenizer(config.model_name_or_path)
    features = task.train_features(data.train, tokenizer, config, data.label_names)
    total = config.epochs * steps_per_epoch(len(features), config.batch_size)
    optimizer = make_optimizer(model, config)
    with tqdm(total=total, desc=f"{config.task} head fine-tune", unit="step", disable=not progress) as bar:
        fit(model, features, config, optimizer, make_scheduler(optimizer, config, total), total,
            pad_token_id=tokenizer.pad_token_id, progress=bar)


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
    run as if it had been killed).
    """
    from tqdm import tqdm
    from transformers import set_seed

    run_dir = Path(run_dir)
    manifest = artifacts.read_manifest_if_any(run_dir)
    if manifest is not None and manifest["state"] == "complete":
        return run_dir
    task, device = get_task(config.task), pick_device()
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model_name_or_path)
    model = load_model(task, config.model_name_or_path, data.label_names)
    apply_head(model, head)
    model.to(device)
    folder = RunFolder(run_dir, config, task, data, head or HeadAlignment())
    folder.start(tokenizer, model.config)

    train_features = task.train_features(data.train, tokenizer, config, data.label_names)
    eval_features = [task.eval_features(e.examples, tokenizer, config, data.label_names) for e in data.eval_sets]
    per_epoch = steps_per_epoch(len(train_features), config.batch_size)
    total = config.epochs * per_epoch
    schedule = snapshot_steps(total, config.snapshots)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, total)
    state = load_checkpoint(folder.checkpoint, model, optimizer, scheduler) or RunState()
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
    folder.predict_all(model, "ca", eval_features, tokenizer.pad_token_id)
    folder.complete(state, total, folder.write_weights("ca", model.state_dict()))
    return run_dir


def take_snapshot(folder, model, state: RunState, index: int, step: int, epoch: float, eval_features,
                  pad_token_id: int) -> None:
    """Predict every evaluation set, update CA, keep the weights the storage policy asks for."""
    weights = model.state_dict()
    state.ca = running_mean(state.ca, weights, index)
    score = folder.predict_all(model, f"snapshot-{index:02d}", eval_features, pad_token_id)
    is_best = state.best is None or score > state.best[1]
    if is_best:
        state.best = (index, score)
    record = {"index": index, "step": step, "epoch": round(epoch, 6), "source_validation": score,
              "weights": None, "sha256": None, "bytes": None}
    if folder.config.weight_storage == "all" or is_best or index == folder.config.snapshots:
        record.update(folder.write_weights(f"snapshot-{index:02d}", weights))
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


# --- checkpoints -----------------------------------------------------------------------------------


def rng_states() -> dict:
    import numpy as np
    import torch

    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype("int64")), *numpy_state[2:])}


def set_rng_states(states: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), *rest))


def save_checkpoint(path: Path, model, optimizer, scheduler, state: RunState) -> None:
    import torch

    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "rng": rng_states(), "state": asdict(state)}
    with artifacts.atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> RunState | None:
    """Restore a run from its checkpoint; None when there is none."""
    import torch

    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_states(payload["rng"])
    state = RunState(**payload["state"])
    state.best = tuple(state.best) if state.best is not None else None
    return state


# --- the run folder --------------------------------------------------------------------------------


class RunFolder:
    """Writes one run's folder: inputs, gold, predictions, weights and the manifest."""

    def __init__(self, path: Path, config, task, data, head: HeadAlignment):
        self.path, self.config, self.task, self.data, self.head = Path(path), config, task, data, head
        self.checkpoint = self.path / "checkpoint" / "state.pt"
        self.gold = {id(e): task.gold(e.examples, data.label_names) for e in data.eval_sets}

    def start(self, tokenizer, model_config) -> None:
        """Model config, tokenizer, evaluation inputs and gold, and a `running` manifest."""
        if artifacts.read_manifest_if_any(self.path) is not None:
            return
        model_dir = self.path / "model"
        model_config.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        for eval_set in self.data.eval_sets:
            name = artifacts.table_name(eval_set)
            artifacts.write_table(self.path / "inputs" / name, {None: eval_set.examples})
            ids = [e["id"] for e in eval_set.examples]
            artifacts.write_table(self.path / "gold" / name,
                                  artifacts.gold_table(self.task.name, ids, self.gold[id(eval_set)]))
        self.write_manifest(RunState(), None)

    def predict_all(self, model, subject: str, eval_features, pad_token_id: int) -> float:
        """Write the subject's predictions on every evaluation set; return its source-validation score."""
        from ofa_eval.metrics import get_metric

        metric, device, score = get_metric(self.task.name), next(model.parameters()).device, None
        for eval_set, features in zip(self.data.eval_sets, eval_features):
            predictions = predict(model, self.task, eval_set, features, self.config, self.data.label_names, device,
                                  pad_token_id)
            write_predictions(self.path / "predictions" / subject, self.task, eval_set, predictions)
            if eval_set is self.data.source_validation:
                score = float(metric.compute(self.gold[id(eval_set)], predictions)[metric.name])
        return score

    def write_weights(self, subject: str, weights: dict) -> dict:
        from safetensors.torch import save_file

        relative = f"weights/{subject}.safetensors"
        path = self.path / relative
        with artifacts.atomic_path(path) as temporary:
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(temporary))
        return {"weights": relative, "sha256": artifacts.file_sha256(path), "bytes": path.stat().st_size}

    def prune_weights(self, state: RunState) -> None:
        """Delete weight files no snapshot record points to (superseded or left by a killed run)."""
        kept = {self.path / s["weights"] for s in state.snapshots if s["weights"]}
        for path in (self.path / "weights").glob("*.safetensors"):
            if path not in kept:
                path.unlink()

    def manifest(self, state: RunState, total_steps, ca=None, complete: bool = False) -> dict:
        manifest = {"format_version": artifacts.FORMAT_VERSION, "state": "complete" if complete else "running",
                    "run_name": self.path.name, **self.config.recipe(),
                    "head_alignment": self.head.manifest(), "code_version": code_version(),
                    "snapshots_per_run": self.config.snapshots, "total_steps": total_steps,
                    "snapshots": state.snapshots, "ca": ca, "eval_sets": self._eval_set_entries()}
        if self.data.label_names is not None and self.task.name != "qa":
            manifest["label_names"] = self.data.label_names
        return manifest

    def write_manifest(self, state: RunState, total_steps) -> None:
        artifacts.write_json(self.path / artifacts.MANIFEST, self.manifest(state, total_steps))

    def complete(self, state: RunState, total_steps: int, ca: dict) -> None:
        """Remove the checkpoint, then mark the run complete (with its size on disk)."""
        shutil.rmtree(self.path / "checkpoint", ignore_errors=True)
        manifest = self.manifest(state, total_steps, ca, complete=True)
        manifest["bytes_on_disk"] = 0
        for _ in range(3):  # the manifest counts itself: settle the number of digits
            text = json.dumps(manifest, indent=1) + "\n"
            manifest["bytes_on_disk"] = artifacts.folder_bytes(self.path) - self._manifest_bytes() + len(text.encode())
        artifacts.write_json(self.path / artifacts.MANIFEST, manifest)

    def _manifest_bytes(self) -> int:
        path = self.path / artifacts.MANIFEST
        return path.stat().st_size if path.is_file() else 0

    def _eval_set_entries(self) -> list[dict]:
        return [{"dataset": e.dataset, "language": e.language, "split": e.split, "role": e.role,
                 "gold": f"gold/{artifacts.table_name(e)}", "inputs": f"inputs/{artifacts.table_name(e)}",
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
