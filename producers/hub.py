"""Data from the Hugging Face Hub (needs network access or a warm `datasets` cache): any dataset's
split (`hub_records`, for the grid's general Hub form in `producers.data`), and the paper's
datasets:

- `xnli`: English MNLI training data (XNLI's `en` train split), XNLI `en` validation as the
  source validation set, and validation/test sets of XNLI and IndicXNLI targets.
- `tydiqa`: TyDiQA-GoldP, whose Hub splits mix languages; examples are assigned to languages by
  the prefix of their id (`english-...`, `arabic-...`). English GoldP train is the training data
  and English GoldP validation the source validation set. For each target language, as in the
  paper's code, its GoldP *train* split serves as its validation set and its GoldP validation
  split as its test set (TyDiQA-GoldP has no test split).
- `ner`: English WikiANN training data, WikiANN `en` validation as the source validation set,
  and validation/test sets of WikiANN, MasakhaNER 1.0 and MasakhaNER 2.0 targets. The
  MasakhaNER gold's DATE entities become O (the NER task drops unknown entity types).

The default language lists are those of the paper's released results; a grid's data table may
narrow them with `languages = { xnli = [...], indicxnli = [...] }` (keys are dataset names).
Hub ids are as of writing; a dataset that the installed `datasets` cannot load (e.g. one that
still needs a loading script) can be given as local files instead (`producers.data`).

A split that cannot be loaded (no network, an unknown configuration or split) is a one-line
`OfaError` naming the dataset, configuration and split; the Hub client's retry warnings are
silenced.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse

from ofa_eval.common.errors import OfaError
from producers.formats import class_label_names, one_line
from producers.tasks import EvalSet, get_task

XNLI_ID, INDICXNLI_ID = "facebook/xnli", "Divyanshu/IndicXNLI"
TYDIQA_ID = "google-research-datasets/tydiqa"
WIKIANN_ID, MASAKHANER_ID, MASAKHANER2_ID = "unimelb-nlp/wikiann", "masakhane/masakhaner", "masakhane/masakhaner2"

LANGUAGES = {
    "xnli": ["ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"],
    "indicxnli": ["as", "bn", "gu", "hi", "kn", "ml", "mr", "or", "pa", "ta", "te"],
    "tydiqa": ["ar", "bn", "fi", "id", "ko", "ru", "sw", "te"],
    "wikiann": ["ar", "de", "ru", "zh", "ja", "ur", "ay", "qu", "ta", "sw", "yo", "rw", "am", "ig", "hi", "fr",
                "es", "vi", "tr", "bg", "te", "el", "he", "fi", "hu"],
    "masakhaner": ["amh", "hau", "ibo", "kin", "lug", "luo", "pcm", "swa", "wol", "yor"],
    "masakhaner2": ["bam", "bbj", "ewe", "fon", "hau", "ibo", "kin", "lug", "mos", "nya", "pcm", "sna", "swa",
                    "tsn", "twi", "wol", "xho", "yor", "zul"],
}
TYDIQA_PREFIXES = {"english": "en", "arabic": "ar", "bengali": "bn", "finnish": "fi", "indonesian": "id",
                   "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te"}
HUB_SPLITS = {"validation": "validation", "test": "test"}
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_HINT = ("Hub data needs network access, or a warm `datasets` cache with HF_HUB_OFFLINE=1; "
                "local files work offline (docs/producers.md)")


def load_hub(task_name: str, spec: dict):
    """(train examples, evaluation sets) of a `{hub = ...}` data table."""
    loaders = {"xnli": ("nli", _xnli), "tydiqa": ("qa", _tydiqa), "ner": ("ner", _ner)}
    if spec["hub"] not in loaders:
        raise OfaError(f"unknown hub data {spec['hub']!r} (known: {', '.join(loaders)})")
    task, loader = loaders[spec["hub"]]
    if task != task_name:
        raise OfaError(f"hub data {spec['hub']!r} is for the {task} task, not {task_name}")
    languages = {**LANGUAGES, **spec.get("languages", {})}
    return loader(get_task(task), languages)


def hub_records(path: str, configuration: str | None, split: str, revision: str | None = None):
    """(rows as dicts, ClassLabel names by column) of one split of a Hub dataset."""
    dataset = _load(path, configuration, split, revision)
    return dataset.to_list(), class_label_names(dataset.features.to_dict())


def _load(path: str, name: str | None, split: str, revision: str | None = None):
    from datasets import load_dataset
    from datasets.utils.logging import set_verbosity_error as quiet_datasets
    from huggingface_hub.utils.logging import set_verbosity_error as quiet_hub

    quiet_datasets()
    quiet_hub()  # no "Retrying in 2s" warnings: the error below says what went wrong
    where = f"Hub dataset {path!r} (configuration {name!r}, split {split!r})"
    problem = _unreachable_hub()
    if problem is not None:
        raise OfaError(f"{where}: cannot be loaded ({problem}); {OFFLINE_HINT}")
    try:
        return load_dataset(path, name, split=split, revision=revision)
    except Exception as error:  # datasets raises ConnectionError, ValueError, FileNotFoundError and more
        hint = f"; {OFFLINE_HINT}" if isinstance(error, ConnectionError) else ""
        raise OfaError(f"{where}: cannot be loaded ({type(error).__name__}: {one_line(error)[:300]}){hint}") from None


@functools.cache
def _unreachable_hub() -> str | None:
    """Why the Hub cannot be reached, or None (also when offline mode or a proxy makes it moot).

    Without this check, the Hub client retries a failed connection five times (about half a
    minute) before giving up.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        return f"{endpoint.hostname} is not reachable: {one_line(error)}"
    return None


def _examples(task, rows, prefix: str) -> list[dict]:
    examples = []
    for index, row in enumerate(rows):
        example = task.from_record(row)
        example["id"] = str(row["id"]) if row.get("id") is not None else f"{prefix}-{index}"
        examples.append(example)
    return examples


def _eval_sets(task, dataset: str, hub_id: str, languages, convert=lambda ds: ds):
    return [EvalSet(dataset, language, split, "target",
                    _examples(task, convert(_load(hub_id, language, hub_split)), f"{language}-{split}"))
            for language in languages for split, hub_split in HUB_SPLITS.items()]


def _xnli(task, languages):
    train = _examples(task, _load(XNLI_ID, "en", "train"), "en-train")
    source = EvalSet("xnli", "en", "validation", "source",
                     _examples(task, _load(XNLI_ID, "en", "validation"), "en-validation"))
    return train, [source, *_eval_sets(task, "xnli", XNLI_ID, languages["xnli"]),
                   *_eval_sets(task, "indicxnli", INDICXNLI_ID, languages["indicxnli"])]


def _tydiqa(task, languages):
    by_language = {split: _split_by_prefix(task, _load(TYDIQA_ID, "secondary_task", split))
                   for split in ("train", "validation")}
    source = EvalSet("tydiqa", "en", "validation", "source", by_language["validation"]["en"])
    targets = [EvalSet("tydiqa", language, split, "target", by_language[hub_split][language])
               for language in languages["tydiqa"]
               for split, hub_split in (("validation", "train"), ("test", "validation"))]
    return by_language["train"]["en"], [source, *targets]


def _split_by_prefix(task, rows) -> dict[str, list[dict]]:
    """TyDiQA-GoldP rows grouped by language, read from the prefix of their ids."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        language = TYDIQA_PREFIXES.get(row["id"].split("-", 1)[0])
        if language is not None:
            example = task.from_record(row, check_offsets=False)  # the release's offsets, as they are
            example["id"] = row["id"]
            grouped.setdefault(language, []).append(example)
    return grouped


def _ner(task, languages):
    def named(ds):
        names = ds.features["ner_tags"].feature.names
        return [{"id": row.get("id"), "tokens": row["tokens"], "tags": [names[t] for t in row["ner_tags"]]}
                for row in ds]

    train = _examples(task, named(_load(WIKIANN_ID, "en", "train")), "en-train")
    source = EvalSet("wikiann", "en", "validation", "source",
                     _examples(task, named(_load(WIKIANN_ID, "en", "validation")), "en-validation"))
    return train, [source, *_eval_sets(task, "wikiann", WIKIANN_ID, languages["wikiann"], named),
                   *_eval_sets(task, "masakhaner", MASAKHANER_ID, languages["masakhaner"], named),
                   *_eval_sets(task, "masakhaner2", MASAKHANER2_ID, languages["masakhaner2"], named)]
