"""A task's data from a grid file's `data` table: local files, or the paper's Hub datasets.

Three forms (paths are relative to the grid file's folder):

- `{ hub = "xnli" | "tydiqa" | "ner", ... }`: the paper's datasets (`producers.hub`);
- `{ directory = "data/nli", dataset = "synth-nli", source = "en" }`: a folder with one
  subfolder per language and one file per split (`<language>/<split>.<ext>`): the source
  language's `train` is the training data and its `validation` the source validation set; every
  other language's `validation`/`test` files are target sets;
- `{ train = "...", eval = [{ dataset, language, split, path, role = "source"|"target" }, ...] }`:
  every file named explicitly (exactly one source validation set).

Files are read by extension: `.jsonl`/`.json` (JSON Lines), `.parquet`, and `.conll`/`.txt`/
`.iob`/`.bio` (CoNLL, NER only), with `producers.formats`. Records without an `id` get their
line index as id. `train_limit` / `eval_limit` keep only the first N examples (for smoke tests).
"""

from __future__ import annotations

from pathlib import Path

from ofa_eval.errors import OfaError
from producers.tasks import EvalSet, TaskData, get_task

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio", ".iob2")
SUFFIXES = (".jsonl", ".json", ".parquet", *CONLL_SUFFIXES)
SPLITS = ("train", "validation", "test")


def load_task_data(task_name: str, spec: dict, base_dir=".") -> TaskData:
    """The training data and evaluation sets a grid's `data` table describes."""
    task = get_task(task_name)
    if "hub" in spec:
        from producers.hub import load_hub

        train, eval_sets = load_hub(task_name, spec)
    elif "directory" in spec:
        train, eval_sets = _from_directory(task, spec, Path(base_dir))
    elif "train" in spec and "eval" in spec:
        train, eval_sets = _from_files(task, spec, Path(base_dir))
    else:
        raise OfaError("a data table needs `hub`, `directory`, or `train` and `eval` (see docs/producers.md)")
    train = train[: spec.get("train_limit")]
    for eval_set in eval_sets:
        eval_set.examples = eval_set.examples[: spec.get("eval_limit")]
    return checked(TaskData(train, eval_sets, task.label_names(train)))


def checked(data: TaskData) -> TaskData:
    sources = [e for e in data.eval_sets if e.role == "source" and e.split == "validation"]
    if len(sources) != 1:
        raise OfaError(f"expected exactly one source validation set, found {len(sources)}")
    if not data.train:
        raise OfaError("no training examples")
    for eval_set in data.eval_sets:
        ids = [e["id"] for e in eval_set.examples]
        if not ids or len(set(ids)) != len(ids):
            raise OfaError(f"{eval_set.dataset}/{eval_set.language}/{eval_set.split}: "
                           "no examples, or example ids that are not unique")
    return data


def read_examples(task, path) -> list[dict]:
    """A file's examples in the task's form, each with a string id."""
    from producers.formats import read_conll, read_jsonl, read_table

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        records = [{"tokens": tokens, "tags": tags} for tokens, tags in read_conll(path)]
    elif suffix == ".parquet":
        records = read_table(path)
    elif suffix in (".jsonl", ".json"):
        records = read_jsonl(path)
    else:
        raise OfaError(f"{path}: unknown file type (expected one of {', '.join(SUFFIXES)})")
    examples = []
    for index, record in enumerate(records):
        try:
            example = task.from_record(record)
        except OfaError as error:
            raise OfaError(f"{path}: record {index + 1}: {error}") from None
        example["id"] = str(example["id"]) if example.get("id") is not None else str(index)
        examples.append(example)
    return examples


def _from_files(task, spec: dict, base: Path):
    train = read_examples(task, base / spec["train"])
    eval_sets = []
    for entry in spec["eval"]:
        missing = {"dataset", "language", "split", "path"} - set(entry)
        if missing:
            raise OfaError(f"an eval entry is missing {', '.join(sorted(missing))}: {entry}")
        eval_sets.append(EvalSet(entry["dataset"], entry["language"], entry["split"], entry.get("role", "target"),
                                 read_examples(task, base / entry["path"])))
    return train, eval_sets


def _from_directory(task, spec: dict, base: Path):
    root, source = base / spec["directory"], spec.get("source", "en")
    dataset = spec.get("dataset", root.name)
    files = _split_files(root)
    if (source, "train") not in files:
        raise OfaError(f"{root}: no {source}/train file")
    eval_sets = [EvalSet(dataset, language, split, "source" if language == source else "target",
                         read_examples(task, path))
                 for (language, split), path in sorted(files.items()) if split != "train"]
    return read_examples(task, files[(source, "train")]), eval_sets


def _split_files(root: Path) -> dict[tuple[str, str], Path]:
    if not root.is_dir():
        raise OfaError(f"{root}: no such data directory")
    files = {}
    for path in sorted(root.glob("*/*")):
        if path.stem in SPLITS and path.suffix.lower() in SUFFIXES:
            files[(path.parent.name, path.stem)] = path
    return files
