"""A task's data from a grid file's `data` table: local files, any Hub dataset, or the paper's.

Four forms (paths are relative to the grid file's folder; docs/producers.md lists every key):

- a folder, `{ directory = "data/ner", source = "pcm" }`: one subfolder per language, one file
  per split (`<language>/<split>.<ext>`; split names `train`, `dev`/`valid`/`validation` and
  `test`, as MasakhaNER ships them). The source language's train file is the training data,
  its validation file the source validation set (its test file, if any, a source test set);
  every other language's validation and test files are target sets (`targets = [...]`: only
  those languages);
- named files, `{ train = "en.jsonl", eval = [{ dataset, language, split, role, path }, ...] }`:
  exactly one source validation set. Any of them may be a Hub split instead of a file
  (`{ hub = "masakhane/masakhaner2", configuration = "hau", hub_split = "validation" }`);
- a Hub dataset, `{ hub = { path = "masakhane/masakhaner2" }, source = "pcm", targets = [...] }`:
  the source language's train and validation splits and every target's validation and test
  splits, each language's configuration named `{language}` unless `configuration` says
  otherwise (a name with `{language}` in it, or a table language -> name), split names
  renamed by `splits`;
- the paper's datasets, `{ hub = "xnli" | "tydiqa" | "ner" }` (`producers.hub`).

Every form takes `label_map` (`{ DATE = "O" }`: applied to training and evaluation data alike,
through the task's `relabel`) and `train_limit` / `eval_limit` (keep the first N examples).
All but the paper's take `columns` (`{ tags = "ner_tags" }`: the task's field -> the data's
column), `class_labels` (`{ ner_tags = ["O", "B-PER", ...] }`: the names of integer label ids)
and `features` (a `dataset_info.json` that gives them). The ClassLabel names of Hub datasets
and of Parquet files written by `datasets` are used without being asked for.

Files are read by extension: `.jsonl`/`.json` (JSON Lines), `.parquet`, and `.conll`/`.txt`/
`.iob`/`.bio` (CoNLL, NER only), with `producers.formats`. Records without an `id` get their
index as id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ofa_eval.common.errors import OfaError
from producers import formats
from producers.tasks import EvalSet, TaskData, get_task

CONLL_SUFFIXES = (*formats.CONLL_SUFFIXES, ".txt")
SUFFIXES = (*formats.JSONL_SUFFIXES, ".parquet", *CONLL_SUFFIXES)
SPLIT_NAMES = {"train": "train", "dev": "validation", "valid": "validation", "validation": "validation",
               "test": "test"}  # file name -> split
DEFAULT_HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}

SHARED_KEYS = {"label_map", "train_limit", "eval_limit"}
RECORD_KEYS = {"columns", "class_labels", "features"}
FORM_KEYS = {
    "directory": {"directory", "dataset", "source", "targets"} | RECORD_KEYS,
    "files": {"train", "eval", "dataset"} | RECORD_KEYS,
    "hub": {"hub", "dataset", "source", "targets"} | RECORD_KEYS,
    "paper": {"hub", "languages"},
}
REQUIRED_KEYS = {"directory": set(), "files": {"train", "eval"}, "hub": {"source", "targets"}, "paper": set()}
HUB_TABLE_KEYS = {"path", "configuration", "splits", "revision"}
ORIGIN_KEYS = {"path", "hub", "configuration", "hub_split", "revision"}
EVAL_KEYS = {"dataset", "language", "split", "role"} | ORIGIN_KEYS


@dataclass(frozen=True)
class Origin:
    """Where one split's records come from: a local file, or a split of a Hub dataset."""

    path: Path | None = None
    hub: str | None = None
    configuration: str | None = None
    hub_split: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"Hub dataset {self.hub} ({self.configuration or 'default configuration'}, split {self.hub_split})"


@dataclass(frozen=True)
class Planned:
    """An evaluation set to be read."""

    dataset: str
    language: str
    split: str
    role: str
    origin: Origin


def load_task_data(task_name: str, spec: dict, base_dir=".") -> TaskData:
    """The training data and evaluation sets a grid's `data` table describes."""
    task, base = get_task(task_name), Path(base_dir)
    form = check_spec(spec)
    if form == "paper":
        from producers.hub import load_hub

        train, eval_sets = load_hub(task_name, spec)
    else:
        train_origin, planned = PLANNERS[form](spec, base)
        reader = RecordReader(task, spec, base)
        train = reader.examples(train_origin)
        eval_sets = [EvalSet(p.dataset, p.language, p.split, p.role, reader.examples(p.origin)) for p in planned]
    if spec.get("label_map"):
        train = task.relabel(train, spec["label_map"])
        for eval_set in eval_sets:
            eval_set.examples = task.relabel(eval_set.examples, spec["label_map"])
    train = train[: spec.get("train_limit")]
    for eval_set in eval_sets:
        eval_set.examples = eval_set.examples[: spec.get("eval_limit")]
    return checked(TaskData(train, eval_sets, task.label_names(train)))


def checked(data: TaskData) -> TaskData:
    sources = [e for e in data.eval_sets if e.role == "source" and e.split == "validation"]
    if len(sources) != 1:
        found = ", ".join(f"{e.dataset}/{e.language}/{e.split} ({e.role})" for e in data.eval_sets) or "none"
        raise OfaError(f"expected exactly one source validation set (role \"source\", split \"validation\"), "
                       f"found {len(sources)}; the evaluation sets are: {found}")
    if not data.train:
        raise OfaError("no training examples")
    for eval_set in data.eval_sets:
        ids = [e["id"] for e in eval_set.examples]
        if not ids or len(set(ids)) != len(ids):
            raise OfaError(f"{eval_set.dataset}/{eval_set.language}/{eval_set.split}: "
                           "no examples, or example ids that are not unique")
    return data


# --- the data table ----------------------------------------------------------------------------------


def check_spec(spec: dict) -> str:
    """The form of a data table ('directory', 'files', 'hub' or 'paper'); OfaError on unknown or
    missing keys."""
    if not isinstance(spec, dict):
        raise OfaError(f"data must be a table, e.g. {{ directory = \"data/ner\", source = \"en\" }}, not {spec!r}")
    form = _form(spec)
    known = FORM_KEYS[form] | SHARED_KEYS
    _check_keys("data", spec, known, REQUIRED_KEYS[form])
    if form == "hub":
        _check_keys("data.hub", spec["hub"], HUB_TABLE_KEYS, {"path"})
    if form == "files":
        _check_files(spec)
    for key in ("label_map", "columns"):
        _check_string_table(key, spec.get(key, {}))
    class_labels = spec.get("class_labels", {})
    if not isinstance(class_labels, dict) or not all(isinstance(v, list) for v in class_labels.values()):
        raise OfaError(f"data: class_labels must be a table column -> list of names, e.g. "
                       f"{{ ner_tags = [\"O\", \"B-PER\", \"I-PER\"] }}, not {class_labels!r}")
    return form


def _check_files(spec: dict) -> None:
    if isinstance(spec["train"], dict):
        _check_keys("data.train", spec["train"], ORIGIN_KEYS, set())
    if not isinstance(spec["eval"], list):
        raise OfaError(f"data.eval must be a list of tables, not {spec['eval']!r}")
    for entry in spec["eval"]:
        _check_keys("an eval entry", entry, EVAL_KEYS, {"language", "split"})
        if entry.get("role", "target") not in ("source", "target"):
            raise OfaError(f"an eval entry's role is \"source\" or \"target\", not {entry['role']!r}: {entry}")


def _form(spec: dict) -> str:
    if isinstance(spec.get("hub"), str):
        return "paper"
    if "hub" in spec:
        return "hub"
    if "directory" in spec:
        return "directory"
    if "train" in spec or "eval" in spec:
        return "files"
    raise OfaError("a data table needs `directory`, `train` and `eval`, or `hub` (see docs/producers.md)")


def _check_keys(where: str, table, known: set[str], required: set[str]) -> None:
    if not isinstance(table, dict):
        raise OfaError(f"{where} must be a table, not {table!r}")
    unknown, missing = sorted(set(table) - known), sorted(required - set(table))
    if unknown:
        raise OfaError(f"{where}: unknown key(s) {', '.join(unknown)} (known here: {', '.join(sorted(known))})")
    if missing:
        raise OfaError(f"{where}: missing key(s) {', '.join(missing)} ({table})")


def _check_string_table(key: str, table) -> None:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise OfaError(f"data: {key} must be a table of names, e.g. {{ DATE = \"O\" }}, not {table!r}")


# --- the forms ---------------------------------------------------------------------------------------


def _plan_files(spec: dict, base: Path) -> tuple[Origin, list[Planned]]:
    train = spec["train"]
    train_origin = _origin({"path": train} if isinstance(train, str) else train, base, "train")
    planned = []
    for entry in spec["eval"]:
        dataset = entry.get("dataset", spec.get("dataset"))
        if dataset is None:
            raise OfaError(f"an eval entry needs a dataset name (or `dataset` in the data table): {entry}")
        planned.append(Planned(dataset, entry["language"], entry["split"], entry.get("role", "target"),
                               _origin(entry, base, entry["split"])))
    return train_origin, planned


def _origin(entry: dict, base: Path, split: str) -> Origin:
    if ("path" in entry) == ("hub" in entry):
        raise OfaError(f"a data file entry needs either `path` (a local file) or `hub` (a Hub dataset): {entry}")
    if "path" in entry:
        return Origin(path=base / entry["path"])
    return Origin(hub=entry["hub"], configuration=entry.get("configuration") or None,
                  hub_split=entry.get("hub_split", split), revision=entry.get("revision"))


def _plan_hub(spec: dict, base: Path) -> tuple[Origin, list[Planned]]:
    hub = spec["hub"]
    dataset = spec.get("dataset", hub["path"].rstrip("/").rsplit("/", 1)[-1])
    splits = {**DEFAULT_HUB_SPLITS, **hub.get("splits", {})}

    def origin(language: str, split: str) -> Origin:
        return Origin(hub=hub["path"], configuration=_configuration(hub, language),
                      hub_split=splits[split].replace("{language}", language), revision=hub.get("revision"))

    source = spec["source"]
    planned = [Planned(dataset, source, "validation", "source", origin(source, "validation"))]
    planned += [Planned(dataset, language, split, "target", origin(language, split))
                for language in spec["targets"] for split in ("validation", "test")]
    return origin(source, "train"), planned


def _configuration(hub: dict, language: str) -> str | None:
    configuration = hub.get("configuration", "{language}")
    if isinstance(configuration, dict):
        if language not in configuration:
            raise OfaError(f"data.hub.configuration names no configuration for language {language!r} "
                           f"(it has: {', '.join(configuration)})")
        configuration = configuration[language]
    return configuration.replace("{language}", language) or None


def _plan_directory(spec: dict, base: Path) -> tuple[Origin, list[Planned]]:
    root, source = base / spec["directory"], spec.get("source", "en")
    dataset = spec.get("dataset", root.name)
    files = _split_files(root)
    for split in ("train", "validation"):
        if (source, split) not in files:
            raise OfaError(_missing_file(root, f"no {split} file for the source language {source!r}",
                                         _file_names(source, split)))
    evaluated = sorted({language for language, split in files if split != "train"} - {source})
    targets = [language for language in spec.get("targets", evaluated) if language != source]
    for language in targets:
        if not any((language, split) in files for split in ("validation", "test")):
            raise OfaError(_missing_file(root, f"no validation or test file for the target language {language!r}",
                                         f"{_file_names(language, 'validation')} or {_file_names(language, 'test')}"))
    planned = [Planned(dataset, language, split, "source" if language == source else "target",
                       Origin(path=files[(language, split)]))
               for language in [source, *targets] for split in ("validation", "test") if (language, split) in files]
    return Origin(path=files[(source, "train")]), planned


def _split_files(root: Path) -> dict[tuple[str, str], Path]:
    """(language, split) -> file, from `<language>/<split name>.<ext>` under `root`."""
    if not root.is_dir():
        raise OfaError(f"{root}: no such data directory")
    files: dict[tuple[str, str], Path] = {}
    for path in sorted(root.glob("*/*")):
        split = SPLIT_NAMES.get(path.stem.lower())
        if split is None or path.suffix.lower() not in SUFFIXES:
            continue
        key = (path.parent.name, split)
        if key in files:
            raise OfaError(f"{root}: two {split} files for language {key[0]!r}: "
                           f"{files[key].relative_to(root)} and {path.relative_to(root)}")
        files[key] = path
    return files


def _file_names(language: str, split: str) -> str:
    names = "|".join(name for name, value in SPLIT_NAMES.items() if value == split)
    return f"{language}/{names}.<ext>"


def _missing_file(root: Path, problem: str, expected: str) -> str:
    found = sorted(str(path.relative_to(root)) for path in root.glob("*/*") if path.is_file())
    listed = ", ".join(found[:20]) + (f" and {len(found) - 20} more" if len(found) > 20 else "") or "no files"
    return (f"{root}: {problem}: expected {expected}, <ext> one of {', '.join(s[1:] for s in SUFFIXES)}; "
            f"found: {listed}")


PLANNERS = {"directory": _plan_directory, "files": _plan_files, "hub": _plan_hub}


# --- records -> examples -----------------------------------------------------------------------------


class RecordReader:
    """Reads records (files or Hub splits) as the task's examples: label ids named, columns renamed."""

    def __init__(self, task, spec: dict, base: Path):
        from producers.formats import read_features_json

        self.task, self.columns = task, dict(spec.get("columns", {}))
        declared = read_features_json(base / spec["features"]) if "features" in spec else {}
        self.class_labels = {**declared, **spec.get("class_labels", {})}

    def examples(self, origin: Origin) -> list[dict]:
        """The origin's examples in the task's form, each with a string id."""
        records, recorded_labels = _records(origin)
        names = {**recorded_labels, **self.class_labels}
        examples = []
        for index, record in enumerate(records):
            try:
                example = self.task.from_record(self._renamed(_named(record, names)))
            except OfaError as error:
                raise OfaError(f"{origin}: record {index + 1}: {error}") from None
            example["id"] = str(example["id"]) if example.get("id") is not None else str(index)
            examples.append(example)
        return examples

    def _renamed(self, record: dict) -> dict:
        return {**record, **{field: record[column] for field, column in self.columns.items() if column in record}}


def _records(origin: Origin) -> tuple[list[dict], dict[str, list[str]]]:
    """(records, ClassLabel names by column) of a file or a Hub split."""
    from producers.formats import read_conll, read_jsonl, read_table, table_class_labels

    if origin.hub is not None:
        from producers.hub import hub_records

        return hub_records(origin.hub, origin.configuration, origin.hub_split, origin.revision)
    path = origin.path
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return [{"tokens": tokens, "tags": tags} for tokens, tags in read_conll(path)], {}
    if suffix == ".parquet":
        return read_table(path), table_class_labels(path)
    if suffix in formats.JSONL_SUFFIXES:
        return read_jsonl(path), {}
    raise OfaError(f"{path}: unknown file type (expected one of {', '.join(SUFFIXES)})")


def _named(record: dict, class_labels: dict[str, list[str]]) -> dict:
    """The record with the integer ids of its ClassLabel columns replaced by their names."""
    named = dict(record)
    for column, names in class_labels.items():
        value = record.get(column)
        if isinstance(value, list):
            named[column] = [_label_name(item, names, column) for item in value]
        elif value is not None:
            named[column] = _label_name(value, names, column)
    return named


def _label_name(value, names: list[str], column: str):
    if isinstance(value, bool) or not isinstance(value, int):
        return value  # already a name
    if not 0 <= value < len(names):
        raise OfaError(f"column {column!r}: label id {value} outside 0..{len(names) - 1} ({', '.join(names)})")
    return names[value]
