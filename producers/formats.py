"""Readers for users' local evaluation data: CoNLL NER files, JSON Lines and Parquet tables,
and the label names of `datasets` ClassLabel columns.

Every problem with a file (missing, undecodable, malformed) becomes an ``OfaError`` whose
one-line message names the file and, where there is one, the line number.

Data from the Hugging Face Hub often stores labels as ClassLabel ids (`ner_tags: [3, 0, 0]`);
their names are in the dataset's features, in the JSON form `datasets` writes
(`Features.to_dict()`, `dataset_info.json`, and the `huggingface` metadata of the Parquet
files it writes). `class_label_names` reads them from that form.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ofa_eval.common.errors import OfaError

JSONL_SUFFIXES = (".jsonl", ".json")
CONLL_SUFFIXES = (".conll", ".iob", ".bio", ".iob2")  # `.txt` is CoNLL in data folders; build-model: looks_like_conll
_DOCUMENT_START = "-DOCSTART-"
_NER_TAG = re.compile(r"O|[BIES]-\S+")


def read_conll(path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file as (tokens, tags) pairs.

    One token per line, whitespace-separated columns, the token first and the NER tag last
    (columns in between are ignored); blank lines separate sentences and ``-DOCSTART-`` lines
    are skipped. Tags must be ``O`` or ``B-``/``I-``/``E-``/``S-`` plus a type.
    """
    sentences = []
    tokens, tags = [], []
    for line_number, line in numbered_lines(path):
        columns = line.split()
        if not columns or columns[0] == _DOCUMENT_START:
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        tokens.append(columns[0])
        tags.append(_conll_tag(columns, path, line_number))
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def looks_like_conll(path) -> bool:
    """Whether a text file has the CoNLL shape: every non-blank line (``-DOCSTART-`` lines aside)
    has at least two whitespace-separated columns, the last an NER tag, and there is one such line."""
    found = False
    for _, line in numbered_lines(path):
        columns = line.split()
        if not columns or columns[0] == _DOCUMENT_START:
            continue
        if len(columns) < 2 or not _NER_TAG.fullmatch(columns[-1]):
            return False
        found = True
    return found


def _conll_tag(columns: list[str], path, line_number: int) -> str:
    if len(columns) < 2:
        raise OfaError(f"{path}:{line_number}: expected a token and a tag separated by whitespace, "
                       f"got {' '.join(columns)!r}")
    tag = columns[-1]
    if not _NER_TAG.fullmatch(tag):
        raise OfaError(f"{path}:{line_number}: {tag!r} is not an NER tag (O, or B-/I-/E-/S- plus a type)")
    return tag


def read_jsonl(path) -> list[dict]:
    """One JSON object per non-blank line."""
    records = []
    for line_number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise OfaError(f"{path}:{line_number}: invalid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(record, dict):
            raise OfaError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_table(path) -> list[dict]:
    """The rows of a Parquet file as dicts (column name -> value)."""
    import pyarrow.parquet as parquet

    _require_file(path)
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others for bad files
        raise OfaError(f"{path}: not a readable Parquet file ({one_line(error)})") from None
    return table.to_pylist()


def class_label_names(features: dict) -> dict[str, list[str]]:
    """Column -> label names for the ClassLabel columns (or lists of ClassLabels) among
    `datasets` features in their JSON form."""
    names = {}
    for column, feature in features.items():
        while isinstance(feature, dict) and "names" not in feature and isinstance(feature.get("feature"), dict):
            feature = feature["feature"]  # List / Sequence of ...
        if isinstance(feature, dict) and isinstance(feature.get("names"), list):
            names[column] = [str(name) for name in feature["names"]]
    return names


def table_class_labels(path) -> dict[str, list[str]]:
    """The ClassLabel names recorded in a Parquet file written by `datasets` (none otherwise)."""
    import pyarrow.parquet as parquet

    try:
        metadata = parquet.read_schema(path).metadata or {}
        features = json.loads(metadata.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others for bad files
        raise OfaError(f"{path}: not a readable Parquet file ({one_line(error)})") from None
    return class_label_names(features) if isinstance(features, dict) else {}


def read_features_json(path) -> dict[str, list[str]]:
    """The ClassLabel names of a features JSON file: a `dataset_info.json` or bare features."""
    _require_file(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OfaError(f"{path}: not a JSON file ({one_line(error)})") from None
    features = document.get("features", document) if isinstance(document, dict) else None
    names = class_label_names(features) if isinstance(features, dict) else {}
    if not names:
        raise OfaError(f"{path}: no ClassLabel feature in it (expected `datasets` features, e.g. "
                       '{"ner_tags": {"feature": {"names": [...], "_type": "ClassLabel"}, "_type": "List"}})')
    return names


def numbered_lines(path):
    """(1-based line number, line without its end-of-line) for a UTF-8 text file."""
    _require_file(path)
    # Decoding line by line (not via a text-mode file) pins a decoding error to its line.
    with open(path, "rb") as file:
        for line_number, raw_line in enumerate(file, start=1):
            if line_number == 1:
                raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise OfaError(f"{path}:{line_number}: not UTF-8 text ({error.reason})") from None
            yield line_number, line.rstrip("\r\n")


def _require_file(path) -> None:
    if not Path(path).is_file():
        raise OfaError(f"{path}: no such file")


def one_line(error: Exception) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__
