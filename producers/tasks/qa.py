"""Extractive QA (SQuAD v1.1 style, TyDiQA-GoldP): answer spans from start/end token logits.

Question and context are encoded together; a long context becomes several windows of
`max_length` tokens that overlap by `stride` tokens (384 and 128 in the paper). A training
window whose context part does not contain the answer is labelled with the first token.
Predictions are mapped back to the context text through the fast tokenizer's offset mapping:
per window, the `n_best` highest start and end logits among context tokens are paired, spans
longer than `max_answer_length` tokens or ending before they start are dropped, and the span
with the highest start + end logit over all of an example's windows is the answer.
"""

from __future__ import annotations

import numpy as np

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.registry import QADefinition
from producers.tasks.base import Task, require


class QATask(QADefinition, Task):
    model_class = "AutoModelForQuestionAnswering"
    label_keys = ("start_positions", "end_positions")
    head_alignment = "frozen-copied"

    def from_record(self, record, check_offsets: bool = True):
        """A QA example; with `check_offsets`, every answer must be at its `answer_start`."""
        require(record, "question", "context", "answers")
        answers = record["answers"]
        if isinstance(answers, list):  # a list of {"text", "answer_start"} objects
            answers = {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]}
        if not answers.get("text") or len(answers["text"]) != len(answers.get("answer_start", [])):
            raise OfaError(f"QA record {record.get('id')!r}: answers need matching 'text' and 'answer_start' lists")
        for text, start in zip(answers["text"], answers["answer_start"]):
            if check_offsets and record["context"][start:start + len(text)] != text:
                raise OfaError(f"QA record {record.get('id')!r}: answer {text!r} is not at character {start}")
        return {"id": record.get("id"), "question": record["question"], "context": record["context"],
                "answers": {"text": list(answers["text"]), "answer_start": [int(s) for s in answers["answer_start"]]}}

    def windows(self, examples, tokenizer, config) -> list[dict]:
        """Token windows over question + context, with context offsets (None outside the context)."""
        if not getattr(tokenizer, "is_fast", False):
            raise OfaError("extractive QA needs a fast tokenizer (offset mappings)")
        encoding = tokenizer([e["question"].lstrip() for e in examples], [e["context"] for e in examples],
                             truncation="only_second", max_length=config.max_length, stride=config.stride,
                             return_overflowing_tokens=True, return_offsets_mapping=True)
        windows = []
        for i, input_ids in enumerate(encoding["input_ids"]):
            sequence_ids = encoding.sequence_ids(i)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoding["offset_mapping"][i], sequence_ids)]
            windows.append({"input_ids": input_ids, "example_index": encoding["overflow_to_sample_mapping"][i],
                            "offsets": offsets})
        return windows

    def train_features(self, examples, tokenizer, config, label_names):
        features = []
        for window in self.windows(examples, tokenizer, config):
            answers = examples[window["example_index"]]["answers"]
            start_char = answers["answer_start"][0]
            start, end = answer_tokens(window["offsets"], start_char, start_char + len(answers["text"][0]))
            features.append({"input_ids": window["input_ids"], "start_positions": start, "end_positions": end})
        return features

    def eval_features(self, examples, tokenizer, config, label_names):
        return self.windows(examples, tokenizer, config)

    def split_outputs(self, output, lengths):
        starts = output.start_logits.float().cpu().numpy()
        ends = output.end_logits.float().cpu().numpy()
        return [(s[:n], e[:n]) for s, e, n in zip(starts, ends, lengths)]

    def decode(self, examples, features, outputs, config, label_names):
        best = [(-np.inf, "")] * len(examples)
        for feature, (start_logits, end_logits) in zip(features, outputs):
            span = best_span(start_logits, end_logits, feature["offsets"], config.n_best, config.max_answer_length)
            index = feature["example_index"]
            if span is not None and span[0] > best[index][0]:
                score, first, last = span
                best[index] = (score, examples[index]["context"][first:last])
        return [text for _, text in best]

    def gold(self, examples, label_names):
        return [list(e["answers"]["text"]) for e in examples]


def answer_tokens(offsets, start_char: int, end_char: int) -> tuple[int, int]:
    """First and last token of the answer in a window, or (0, 0) if the window lacks it."""
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    first = max(i for i in context if offsets[i][0] <= start_char)
    last = min(i for i in context if offsets[i][1] >= end_char)
    return first, last


def best_span(start_logits, end_logits, offsets, n_best: int, max_answer_length: int):
    """(score, first char, end char) of the best valid span in one window, or None."""
    context = np.array([i for i, o in enumerate(offsets) if o is not None], dtype=np.int64)
    if context.size == 0:
        return None
    starts = context[np.argsort(-start_logits[context], kind="stable")[:n_best]]
    ends = context[np.argsort(-end_logits[context], kind="stable")[:n_best]]
    length = ends[None, :] - starts[:, None] + 1
    scores = np.where((length >= 1) & (length <= max_answer_length),
                      start_logits[starts][:, None] + end_logits[ends][None, :], -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    if not np.isfinite(scores[i, j]):
        return None
    return float(scores[i, j]), offsets[starts[i]][0], offsets[ends[j]][1]


TASK = QATask()
