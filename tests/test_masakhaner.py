"""Your own runs on real data: MasakhaNER 2.0 as shipped, trained with the documented commands.

Nigerian Pidgin (pcm: train.txt, dev.txt) is the source language; Hausa, Swahili and Yorùbá
(dev.txt, test.txt) are the targets, read from ../shared/masakhaner2-sample (skipped where it is
absent). The grid uses only keys docs/producers.md documents, with the paper's DATE -> O mapping.
The reference for every stored entity F1 is seqeval, computed on the run's prediction files
against the shipped CoNLL tags mapped DATE -> O here, independently of the producers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MASAKHANER2 = REPO.parent / "shared" / "masakhaner2-sample"
TARGETS = ("hau", "swa", "yor")
EVAL_LIMIT = 80

pytestmark = pytest.mark.skipif(not MASAKHANER2.is_dir(),
                                reason=f"no MasakhaNER 2.0 sample at {MASAKHANER2} (../shared beside the repository)")

GRID = """\
model = "tiny"
model_name_or_path = "./model"
learning_rates = [1e-4]
batch_sizes = [16, 32]
seeds = [1]
epochs = 1
snapshots = 2
max_length = 64
weight_storage = "all"

[ner]
data = {{ directory = "{data}", source = "pcm", label_map = {{ DATE = "O" }}, train_limit = 320, eval_limit = {limit} }}
"""


def ofa_eval(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", "from ofa_eval.cli import main; main(prog_name='ofa-eval')",
                             *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def shipped_sentences(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence of a CoNLL file: `token TAG` lines, blank lines between sentences."""
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            token, tag = line.split()
            tokens.append(token)
            tags.append(tag)
        elif tokens:
            sentences.append((tokens, tags))
            tokens, tags = [], []
    return sentences


def without_dates(tags: list[str]) -> list[str]:
    return ["O" if tag.endswith("-DATE") else tag for tag in tags]


def read_column(path: Path, column: str) -> dict:
    import polars as pl

    table = pl.read_parquet(path)
    return dict(zip(table["example_id"].to_list(), table[column].to_list()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The grid trained and ingested: (folder, store)."""
    folder = tmp_path_factory.mktemp("masakhaner")
    texts = [" ".join(tokens) for language in ("pcm", *TARGETS)
             for name in ("train.txt", "dev.txt") if (MASAKHANER2 / language / name).is_file()
             for tokens, _ in shipped_sentences(MASAKHANER2 / language / name)[:400]]
    (folder / "sentences.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    ofa_eval("build-model", "sentences.txt", "--out", "model", "--vocab-size", 600, "--pretrain-steps", 0, "--quiet",
             cwd=folder)
    (folder / "grid.toml").write_text(GRID.format(data=MASAKHANER2, limit=EVAL_LIMIT))
    ofa_eval("train", "grid.toml", "--out", "runs", "--quiet", cwd=folder)
    ofa_eval("--db", "store.duckdb", "ingest", "runs", "--quiet", cwd=folder)
    return folder, folder / "store.duckdb"


def test_the_runs_see_the_shipped_splits_with_dates_mapped_to_o(trained):
    folder, _ = trained
    for run in sorted((folder / "runs").glob("ner-*")):
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["state"] == "complete"
        assert {(e["language"], e["split"], e["role"]) for e in manifest["eval_sets"]} == {
            ("pcm", "validation", "source"), ("pcm", "test", "source"),
            *((language, split, "target") for language in TARGETS for split in ("validation", "test"))}
        assert manifest["label_names"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
        for language in TARGETS:
            shipped = shipped_sentences(MASAKHANER2 / language / "test.txt")[:EVAL_LIMIT]
            gold = read_column(run / f"gold/masakhaner2-sample__{language}__test.parquet", "tags")
            assert [gold[str(i)] for i in range(len(shipped))] == [without_dates(tags) for _, tags in shipped]
            assert any(tag.endswith("-DATE") for _, tags in shipped for tag in tags)  # the mapping did something


def test_stored_entity_f1_is_seqeval_on_the_prediction_files(trained):
    from seqeval.metrics import f1_score

    folder, store = trained
    rows = json.loads(ofa_eval(
        "--db", store, "sql", "--format", "json",
        "SELECT r.external_id AS run, s.snapshot_index AS snapshot, s.language, s.value FROM scores s "
        "JOIN runs r USING (run_id) WHERE s.scored = 'snapshot' AND s.metric = 'f1' AND s.role = 'target' "
        "AND s.split = 'test' ORDER BY ALL", cwd=folder).stdout)
    assert len(rows) == 2 * 2 * len(TARGETS)  # runs x snapshots x target test sets
    for row in rows:
        run = folder / "runs" / row["run"]
        name = f"masakhaner2-sample__{row['language']}__test.parquet"
        gold = read_column(run / "gold" / name, "tags")
        predicted = read_column(run / "predictions" / f"snapshot-{row['snapshot']:02d}" / name, "tags")
        ids = sorted(gold)
        expected = 100 * f1_score([gold[i] for i in ids], [predicted[i] for i in ids], zero_division=0)
        assert row["value"] == pytest.approx(expected, abs=1e-9), row
    # A barely trained model tags almost at random (hence the small learning rate): some entities
    # are right, so the comparison is not one of zeros.
    assert any(row["value"] > 0 for row in rows)
