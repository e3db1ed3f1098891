"""The interface every task implements, and the data containers the tasks share.

A task is its engine definition (`ofa_eval.tasks.registry.TaskDefinition`: name, metric, gold and
prediction columns) plus the training code: how to turn examples into model features (for
training and for evaluation), how to turn the model's outputs back into per-example
predictions, and what its gold labels are. Everything else (the training loop, snapshots,
writing artifacts) is task-agnostic. A task plug-in is one class deriving from `Task`,
registered under the entry-point group `ofa_eval.tasks` or loaded from a file with
`ofa-eval --task-module FILE.py` (docs/tasks.md). Nothing here imports torch.

Examples are plain dicts with an `"id"`:
- NLI: `premise`, `hypothesis`, `label` (int index into the label names);
- QA: `question`, `context`, `answers` = `{"text": [...], "answer_start": [...]}` (SQuAD);
- NER: `tokens`, `tags` (lists of words and their IOB2 tags).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.registry import TaskDefinition

IGNORE_INDEX = -100  # label of positions the loss skips (padding, non-first subwords)


@dataclass
class EvalSet:
    """One evaluation set: a (dataset, language, split) and its role in model selection."""

    dataset: str
    language: str
    split: str  # "validation" or "test"
    role: str  # "source" (the English validation set for SRC-DEV) or "target"
    examples: list[dict] = field(repr=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.dataset, self.language, self.split


@dataclass
class TaskData:
    """A task's English training data, its evaluation sets and its label names."""

    train: list[dict] = field(repr=False)
    eval_sets: list[EvalSet]
    label_names: list[str] | None

    @property
    def source_validation(self) -> EvalSet:
        return next(e for e in self.eval_sets if e.role == "source" and e.split == "validation")


class Task(TaskDefinition):
    """Base class of the trainable tasks (nli, qa, ner and plug-ins): the engine part plus training."""

    model_class: str = ""  # the transformers Auto class
    label_keys: tuple[str, ...] = ()  # feature keys that are training labels
    head_alignment: str = "frozen-copied"  # the paper's default for this task

    def label_names(self, train: list[dict]) -> list[str] | None:
        """The label list of the classifier (None for tasks without one)."""
        return None

    def from_record(self, record: dict) -> dict:
        """An example from one record of a local file (raises OfaError when malformed)."""
        raise NotImplementedError

    def train_features(self, examples, tokenizer, config, label_names) -> list[dict]:
        raise NotImplementedError

    def eval_features(self, examples, tokenizer, config, label_names) -> list[dict]:
        raise NotImplementedError

    def split_outputs(self, output, lengths: list[int]) -> list:
        """Per-feature numpy outputs from one batch's model output."""
        raise NotImplementedError

    def decode(self, examples, features, outputs, config, label_names) -> list:
        """One prediction per example, in the metric's form (docs/artifacts.md)."""
        raise NotImplementedError

    def gold(self, examples, label_names) -> list:
        """One gold value per example, in the metric's form."""
        raise NotImplementedError

    def relabel(self, examples, label_map: dict[str, str]) -> list[dict]:
        """The examples with their labels renamed by a data table's `label_map` (optional)."""
        raise OfaError(f"task {self.name!r} does not support label_map (a task supports it by defining "
                       "relabel, see docs/tasks.md)")


def require(record: dict, *keys: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise OfaError(f"record is missing {', '.join(missing)}: {str(record)[:200]}")
