"""Named entity recognition: word-level IOB2 tags from a token classifier.

Sentences come as words; only the first subword of each word carries its tag (the others are
ignored by the loss), sequences are truncated to `max_length` tokens (128 in the paper), and a
word's prediction is the arg-max tag of its first subword. Words cut off by truncation (or that
tokenize to nothing) are predicted `O`, so predictions always have one tag per word.

The label names are the tags of the training data. In the gold of an evaluation set, entity
types the model has no label for become `O`: a WikiANN model (PER, ORG, LOC) evaluated on
MasakhaNER is not asked for DATE entities. A data table's `label_map` (`{DATE = "O"}`) renames
or drops entity types in the training and evaluation data alike (`relabel`), e.g. to train on
MasakhaNER itself as the paper evaluates it.
"""

from __future__ import annotations

import re

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.metrics import drop_entity_types
from ofa_eval.tasks.registry import NERDefinition
from producers.tasks.base import IGNORE_INDEX, Task, require


class NERTask(NERDefinition, Task):
    model_class = "AutoModelForTokenClassification"
    label_keys = ("labels",)
    head_alignment = "shared-init"

    def label_names(self, train):
        """`O` first, then each entity type's B- and I- tags, types in alphabetical order."""
        tags = {tag for example in train for tag in example["tags"]} - {"O"}
        return ["O"] + sorted(tags, key=lambda tag: (tag[2:], tag[:1]))

    def from_record(self, record):
        """`tokens` and `tags` (or the Hub's `ner_tags`), tags as strings."""
        record = record if "tags" in record or "ner_tags" not in record else {**record, "tags": record["ner_tags"]}
        require(record, "tokens", "tags")
        tokens, tags = list(record["tokens"]), list(record["tags"])
        if len(tokens) != len(tags):
            raise OfaError(f"NER record {record.get('id')!r}: {len(tokens)} tokens but {len(tags)} tags")
        not_text = next((tag for tag in tags if not isinstance(tag, str)), None)
        if not_text is not None:
            raise OfaError(f"NER record {record.get('id')!r}: tag {not_text!r} is not a string; integer ids "
                           "(a ClassLabel) need their names: `class_labels` or `features` in the data table, "
                           "or a Parquet file written by `datasets` (docs/producers.md)")
        return {"id": record.get("id"), "tokens": tokens, "tags": tags}

    def _encode(self, examples, tokenizer, config):
        if not getattr(tokenizer, "is_fast", False):
            raise OfaError("NER needs a fast tokenizer (word ids)")
        encoding = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True,
                             max_length=config.max_length)
        return [(ids, encoding.word_ids(i)) for i, ids in enumerate(encoding["input_ids"])]

    def train_features(self, examples, tokenizer, config, label_names):
        index = {tag: i for i, tag in enumerate(label_names)}
        features = []
        for example, (input_ids, word_ids) in zip(examples, self._encode(examples, tokenizer, config)):
            labels = [index[example["tags"][w]] if first else IGNORE_INDEX
                      for w, first in zip(word_ids, first_subwords(word_ids))]
            features.append({"input_ids": input_ids, "labels": labels})
        return features

    def eval_features(self, examples, tokenizer, config, label_names):
        return [{"input_ids": input_ids, "example_index": n, "word_ids": word_ids}
                for n, (input_ids, word_ids) in enumerate(self._encode(examples, tokenizer, config))]

    def split_outputs(self, output, lengths):
        best = output.logits.argmax(dim=-1).cpu().numpy()
        return [row[:n] for row, n in zip(best, lengths)]

    def decode(self, examples, features, outputs, config, label_names):
        predictions = [None] * len(examples)
        for feature, best in zip(features, outputs):
            n = feature["example_index"]
            tags = ["O"] * len(examples[n]["tokens"])
            for word, first, label in zip(feature["word_ids"], first_subwords(feature["word_ids"]), best):
                if first:
                    tags[word] = label_names[int(label)]
            predictions[n] = tags
        return predictions

    def gold(self, examples, label_names):
        known = {tag[2:] for tag in label_names if tag != "O"}
        unknown = {tag[2:] for e in examples for tag in e["tags"] if tag != "O"} - known
        tags = [e["tags"] for e in examples]
        return drop_entity_types(tags, unknown) if unknown else [list(t) for t in tags]


    def relabel(self, examples, label_map):
        """Entity types renamed: `{DATE = "O"}` makes DATE entities O, `{PERSON = "PER"}` renames."""
        tagged = [text for pair in label_map.items() for text in pair if re.match(r"[BIES]-", text)]
        if tagged:
            raise OfaError(f"label_map maps entity types (DATE = \"O\"), not tags: {tagged[0]!r}")
        return [{**example, "tags": [_renamed(tag, label_map) for tag in example["tags"]]} for example in examples]


def _renamed(tag: str, label_map: dict[str, str]) -> str:
    if tag == "O":
        return tag
    prefix, _, entity_type = tag.partition("-")
    renamed = label_map.get(entity_type, entity_type)
    return "O" if renamed == "O" else f"{prefix}-{renamed}"


def first_subwords(word_ids) -> list[bool]:
    """True at the first token of each word (never at special tokens)."""
    return [w is not None and (i == 0 or word_ids[i - 1] != w) for i, w in enumerate(word_ids)]


TASK = NERTask()
