"""A run's recipe: task, model, hyperparameters and the fixed training settings of the paper.

`RunConfig` is a plain frozen dataclass (no torch), so grid files, launchers and pickled SLURM
jobs can pass it around. Its defaults are the paper's recipe (section 3): AdamW with weight
decay 0.01, gradient clipping at 1.0, 10% linear warm-up then linear decay, 10 epochs, 10
snapshots, 128 tokens (QA: windows of 384 tokens with a stride of 128, n-best 20, answers of at
most 30 tokens).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

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
