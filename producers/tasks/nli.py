"""Natural language inference: premise/hypothesis pairs classified by a sequence classifier.

Pairs are encoded together and truncated to `max_length` tokens (128 in the paper); the
prediction is the arg-max class. Labels follow XNLI/MNLI: entailment, neutral, contradiction.
"""

from __future__ import annotations

import numpy as np

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.registry import NLIDefinition
from producers.tasks.base import Task, require

LABELS = ["entailment", "neutral", "contradiction"]


class NLITask(NLIDefinition, Task):
    model_class = "AutoModelForSequenceClassification"
    label_keys = ("labels",)
    head_alignment = "frozen-copied"

    def label_names(self, train):
        return list(LABELS)

    def from_record(self, record):
        require(record, "premise", "hypothesis", "label")
        label = record["label"]
        if isinstance(label, str):
            if label not in LABELS:
                raise OfaError(f"NLI label {label!r} is not one of {LABELS}")
            label = LABELS.index(label)
        if label not in range(len(LABELS)):
            raise OfaError(f"NLI label {label!r} is not 0, 1 or 2 ({', '.join(LABELS)})")
        return {"id": record.get("id"), "premise": record["premise"], "hypothesis": record["hypothesis"],
                "label": int(label)}

    def _encode(self, examples, tokenizer, config):
        return tokenizer([e["premise"] for e in examples], [e["hypothesis"] for e in examples],
                         truncation=True, max_length=config.max_length)["input_ids"]

    def train_features(self, examples, tokenizer, config, label_names):
        ids = self._encode(examples, tokenizer, config)
        return [{"input_ids": i, "labels": e["label"]} for i, e in zip(ids, examples)]

    def eval_features(self, examples, tokenizer, config, label_names):
        ids = self._encode(examples, tokenizer, config)
        return [{"input_ids": i, "example_index": n} for n, i in enumerate(ids)]

    def split_outputs(self, output, lengths):
        return list(output.logits.float().cpu().numpy())

    def decode(self, examples, features, outputs, config, label_names):
        predictions = [0] * len(examples)
        for feature, logits in zip(features, outputs):
            predictions[feature["example_index"]] = int(np.argmax(logits))
        return predictions

    def gold(self, examples, label_names):
        return [e["label"] for e in examples]


TASK = NLITask()
