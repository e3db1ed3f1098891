"""Task metrics (NLI accuracy, SQuAD v1.1 QA F1/EM, entity-level NER F1) as per-example statistics.

Each metric splits into two steps so that a bootstrap can resample examples cheaply:

- ``example_stats(gold, pred)`` turns predictions into sufficient statistics, one value per
  example (a 1-D array per statistic);
- ``from_sums(sums, n)`` computes the metric from the statistics summed over n examples (what
  the joint bootstrap in ofa_eval/evaluation/joint_bootstrap.py resamples through);
- ``aggregate(stats)`` reduces those statistics over the last axis, so arrays of shape
  ``(B, n_examples)`` (B bootstrap resamples, built by fancy-indexing the 1-D arrays) give B
  metric values at once. Values are in percent (0-100).

The QA statistics follow the official SQuAD v1.1 evaluation script; the NER statistics follow
seqeval's default (conlleval-style, non-strict) entity extraction. Neither library is imported.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

Stats = dict[str, np.ndarray]
Scores = dict[str, "np.ndarray | float"]


class Metric:
    """A task metric: per-example sufficient statistics plus a vectorized aggregation."""

    name: str = ""
    names: tuple[str, ...] = ()

    def example_stats(self, gold, pred) -> Stats:
        """Per-example statistics, each an array of shape (n_examples,)."""
        raise NotImplementedError

    def from_sums(self, sums: Stats, n_examples: int) -> Scores:
        """Metric values in percent from each statistic summed over `n_examples` examples.

        Sums may have any shape (e.g. one per bootstrap resample); every metric here depends on
        the examples only through these sums, which is what makes resampling cheap.
        """
        raise NotImplementedError

    def aggregate(self, stats: Stats) -> Scores:
        """Metric values in percent, reducing each statistic over its last axis."""
        sums, n_examples = {}, 0
        for key, values in stats.items():
            values = np.asarray(values, dtype=np.float64)
            _check_nonempty_last_axis(values)
            sums[key], n_examples = values.sum(axis=-1), values.shape[-1]
        return self.from_sums(sums, n_examples)

    def compute(self, gold, pred) -> Scores:
        """Metric values in percent for one evaluation set."""
        return self.aggregate(self.example_stats(gold, pred))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, names={self.names!r})"


def _check_same_length(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} examples but pred has {len(pred)}")
    if len(gold) == 0:
        raise ValueError("no examples to score")


def _check_nonempty_last_axis(array: np.ndarray) -> None:
    if array.ndim == 0 or array.shape[-1] == 0:
        raise ValueError("cannot aggregate statistics over zero examples")


def _as_result(values: np.ndarray) -> np.ndarray | float:
    """A plain float for a single evaluation set, the array for batched (resampled) sets."""
    return float(values) if np.ndim(values) == 0 else values


def _mean_percent(total, n_examples: int) -> np.ndarray | float:
    return _as_result(np.asarray(total, dtype=np.float64) * (100.0 / n_examples))


def _ratio_percent(numerator, denominator) -> np.ndarray:
    """100 * numerator / denominator elementwise, 0 where the denominator is 0 (seqeval's default)."""
    numerator, denominator = np.broadcast_arrays(
        np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    )
    ratio = np.zeros(numerator.shape)
    np.divide(numerator, denominator, out=ratio, where=denominator > 0)
    return ratio * 100.0


# --- NLI -------------------------------------------------------------------------------------


class AccuracyMetric(Metric):
    """Classification accuracy over integer labels (NLI)."""

    name = "accuracy"
    names = ("accuracy",)

    def example_stats(self, gold, pred) -> Stats:
        gold_labels = np.asarray(gold)
        pred_labels = np.asarray(pred)
        if gold_labels.ndim != 1 or pred_labels.ndim != 1:
            raise ValueError("NLI gold and pred must be flat sequences of labels")
        _check_same_length(gold_labels, pred_labels)
        return {"correct": (gold_labels == pred_labels).astype(np.float64)}

    def from_sums(self, sums: Stats, n_examples: int) -> Scores:
        return {"accuracy": _mean_percent(sums["correct"], n_examples)}


# --- QA (SQuAD v1.1) -------------------------------------------------------------------------

_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop ASCII punctuation and articles, squeeze spaces.

    Only ``string.punctuation`` is removed, as in the official script; other Unicode punctuation
    stays part of the tokens.
    """
    without_punctuation = text.lower().translate(_ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", without_punctuation).split())


@lru_cache(maxsize=8192)
def _normalized_tokens(text: str) -> tuple[str, Counter]:
    """(the normalised text, its token counts). Cached: a run's subjects are scored against the
    same gold answers, and snapshots repeat one another's predictions; normalising and counting
    was most of QA's scoring time. Callers must not modify the Counter."""
    normalized = normalize_answer(text)
    return normalized, Counter(normalized.split())


def _best_f1_and_exact(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(token F1, exact match) of the official script, each the best over the answers."""
    normalized, predicted = _normalized_tokens(prediction)
    best_f1 = best_exact = 0.0
    for answer in answers:
        normalized_answer, expected = _normalized_tokens(answer)
        if normalized == normalized_answer:
            # two empty answers: exact, but F1 0 in SQuAD v1.1 (v2.0 would score 1)
            best_f1, best_exact = max(best_f1, 1.0 if predicted else 0.0), 1.0
            continue
        overlap = sum(min(count, predicted[token]) for token, count in expected.items() if token in predicted)
        if overlap:
            precision, recall = overlap / predicted.total(), overlap / expected.total()
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return best_f1, best_exact


class SquadMetric(Metric):
    """SQuAD v1.1 token F1 and exact match, each the best over an example's gold answers."""

    name = "f1"
    names = ("f1", "exact_match")

    def example_stats(self, gold, pred) -> Stats:
        _check_same_length(gold, pred)
        f1_scores = np.empty(len(pred))
        exact_scores = np.empty(len(pred))
        for index, (answers, prediction) in enumerate(zip(gold, pred)):
            answers = _gold_answer_list(answers, index)
            if not isinstance(prediction, str):
                raise ValueError(f"QA example {index}: prediction must be a string, got {prediction!r}")
            f1_scores[index], exact_scores[index] = _best_f1_and_exact(prediction, answers)
        return {"f1": f1_scores, "exact_match": exact_scores}

    def from_sums(self, sums: Stats, n_examples: int) -> Scores:
        return {"f1": _mean_percent(sums["f1"], n_examples),
                "exact_match": _mean_percent(sums["exact_match"], n_examples)}


def _gold_answer_list(answers, index: int) -> list[str]:
    # A bare string would otherwise be iterated character by character.
    if isinstance(answers, str):
        raise ValueError(f"QA example {index}: gold must be a list of answer strings, got a string")
    answers = list(answers)
    if not answers:
        raise ValueError(f"QA example {index} has no gold answers")
    if not all(isinstance(answer, str) for answer in answers):
        raise ValueError(f"QA example {index}: gold answers must be strings, got {answers!r}")
    return answers


# --- NER (seqeval default mode) --------------------------------------------------------------

_TAG_PREFIXES = ("B", "I", "E", "S")


def _parse_tag(tag: str) -> tuple[str, str]:
    """Split a tag into (prefix, entity type): "B-PER" -> ("B", "PER"), "O" -> ("O", "")."""
    if tag == "O":
        return "O", ""
    if isinstance(tag, str) and len(tag) > 2 and tag[0] in _TAG_PREFIXES and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"not an IOB/IOBES tag: {tag!r} (expected 'O' or B-/I-/E-/S- plus a type)")


def extract_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities of one sentence as (type, first token, last token), like seqeval's get_entities.

    Non-strict (conlleval) semantics: an I- or E- tag continues an open entity of the same type
    and otherwise starts a new one (e.g. ``I-PER`` after ``O``); a change of type, a B-, S- or O
    tag, or a previous E-/S- tag closes the open entity.
    """
    entities = set()
    open_type, open_start, previous_prefix = None, 0, "O"
    for position, tag in enumerate(tags):
        prefix, entity_type = _parse_tag(tag)
        closes = previous_prefix in ("E", "S") or prefix in ("B", "S", "O") or entity_type != open_type
        if open_type is not None and closes:
            entities.add((open_type, open_start, position - 1))
            open_type = None
        if prefix != "O" and open_type is None:
            open_type, open_start = entity_type, position
        previous_prefix = prefix
    if open_type is not None:
        entities.add((open_type, open_start, len(tags) - 1))
    return entities


class EntityF1Metric(Metric):
    """Micro-averaged entity-level precision, recall and F1 over exact (type, span) matches."""

    name = "f1"
    names = ("f1", "precision", "recall")

    def example_stats(self, gold, pred) -> Stats:
        _check_same_length(gold, pred)
        counts = np.zeros((3, len(gold)), dtype=np.int64)
        for index, (gold_tags, pred_tags) in enumerate(zip(gold, pred)):
            if len(gold_tags) != len(pred_tags):
                raise ValueError(
                    f"NER sentence {index}: gold has {len(gold_tags)} tags but pred has {len(pred_tags)}"
                )
            try:
                gold_entities = extract_entities(gold_tags)
                pred_entities = extract_entities(pred_tags)
            except ValueError as error:
                raise ValueError(f"NER sentence {index}: {error}") from None
            counts[:, index] = len(gold_entities & pred_entities), len(pred_entities), len(gold_entities)
        true_positives, n_pred, n_gold = counts
        return {"tp": true_positives, "n_pred": n_pred, "n_gold": n_gold}

    def from_sums(self, sums: Stats, n_examples: int) -> Scores:
        return {
            "f1": _as_result(_ratio_percent(2 * sums["tp"], sums["n_pred"] + sums["n_gold"])),
            "precision": _as_result(_ratio_percent(sums["tp"], sums["n_pred"])),
            "recall": _as_result(_ratio_percent(sums["tp"], sums["n_gold"])),
        }


def drop_entity_types(tag_sequences: Iterable[Sequence[str]], types: set[str]) -> list[list[str]]:
    """Map every tag of the given entity types to O, e.g. MasakhaNER's DATE for a WikiANN model."""
    return [[_drop_tag(tag, types) for tag in tags] for tags in tag_sequences]


def _drop_tag(tag: str, types: set[str]) -> str:
    prefix, entity_type = _parse_tag(tag)
    return "O" if prefix != "O" and entity_type in types else tag
