"""A run's recipe: task, model, hyperparameters and the fixed training settings of the paper.

`RunConfig` is a plain frozen dataclass (no torch), so grid files, launchers and pickled SLURM
jobs can pass it around. Its defaults are the paper's recipe (section 3): AdamW with weight
decay 0.01, gradient clipping at 1.0, 10% linear warm-up then linear decay, 10 epochs, 10
snapshots, 128 tokens (QA: windows of 384 tokens with a stride of 128, n-best 20, answers of at
most 30 tokens).

A run folder records its complete recipe (`recipe_record`: every field, the head alignment,
and content hashes of the training data, the evaluation sets and the base model), so that a
run is resumed only by the recipe that started it (`recipe_changes` names what differs).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHT_STORAGE = ("all", "needed")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run."""

    task: str
    model: str
    model_name_or_path: str
    learning_rate: float
    batch_size: int
    seed: int
    epochs: int = 10
    max_length: int = 128
    stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    snapshots: int = 10
    weight_storage: str = "needed"
    eval_batch_size: int = 64

    def __post_init__(self):
        if self.weight_storage not in WEIGHT_STORAGE:
            raise ValueError(f"weight_storage must be one of {WEIGHT_STORAGE}, got {self.weight_storage!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.snapshots < 1:
            raise ValueError("batch_size, epochs and snapshots must be positive")

    @property
    def name(self) -> str:
        """The run folder's name, made from the hyperparameters."""
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model)
        return f"{self.task}-{model}-lr{self.learning_rate:g}-bs{self.batch_size}-seed{self.seed}"

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def recipe(self) -> dict:
        """The manifest's description of the run (docs/artifacts.md)."""
        return {
            "task": self.task, "model": self.model, "model_name_or_path": self.model_name_or_path,
            "learning_rate": self.learning_rate, "batch_size": self.batch_size, "seed": self.seed,
            "epochs": self.epochs, "max_length": self.max_length, "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio, "max_grad_norm": self.max_grad_norm,
            "weight_storage": self.weight_storage,
            "task_settings": {"stride": self.stride, "n_best": self.n_best,
                              "max_answer_length": self.max_answer_length,
                              "eval_batch_size": self.eval_batch_size},
        }

    @classmethod
    def from_recipe(cls, manifest: dict) -> RunConfig:
        """The config a manifest was written from (enough to predict again)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"snapshots"}  # the manifest's are records
        values = {k: v for k, v in manifest.items() if k in known}
        values["snapshots"] = manifest.get("snapshots_per_run", 10)
        values.update({k: v for k, v in manifest.get("task_settings", {}).items() if k in known})
        return cls(**values)


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig))


# --- the recorded recipe -------------------------------------------------------------------------


def recipe_record(config: RunConfig, data, head: dict, base_model: str) -> dict:
    """Everything a run's weights depend on, flat: every RunConfig field (but the model's path,
    whose content `base_model` hashes: a moved model folder is the same model), the head
    alignment (`HeadAlignment.manifest()`), and the number and content hash of the training
    examples and of the evaluation sets (`data`, a TaskData: limits and edited files show)."""
    record = {k: v for k, v in dataclasses.asdict(config).items() if k != "model_name_or_path"}
    eval_sets = [[*e.key, e.role, e.examples] for e in data.eval_sets]
    record.update(head_alignment=head.get("mode"), head_sha256=head.get("head_sha256"),
                  train_examples=len(data.train), train_sha256=json_sha256(data.train),
                  eval_examples=sum(len(e.examples) for e in data.eval_sets), eval_sha256=json_sha256(eval_sets),
                  base_model_sha256=base_model)
    return json.loads(json.dumps(record, default=str))  # as the manifest will read it back


def recipe_changes(recorded: dict, current: dict) -> list[str]:
    """`name old -> new` for every setting that differs (hashes shortened to 12 digits)."""
    def shown(value) -> str:
        text = "(none)" if value is None else str(value)
        return text[:12] if re.fullmatch(r"[0-9a-f]{64}", text) else text

    return [f"{key} {shown(recorded.get(key))} -> {shown(current.get(key))}"
            for key in sorted(set(recorded) | set(current), key=_recipe_order) if recorded.get(key) != current.get(key)]


def _recipe_order(key: str) -> tuple[int, str]:
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    return (fields.index(key), "") if key in fields else (len(fields), key)


def json_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def base_model_digest(model_name_or_path: str) -> str:
    """The content of the model a run starts from: a hash of a local folder's files; for a Hub
    id, the commit of its cached snapshot (`<id>@<commit>`), else the id itself."""
    path = Path(model_name_or_path)
    if path.is_dir():
        return folder_digest(path)
    try:
        from huggingface_hub import snapshot_download

        return f"{model_name_or_path}@{Path(snapshot_download(model_name_or_path, local_files_only=True)).name}"
    except (ImportError, OSError, ValueError):  # not cached, or not a Hub id: the name is all there is
        return model_name_or_path


def folder_digest(folder) -> str:
    """A hash of a folder's files: their paths relative to it and their contents."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return json_sha256({p.relative_to(folder).as_posix(): file_digest(p) for p in files})


def file_digest(path) -> str:
    """The SHA-256 of a file's content; hashed once per process while its size, modification time
    and inode stay the same (model folders are hashed at every run start and every prediction)."""
    status = os.stat(path)
    return _file_digest(str(Path(path).resolve()), status.st_size, status.st_mtime_ns, status.st_ino)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    from ofa_eval.common.keys import file_sha256

    return file_sha256(Path(path))
