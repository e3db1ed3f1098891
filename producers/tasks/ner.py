"""Named entity recognition: word-level IOB2 tags from a token classifier.

Sentences come as words; only the first subword of each word carries its tag (the others are
ignored by the loss), sequences are truncated to `max_length` tokens (128 in the paper), and a
word's prediction is the arg-max tag of its first subword. Words cut off by truncation (or that
tokenize to nothing) are predicted `O`, so predictions always have one tag per word.

The label names are the tags of the English training data. In the gold of an evaluation set,
entity types the model has no label for become `O`: a WikiANN model (PER, ORG, LOC) evaluated on
MasakhaNER is not asked for DATE entities.
"""

from __future__ import annotations

from ofa_eval.errors import OfaError
from ofa_eval.metrics import drop_entity_types
from producers.tasks.base import IGNORE_INDEX, Task, require


class NERTask(Task):
    name = "ner"
    model_class = "AutoModelForTokenClassification"
    label_keys = ("labels",)
    head_alignment = "shared-init"

    def label_names(self, train):
        """`O` first, then each entity type's B- and I- tags, types in alphabetical order."""
        tags = {tag for example in train for tag in example["tags"]} - {"O"}
        return ["O"] + sorted(tags, key=lambda tag: (tag[2:], tag[:1]))

    def from_record(self, record):
        require(record, "tokens", "tags")
        if len(record["tokens"]) != len(record["tags"]):
            raise OfaError(f"NER record {record.get('id')!r}: {len(record['tokens'])} tokens but "
                           f"{len(record['tags'])} tags")
        return {"id": record.get("id"), "tokens": list(record["tokens"]), "tags": list(record["tags"])}

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


def first_subwords(word_ids) -> list[bool]:
    """True at the first token of each word (never at special tokens)."""
    return [w is not None and (i == 0 or word_ids[i - 1] != w) for i, w in enumerate(word_ids)]


TASK = NERTask()
