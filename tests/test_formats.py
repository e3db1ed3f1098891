"""Readers for local data files: CoNLL (on the real MasakhaNER 2.0 sample), JSON Lines, Parquet."""

import json
from pathlib import Path

import polars as pl
import pytest

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.metrics import drop_entity_types
from producers.formats import read_conll, read_jsonl, read_table

MASAKHANER = Path(__file__).resolve().parents[2] / "shared" / "masakhaner2-sample"
MASAKHANER_FILES = [("pcm", "train")] + [(language, split) for language in ("hau", "pcm", "swa", "yor")
                                         for split in ("dev", "test")]
MASAKHANER_TAGS = {"O"} | {f"{p}-{t}" for t in ("PER", "ORG", "LOC", "DATE") for p in "BI"}


def masakhaner_file(language, split):
    if not MASAKHANER.is_dir():
        pytest.skip(f"the MasakhaNER 2.0 sample is not at {MASAKHANER} (it lives in ../shared beside the repo)")
    return MASAKHANER / language / f"{split}.txt"


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# --- CoNLL: real data ---------------------------------------------------------------------------


@pytest.mark.parametrize("language, split", MASAKHANER_FILES)
def test_read_conll_on_masakhaner(language, split):
    path = masakhaner_file(language, split)
    sentences = read_conll(path)
    raw_lines = path.read_text(encoding="utf-8").splitlines()
    token_lines = [line for line in raw_lines if line.strip()]
    # Sentences are the runs of non-blank lines; count them from the raw text.
    expected_sentences = sum(1 for i, line in enumerate(raw_lines)
                             if line.strip() and (i == 0 or not raw_lines[i - 1].strip()))
    assert len(sentences) == expected_sentences
    assert (500 if split != "train" else 4000) < len(sentences) < 6000
    assert sum(len(tokens) for tokens, _ in sentences) == len(token_lines)
    assert all(tokens and len(tokens) == len(tags) for tokens, tags in sentences)
    tags_seen = {tag for _, tags in sentences for tag in tags}
    assert tags_seen <= MASAKHANER_TAGS
    assert {"B-PER", "B-ORG", "B-LOC", "B-DATE"} <= tags_seen
    assert sentences[0][0][0] == token_lines[0].split()[0] and sentences[-1][1][-1] == token_lines[-1].split()[-1]


def test_read_conll_keeps_diacritics():
    sentences = read_conll(masakhaner_file("yor", "dev"))
    tokens = [token for sentence_tokens, _ in sentences for token in sentence_tokens]
    assert any(not token.isascii() for token in tokens)
    assert all(" " not in token and token for token in tokens)


def test_drop_entity_types_removes_masakhaner_dates():
    sentences = read_conll(masakhaner_file("swa", "dev"))
    tags = [sentence_tags for _, sentence_tags in sentences]
    dropped = drop_entity_types(tags, {"DATE"})
    before = [tag for sentence_tags in tags for tag in sentence_tags]
    after = [tag for sentence_tags in dropped for tag in sentence_tags]
    n_date = sum(tag.endswith("-DATE") for tag in before)
    assert n_date > 100
    assert not any(tag.endswith("DATE") for tag in after)
    assert after.count("O") == before.count("O") + n_date
    assert all(old == new for old, new in zip(before, after) if not old.endswith("-DATE"))
    assert [len(t) for t in dropped] == [len(t) for t in tags]


# --- CoNLL: format details and errors -----------------------------------------------------------


def test_read_conll_format_details(tmp_path):
    text = ("\ufeff-DOCSTART- -X- -X- O\n\n"
            "Kano NNP B-NP B-LOC\r\n"
            "dey\tVB\tO\r\n"
            "\n\n   \n"
            "-DOCSTART- O\n"
            "Ọlọ́run O\n"
            "I-PER\tI-PER")  # no blank line at the end of the file
    sentences = read_conll(write(tmp_path / "x.conll", text))
    assert sentences == [(["Kano", "dey"], ["B-LOC", "O"]), (["Ọlọ́run", "I-PER"], ["O", "I-PER"])]
    assert read_conll(write(tmp_path / "empty.txt", "\n\n")) == []


@pytest.mark.parametrize("bad_line, fragment", [
    ("Kano", "expected a token and a tag"),
    ("Kano LOC", "'LOC' is not an NER tag"),
    ("Kano b-loc", "'b-loc' is not an NER tag"),
])
def test_read_conll_malformed_line_names_file_and_line(tmp_path, bad_line, fragment):
    path = write(tmp_path / "bad.txt", f"A O\nB O\n\n{bad_line}\nC O\n")
    with pytest.raises(OfaError) as error:
        read_conll(path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: ") and fragment in message and "\n" not in message


def test_read_conll_missing_or_undecodable_file(tmp_path):
    with pytest.raises(OfaError, match="nope.txt: no such file"):
        read_conll(tmp_path / "nope.txt")
    path = write(tmp_path / "latin1.txt", "A O\nZürich B-LOC\n", encoding="latin-1")
    with pytest.raises(OfaError, match=r"latin1\.txt:2: not UTF-8 text"):
        read_conll(path)


# --- JSON Lines ---------------------------------------------------------------------------------


def test_read_jsonl(tmp_path):
    records = [{"id": "1", "question": "Wapi?", "answers": ["Dar es Salaam"]}, {"premise": "É", "label": 2}]
    text = "\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n\n"
    assert read_jsonl(write(tmp_path / "data.jsonl", text)) == records
    assert read_jsonl(write(tmp_path / "empty.jsonl", "")) == []


@pytest.mark.parametrize("bad_line, fragment", [
    ('{"a": 1,}', "invalid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
])
def test_read_jsonl_errors_name_file_and_line(tmp_path, bad_line, fragment):
    path = write(tmp_path / "bad.jsonl", f'{{"a": 1}}\n\n{bad_line}\n')
    with pytest.raises(OfaError) as error:
        read_jsonl(path)
    assert str(error.value).startswith(f"{path}:3: ") and fragment in str(error.value)
    with pytest.raises(OfaError, match="missing.jsonl: no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


# --- Parquet ------------------------------------------------------------------------------------


def test_read_table_parquet(tmp_path):
    frame = pl.DataFrame({"id": [1, 2], "context": ["Ìlú Èkó", None], "answers": [["Èkó"], []]})
    path = tmp_path / "qa.parquet"
    frame.write_parquet(path)
    assert read_table(path) == [
        {"id": 1, "context": "Ìlú Èkó", "answers": ["Èkó"]},
        {"id": 2, "context": None, "answers": []},
    ]


def test_read_table_errors_name_the_file(tmp_path):
    path = write(tmp_path / "not.parquet", "id,text\n1,hello\n")
    with pytest.raises(OfaError) as error:
        read_table(path)
    assert str(error.value).startswith(f"{path}: not a readable Parquet file") and "\n" not in str(error.value)
    with pytest.raises(OfaError, match="gone.parquet: no such file"):
        read_table(tmp_path / "gone.parquet")
