"""`ofa-eval adopt`: a Hugging Face Trainer run of the tiny model becomes a run folder, goes through
validate, ingest and protocol, and its stored scores agree with predictions made here with
transformers alone (AutoModelForSequenceClassification on each checkpoint, no producers code).

The Trainer fine-tunes a 1-layer, 32-wide XLM-R-shaped model on 48 synthetic NLI examples for
12 steps, saving a checkpoint every 3 steps (4 checkpoints), on a CPU.
"""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from ofa_eval.common.errors import OfaError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
SIZES = {"train": 48, "validation": 16, "test": 16}
LABELS = ["entailment", "neutral", "contradiction"]
TRAINING = {"learning_rate": 3e-3, "per_device_train_batch_size": 8, "seed": 7, "num_train_epochs": 2, "save_steps": 3}
STEPS = [3, 6, 9, 12]  # 48 examples / 8 per batch = 6 steps per epoch, 2 epochs, a checkpoint every 3 steps
GRID = """model = "tiny-xlmr"
model_name_or_path = "./model"
learning_rates = [1e-3]
batch_sizes = [8]
seeds = [1]
max_length = 64

[nli]
data = { directory = "data/nli", dataset = "synth-nli", source = "en" }
"""


def encode(tokenizer, records):
    return tokenizer([r["premise"] for r in records], [r["hypothesis"] for r in records], truncation=True,
                     max_length=64)


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    """A synthetic corpus, the tiny model, a grid file naming the data, and a Trainer output folder
    (trainer/) with training_args.json written beside the checkpoints."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from producers import modeling, synthetic
    from producers.formats import read_jsonl

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("adopt")
    synthetic.write_corpus(root / "data", sizes=SIZES)
    modeling.build_tiny_model(root / "model", synthetic.corpus_texts(root / "data"), vocab_size=300, **TINY)
    (root / "grid.toml").write_text(GRID)
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    model = AutoModelForSequenceClassification.from_pretrained(
        root / "model", num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    records = read_jsonl(root / "data" / "nli" / "en" / "train.jsonl")
    encoded = encode(tokenizer, records)
    features = [{"input_ids": ids, "attention_mask": mask, "labels": r["label"]}
                for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], records)]
    args = TrainingArguments(output_dir=str(root / "trainer"), save_strategy="steps", use_cpu=True, report_to="none",
                             disable_tqdm=True, logging_strategy="no", **TRAINING)
    Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer).train()
    (root / "trainer" / "training_args.json").write_text(args.to_json_string())
    return root


def reference_predictions(checkpoint: Path, records) -> tuple[list[int], int]:
    """(arg-max class per example, examples whose top two logits are within 1e-4), one example at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    predictions, near_ties = [], 0
    with torch.no_grad():
        for record in records:
            inputs = tokenizer(record["premise"], record["hypothesis"], truncation=True, max_length=64,
                               return_tensors="pt")
            logits = model(**inputs).logits[0]
            top = torch.topk(logits, 2).values
            near_ties += int(top[0] - top[1] < 1e-4)
            predictions.append(int(logits.argmax()))
    return predictions, near_ties


def reference_accuracy(checkpoint: Path, path: Path) -> tuple[float, float]:
    """(accuracy in percent, the most a near tie could move it) of a checkpoint on a data file."""
    from producers.formats import read_jsonl

    records = read_jsonl(path)
    predictions, near_ties = reference_predictions(checkpoint, records)
    correct = sum(p == r["label"] for p, r in zip(predictions, records))
    return 100 * correct / len(records), 100 * near_ties / len(records)


def test_a_trainer_run_is_adopted_ingested_and_drawn(trainer_run, cli, tmp_path):
    import duckdb
    import torch
    from safetensors.torch import load_file

    trainer, run = trainer_run / "trainer", tmp_path / "runs" / "nli-tiny-xlmr-trainer"
    result = cli("adopt", trainer, "--task", "nli", "--data", trainer_run / "grid.toml", "--out", run)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["task"] == "nli" and manifest["model"] == "tiny-xlmr"
    assert (manifest["learning_rate"], manifest["batch_size"], manifest["seed"], manifest["epochs"]) == (
        TRAINING["learning_rate"], TRAINING["per_device_train_batch_size"], TRAINING["seed"], 2)
    assert manifest["adopted"]["hyperparameters_from"] == {
        "learning_rate": "training_args.json", "batch_size": "trainer_state.json and training_args.json",
        "seed": "training_args.json"}
    assert [s["step"] for s in manifest["snapshots"]] == STEPS
    assert [s["epoch"] for s in manifest["snapshots"]] == [0.5, 1.0, 1.5, 2.0]
    checkpoints = [trainer / f"checkpoint-{step}" for step in STEPS]
    for snapshot, checkpoint in zip(manifest["snapshots"], checkpoints):
        weights = run / snapshot["weights"]
        assert not weights.is_symlink() and weights.resolve().is_relative_to(run.resolve())
        assert weights.read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    mean = {name: torch.stack([load_file(c / "model.safetensors")[name] for c in checkpoints]).mean(0)
            for name in load_file(checkpoints[0] / "model.safetensors")}
    ca = load_file(run / manifest["ca"]["weights"])
    assert sorted(ca) == sorted(mean)
    assert all(torch.allclose(ca[name], mean[name], atol=1e-6) for name in mean)
    assert not any(p.is_symlink() for p in run.rglob("*"))

    assert cli("validate", run.parent).exit_code == 0
    result = cli("ingest", run.parent)
    assert result.exit_code == 0, result.output

    # one checkpoint on one target test set: stored score against the reference
    data = trainer_run / "data" / "nli"
    with duckdb.connect(str(cli.db), read_only=True) as con:
        stored = con.execute("SELECT value FROM scores WHERE scored = 'snapshot' AND snapshot_index = 2 AND "
                             "language = 'far' AND split = 'test' AND metric = 'accuracy'").fetchall()
    expected, slack = reference_accuracy(checkpoints[1], data / "far" / "test.jsonl")
    assert len(stored) == 1 and stored[0][0] == pytest.approx(expected, abs=slack + 1e-9)

    # Max SRC-DEV at r = 1: the checkpoint best on English validation (the earliest on a tie), its
    # accuracy averaged over the target test sets
    source = [reference_accuracy(c, data / "en" / "validation.jsonl") for c in checkpoints]
    best = checkpoints[[accuracy for accuracy, _ in source].index(max(accuracy for accuracy, _ in source))]
    assert all(slack == 0 for _, slack in source)  # no near tie could change the choice
    targets = [reference_accuracy(best, data / language / "test.jsonl") for language in ("near", "mid", "far")]
    expected = sum(accuracy for accuracy, _ in targets) / 3
    result = cli("protocol", "--task", "nli", "--strategy", "max-src-dev", "--variant", "src-dev", "--draws", 3,
                 "--seed", 0, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = [row for row in csv.DictReader(io.StringIO(result.stdout)) if row["runs"] == "1"]
    assert [(row["model"], row["variant"], row["draws"]) for row in rows] == [("tiny-xlmr", "src-dev", "3")]
    assert float(rows[0]["mean"]) == pytest.approx(expected, abs=sum(slack for _, slack in targets) / 3 + 1e-6)


def test_a_trainer_folder_without_hyperparameters_is_refused_in_one_line_then_takes_options(trainer_run, cli, tmp_path):
    bare = tmp_path / "trainer"
    shutil.copytree(trainer_run / "trainer", bare, ignore=shutil.ignore_patterns("training_args.json"))
    out = tmp_path / "runs" / "nli-bare"
    result = cli("adopt", bare, "--task", "nli", "--data", trainer_run / "grid.toml", "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bare}: "), result.stderr
    # trainer_state.json gives the batch size; the learning rate and seed are only in training_args.bin
    assert "learning rate, seed" in lines[0] and "pass --learning-rate, --seed" in lines[0]
    assert not out.exists()
    result = cli("adopt", bare, "--task", "nli", "--data", trainer_run / "grid.toml", "--out", out, "--quiet",
                 "--learning-rate", 3e-3, "--seed", 7)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["learning_rate"], manifest["batch_size"], manifest["seed"]) == (3e-3, 8, 7)
    assert manifest["adopted"]["hyperparameters_from"] == {
        "learning_rate": "--learning-rate", "batch_size": "trainer_state.json", "seed": "--seed"}


def test_inline_data_table_reads_what_the_grid_file_names(trainer_run, monkeypatch):
    from producers.adopt import evaluation_data

    monkeypatch.chdir(trainer_run)
    from_grid, settings = evaluation_data("nli", str(trainer_run / "grid.toml"))
    inline, _ = evaluation_data("nli", '{ directory = "data/nli", dataset = "synth-nli" }')
    assert settings["max_length"] == 64 and settings["model"] == "tiny-xlmr"
    assert [(e.key, e.role, [x["id"] for x in e.examples]) for e in from_grid.eval_sets] == [
        (e.key, e.role, [x["id"] for x in e.examples]) for e in inline.eval_sets]
    assert sorted(e.key for e in inline.eval_sets) == sorted(
        [("synth-nli", "en", "validation")] + [("synth-nli", language, split) for language in ("far", "mid", "near")
                                               for split in ("validation", "test")])
    with pytest.raises(OfaError, match="neither a grid file nor a TOML table"):
        evaluation_data("nli", "grid-that-is-not-there.toml")
