"""The interface every task implements, and the data containers the tasks share.

A task knows how to turn examples into model features (for training and for evaluation), how
to turn the model's outputs back into per-example predictions, and what its gold labels are.
Everything else (the training loop, snapshots, writing artifacts) is task-agnostic.

Examples are plain dicts with an `"id"`:
- NLI: `premise`, `hypothesis`, `label` (int index into the label names);
- QA: `question`, `context`, `answers` = `{"text": [...], "answer_start": [...]}` (SQuAD);
- NER: `tokens`, `tags` (lists of words and their IOB2 tags).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ofa_eval.errors import OfaError

IGNORE_INDEX = -100  # label of positions the loss skips (padding, non-first subwords)


@dataclass
class EvalSet:
    """One evaluation set: a (dataset, language, split) and its role in model selection."""

    dataset: str
    language: str
    split: str  # "validation" or "test"
    role: str  # "source" (the English validation set for SRC-DEV) or "target"
    examples: list[dict] = field(repr=False)


@dataclass
class TaskData:
    """A task's English training data, its evaluation sets and its label names."""

    train: list[dict] = field(repr=False)
    eval_sets: list[EvalSet]
    label_names: list[str] | None

    @property
    def source_validation(self) -> EvalSet:
        return next(e for e in self.eval_sets if e.role == "source" and e.split == "validation")


class Task:
    """Base class of the task modules (nli, qa, ner)."""

    name: str = ""
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


def require(record: dict, *keys: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise OfaError(f"record is missing {', '.join(missing)}: {str(record)[:200]}")
