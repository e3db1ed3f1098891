"""Readers for users' local evaluation data: CoNLL NER files, JSON Lines and Parquet tables.

Every problem with a file (missing, undecodable, malformed) becomes an ``OfaError`` whose
one-line message names the file and, where there is one, the line number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ofa_eval.errors import OfaError

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
    for line_number, line in _numbered_lines(path):
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
    for line_number, line in _numbered_lines(path):
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
        raise OfaError(f"{path}: not a readable Parquet file ({_one_line(error)})") from None
    return table.to_pylist()


def _numbered_lines(path):
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


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
