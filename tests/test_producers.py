"""Producers without training: task preprocessing, schedules, batching, atomic files, grids, data."""

import json
import os
from pathlib import Path

import pytest

from ofa_eval.common.errors import OfaError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
MASAKHANER2 = REPO.parent / "shared" / "masakhaner2-sample"


@pytest.fixture(scope="module")
def tokenizer():
    from producers import modeling, synthetic

    texts = [" ".join(r.get("tokens", [])) or r.get("context", r.get("premise", ""))
             for task in ("qa", "ner", "nli") for language in ("en", "far")
             for r in synthetic.generate(task, language, "train", 200)]
    return modeling.train_tokenizer(texts, vocab_size=300)


def config(**changes):
    from producers.config import RunConfig

    values = dict(task="qa", model="tiny", model_name_or_path="./model", learning_rate=1e-3, batch_size=8, seed=1)
    return RunConfig(**{**values, **changes})


# --- snapshot schedule and batches ----------------------------------------------------------------


def test_snapshot_steps_every_tenth_and_last_is_last_step():
    from producers.train import snapshot_steps

    assert snapshot_steps(100) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert snapshot_steps(25) == [2, 5, 7, 10, 12, 15, 17, 20, 22, 25]
    assert snapshot_steps(10) == list(range(1, 11))
    assert snapshot_steps(12_345, 10)[-1] == 12_345
    for total in range(10, 400):
        steps = snapshot_steps(total)
        assert len(steps) == 10 and steps[-1] == total and all(a < b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError):
        snapshot_steps(9)


@pytest.mark.parametrize("group", [False, True])
def test_training_batches_cover_every_example_and_resume_mid_epoch(group):
    from producers.batching import training_batches

    lengths = [5 + (i * 7) % 13 for i in range(37)]
    full = list(training_batches(lengths, 4, seed=3, total_steps=30, group_by_length=group))
    assert [step for step, _ in full] == list(range(1, 31))
    first_epoch = [i for _, batch in full[:10] for i in batch]
    assert sorted(first_epoch) == list(range(37))
    assert list(training_batches(lengths, 4, 3, 30, start_step=13, group_by_length=group)) == full[13:]
    other_seed = list(training_batches(lengths, 4, seed=4, total_steps=30, group_by_length=group))
    assert other_seed != full


def test_collate_pads_inputs_and_token_labels():
    from producers.batching import collate

    features = [{"input_ids": [0, 5, 2], "labels": [-100, 3, -100]}, {"input_ids": [0, 2], "labels": [-100, -100]}]
    batch = collate(features, [0, 1], pad_token_id=1)
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 3, -100], [-100, -100, -100]]


# --- QA -------------------------------------------------------------------------------------------


def qa_examples(n=40):
    from producers import synthetic

    return [synthetic.generate("qa", language, "train", n)[i] for language in ("en", "far") for i in range(n)]


def test_qa_windows_map_back_to_the_exact_answer_text(tokenizer):
    from producers.tasks import get_task

    task, cfg = get_task("qa"), config(max_length=32, stride=8)
    examples = [task.from_record(r) for r in qa_examples()]
    windows = task.windows(examples, tokenizer, cfg)
    features = task.train_features(examples, tokenizer, cfg, None)
    assert len(windows) > len(examples)  # long contexts become several windows
    found, missing = 0, 0
    for window, feature in zip(windows, features):
        assert len(feature["input_ids"]) <= 32
        example = examples[window["example_index"]]
        start, end = feature["start_positions"], feature["end_positions"]
        if (start, end) == (0, 0):
            missing += 1
            continue
        found += 1
        text = example["context"][window["offsets"][start][0]:window["offsets"][end][1]]
        assert text == example["answers"]["text"][0]
    assert found >= len(examples) and missing > 0


def test_qa_decode_recovers_answers_from_logits(tokenizer):
    import numpy as np

    from producers.tasks import get_task

    task, cfg = get_task("qa"), config(max_length=32, stride=8)
    examples = [task.from_record(r) for r in qa_examples(20)]
    features = task.eval_features(examples, tokenizer, cfg, None)
    labelled = task.train_features(examples, tokenizer, cfg, None)
    outputs = []
    for feature, label in zip(features, labelled):
        starts, ends = np.zeros(len(feature["input_ids"])), np.zeros(len(feature["input_ids"]))
        if label["start_positions"]:
            starts[label["start_positions"]], ends[label["end_positions"]] = 10.0, 10.0
        outputs.append((starts, ends))
    predictions = task.decode(examples, features, outputs, cfg, None)
    assert predictions == [e["answers"]["text"][0] for e in examples]
    assert task.gold(examples, None) == [[e["answers"]["text"][0]] for e in examples]


def test_qa_best_span_respects_length_limit_and_order():
    import numpy as np

    from producers.tasks.qa import best_span

    offsets = [None, (0, 3), (4, 7), (8, 11), (12, 15), None]
    start = np.array([9.0, 1.0, 0.0, 0.0, 5.0, 9.0])
    end = np.array([9.0, 0.0, 0.0, 4.0, -2.0, 9.0])
    assert best_span(start, end, offsets, 20, 30) == (5.0, 0, 11)  # special tokens and 4..3 are not spans
    assert best_span(start, end, offsets, 20, 2) == (4.0, 4, 11)  # at most 2 tokens
    assert best_span(start, end, [None] * 6, 20, 30) is None


def test_qa_record_checks_answer_offsets():
    from producers.tasks import get_task

    task = get_task("qa")
    record = {"question": "q", "context": "abc def", "answers": [{"text": "def", "answer_start": 4}]}
    assert task.from_record(record)["answers"] == {"text": ["def"], "answer_start": [4]}
    with pytest.raises(OfaError, match="not at character"):
        task.from_record({**record, "answers": {"text": ["def"], "answer_start": [3]}})


# --- NER ------------------------------------------------------------------------------------------


def test_ner_first_subword_labels_and_word_level_predictions(tokenizer):
    import numpy as np

    from producers.tasks import get_task
    from producers.tasks.base import IGNORE_INDEX

    task, cfg = get_task("ner"), config(task="ner", max_length=40)
    examples = [{"id": "0", "tokens": ["kofi", "zyqxwvuhtta", "visited", "santa", "cruz", "in", "june", "."],
                 "tags": ["B-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O"]},
                {"id": "1", "tokens": ["anna"] * 60, "tags": ["B-PER"] * 60}]
    labels = task.label_names(examples)
    assert labels == ["O", "B-LOC", "I-LOC", "B-PER"]
    train = task.train_features(examples, tokenizer, cfg, labels)
    features = task.eval_features(examples, tokenizer, cfg, labels)
    word_ids = features[0]["word_ids"]
    assert word_ids.count(1) > 1  # an unknown word is several subwords: only the first is labelled
    first = [labels[label] for label in train[0]["labels"] if label != IGNORE_INDEX]
    assert first == examples[0]["tags"]
    outputs = [np.array(f_labels) for f_labels in
               ([max(label, 0) for label in f["labels"]] for f in train)]
    predictions = task.decode(examples, features, outputs, cfg, labels)
    assert predictions[0] == examples[0]["tags"]
    assert len(predictions[1]) == 60 and predictions[1][-1] == "O"  # truncated words are O
    assert predictions[1][0] == "B-PER"


def test_ner_gold_maps_unknown_entity_types_to_o():
    from producers.tasks import get_task

    task = get_task("ner")
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    examples = [{"id": "0", "tokens": list("abcd"), "tags": ["B-DATE", "I-DATE", "B-PER", "O"]}]
    assert task.gold(examples, labels) == [["O", "O", "B-PER", "O"]]


@pytest.mark.skipif(not MASAKHANER2.is_dir(), reason=f"no MasakhaNER 2.0 sample at {MASAKHANER2}")
def test_masakhaner_conll_through_the_local_loader(tmp_path):
    from producers.data import load_task_data

    spec = {"train": str(MASAKHANER2 / "pcm" / "train.txt"), "train_limit": 50, "eval_limit": 30,
            "eval": [{"dataset": "masakhaner2", "language": "pcm", "split": "validation", "role": "source",
                      "path": str(MASAKHANER2 / "pcm" / "dev.txt")},
                     {"dataset": "masakhaner2", "language": "yor", "split": "test",
                      "path": str(MASAKHANER2 / "yor" / "test.txt")}]}
    data = load_task_data("ner", spec)
    assert data.eval_sets[1].examples[0]["id"] == "0" and len(data.eval_sets[1].examples) == 30
    from producers.tasks import get_task

    wikiann_labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    gold = get_task("ner").gold(data.eval_sets[1].examples, wikiann_labels)
    assert not any("DATE" in tag for tags in gold for tag in tags)
    assert any("DATE" in tag for e in data.eval_sets[1].examples for tag in e["tags"])


# --- NLI ------------------------------------------------------------------------------------------


def test_nli_records_take_label_names_or_indices(tokenizer):
    from producers.tasks import get_task

    task = get_task("nli")
    assert task.from_record({"premise": "a", "hypothesis": "b", "label": "neutral"})["label"] == 1
    assert task.from_record({"premise": "a", "hypothesis": "b", "label": 2})["label"] == 2
    with pytest.raises(OfaError):
        task.from_record({"premise": "a", "hypothesis": "b", "label": "maybe"})
    examples = [task.from_record({"id": "x", "premise": "the cat " * 100, "hypothesis": "a dog", "label": 0})]
    features = task.train_features(examples, tokenizer, config(task="nli", max_length=16), task.label_names([]))
    assert len(features[0]["input_ids"]) == 16 and features[0]["labels"] == 0


# --- files ----------------------------------------------------------------------------------------


def test_atomic_path_replaces_only_on_success(tmp_path):
    from producers.artifacts import atomic_path, write_json

    target = tmp_path / "sub" / "file.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half a fi")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_tables_use_the_ingest_column_names(tmp_path):
    import polars as pl

    from producers.artifacts import gold_table, prediction_table, write_table

    write_table(tmp_path / "g.parquet", gold_table("qa", ["1", "2"], [["a", "b"], ["c"]]))
    write_table(tmp_path / "p.parquet", prediction_table("ner", ["1"], [["O", "B-PER"]]))
    assert pl.read_parquet(tmp_path / "g.parquet").to_dicts() == [{"example_id": "1", "answers": ["a", "b"]},
                                                                  {"example_id": "2", "answers": ["c"]}]
    assert pl.read_parquet(tmp_path / "p.parquet")["tags"].to_list() == [["O", "B-PER"]]


# --- grid files and local data ----------------------------------------------------------------------


def test_paper_grid_is_the_papers_grid():
    from producers.grid import load_grid

    experiments = load_grid(REPO / "producers" / "grids" / "paper.toml")
    assert [e.task for e in experiments] == ["nli", "qa", "ner"]
    for experiment in experiments:
        runs = experiment.runs()
        assert len(runs) == 63 and len({r.name for r in runs}) == 63
        assert sorted({r.learning_rate for r in runs}) == [1e-6, 5e-6, 1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5]
        assert {r.batch_size for r in runs} == {16, 32, 64} and {r.seed for r in runs} == {1, 2, 3}
        assert runs[0].model_name_or_path == "FacebookAI/xlm-roberta-large"
    nli, qa, ner = experiments
    assert (qa.runs()[0].epochs, qa.runs()[0].max_length, qa.runs()[0].stride) == (40, 384, 128)
    assert (nli.runs()[0].epochs, nli.runs()[0].max_length) == (10, 128)
    assert (nli.head_mode, qa.head_mode, ner.head_mode) == ("frozen-copied", "frozen-copied", "shared-init")
    head = nli.head_config()
    assert (head.learning_rate, head.batch_size) == (2e-5, 32)


def test_quickstart_grid_allows_draws_of_four_configurations():
    from producers.grid import load_grid

    for experiment in load_grid(REPO / "producers" / "grids" / "quickstart.toml"):
        runs = experiment.runs()
        assert len({(r.learning_rate, r.batch_size) for r in runs}) >= 4
        assert len({r.seed for r in runs}) >= 2
        assert Path(runs[0].model_name_or_path).is_absolute()


def test_grid_file_errors_name_the_problem(tmp_path):
    from producers.grid import load_grid

    grid = tmp_path / "grid.toml"
    grid.write_text('model = "m"\nmodel_name_or_path = "x"\nlearning_rates = [1e-5]\nbatch_sizes = [8]\n'
                    'seeds = [1]\ndata = { hub = "xnli" }\n[nli]\nlearnin_rate = 3\n')
    with pytest.raises(OfaError, match="learnin_rate"):
        load_grid(grid)
    grid.write_text('model = "m"\n')
    with pytest.raises(OfaError, match="no task table"):
        load_grid(grid)


def test_local_data_from_a_directory_and_from_explicit_files(tmp_path):
    from producers import synthetic
    from producers.artifacts import write_table
    from producers.data import load_task_data

    synthetic.write_corpus(tmp_path / "data", sizes={"train": 20, "validation": 5, "test": 6})
    data = load_task_data("ner", {"directory": "data/ner", "dataset": "synth-ner"}, tmp_path)
    assert len(data.train) == 20 and data.source_validation.language == "en"
    assert {(e.language, e.split) for e in data.eval_sets if e.role == "target"} == {
        (language, split) for language in ("near", "mid", "far") for split in ("validation", "test")}
    assert data.label_names[0] == "O" and "B-DATE" not in data.label_names
    records = synthetic.generate("nli", "mid", "test", 4)
    write_table(tmp_path / "mid.parquet", {None: records})
    spec = {"train": "data/nli/en/train.jsonl",
            "eval": [{"dataset": "d", "language": "en", "split": "validation", "role": "source",
                      "path": "data/nli/en/validation.jsonl"},
                     {"dataset": "d", "language": "mid", "split": "test", "path": "mid.parquet"}]}
    data = load_task_data("nli", spec, tmp_path)
    assert [e["id"] for e in data.eval_sets[1].examples] == [r["id"] for r in records]
    with pytest.raises(OfaError, match="exactly one source"):
        load_task_data("nli", {**spec, "eval": spec["eval"][1:]}, tmp_path)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


NER_ROWS = [{"tokens": ["Ada", "met", "Bo", "in", "May"], "tags": ["B-PER", "O", "B-PER", "O", "B-DATE"]},
            {"tokens": ["Kano", "Pillars"], "tags": ["B-ORG", "I-ORG"]}]


def test_a_data_folder_takes_the_split_names_datasets_ship_with(tmp_path):
    from producers.data import load_task_data

    for language, names in {"pcm": ("train", "dev", "test"), "hau": ("valid", "test"), "yor": ("validation",),
                            "ibo": ("train",)}.items():
        for name in names:
            write_jsonl(tmp_path / "ner" / language / f"{name}.jsonl", NER_ROWS)
    (tmp_path / "ner" / "README.md").write_text("not a split")
    data = load_task_data("ner", {"directory": "ner", "source": "pcm"}, tmp_path)
    assert [(e.language, e.split, e.role) for e in data.eval_sets] == [
        ("pcm", "validation", "source"), ("pcm", "test", "source"), ("hau", "validation", "target"),
        ("hau", "test", "target"), ("yor", "validation", "target")]  # ibo has training data only
    data = load_task_data("ner", {"directory": "ner", "source": "pcm", "targets": ["yor"]}, tmp_path)
    assert [(e.language, e.split) for e in data.eval_sets if e.role == "target"] == [("yor", "validation")]


def test_a_data_folder_error_lists_the_files_found_and_the_names_expected(tmp_path):
    from producers.data import load_task_data

    write_jsonl(tmp_path / "ner" / "pcm" / "train.jsonl", NER_ROWS)
    write_jsonl(tmp_path / "ner" / "pcm" / "develop.jsonl", NER_ROWS)
    write_jsonl(tmp_path / "ner" / "hau" / "test.jsonl", NER_ROWS)
    with pytest.raises(OfaError) as error:
        load_task_data("ner", {"directory": "ner", "source": "pcm"}, tmp_path)
    message = str(error.value)
    assert "no validation file for the source language 'pcm'" in message
    assert "expected pcm/dev|valid|validation.<ext>" in message and "jsonl" in message and "conll" in message
    assert message.endswith("found: hau/test.jsonl, pcm/develop.jsonl, pcm/train.jsonl")
    write_jsonl(tmp_path / "ner" / "pcm" / "dev.jsonl", NER_ROWS)
    with pytest.raises(OfaError, match=r"no validation or test file for the target language 'swa'.*found: hau/test"):
        load_task_data("ner", {"directory": "ner", "source": "pcm", "targets": ["swa"]}, tmp_path)
    write_jsonl(tmp_path / "ner" / "pcm" / "validation.jsonl", NER_ROWS)
    with pytest.raises(OfaError, match="two validation files for language 'pcm': pcm/dev.jsonl and pcm/validation"):
        load_task_data("ner", {"directory": "ner", "source": "pcm"}, tmp_path)


def test_named_files_without_a_source_validation_set_list_the_sets_found(tmp_path):
    from producers.data import load_task_data

    path = write_jsonl(tmp_path / "ner.jsonl", NER_ROWS)
    spec = {"train": str(path), "eval": [{"dataset": "d", "language": "hau", "split": "validation", "path": str(path)}]}
    with pytest.raises(OfaError) as error:
        load_task_data("ner", spec)
    assert str(error.value).endswith("found 0; the evaluation sets are: d/hau/validation (target)")


def test_class_label_ids_are_named_through_the_datasets_features(tmp_path):
    import datasets

    from producers.data import load_task_data

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]  # MasakhaNER 2.0's order
    features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    rows = {"id": ["a", "b"], "tokens": [r["tokens"] for r in NER_ROWS],
            "ner_tags": [[names.index(tag) for tag in r["tags"]] for r in NER_ROWS]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "hub.parquet"))
    hub_shaped = [{"tokens": r["tokens"], "ner_tags": [names.index(tag) for tag in r["tags"]]} for r in NER_ROWS]
    write_jsonl(tmp_path / "hub.jsonl", hub_shaped)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"features": features.to_dict()}))
    write_jsonl(tmp_path / "renamed.jsonl", [{"words": r["tokens"], "labels": r["ner_tags"]} for r in hub_shaped])
    expected = [r["tags"] for r in NER_ROWS]

    def tags(path, **options):
        spec = {"train": path, "eval": [{"dataset": "d", "language": "en", "split": "validation", "role": "source",
                                         "path": path}], **options}
        return [example["tags"] for example in load_task_data("ner", spec, tmp_path).train]

    assert tags("hub.parquet") == expected  # the names datasets recorded in the Parquet file
    assert tags("hub.jsonl", features="dataset_info.json") == expected
    assert tags("hub.jsonl", class_labels={"ner_tags": names}) == expected
    assert tags("renamed.jsonl", columns={"tokens": "words", "tags": "labels"},
                class_labels={"labels": names}) == expected
    with pytest.raises(OfaError, match=r"hub.jsonl: record 1: .*tag 1 is not a string.*class_labels"):
        tags("hub.jsonl")
    with pytest.raises(OfaError, match=r"label id 9 outside 0..8"):
        write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["x"], "ner_tags": [9]}])
        tags("bad.jsonl", class_labels={"ner_tags": names})


def test_label_map_applies_to_training_and_evaluation_data(tmp_path):
    from producers.data import load_task_data

    path = write_jsonl(tmp_path / "ner.jsonl", NER_ROWS)
    spec = {"train": str(path), "eval": [{"dataset": "d", "language": "en", "split": "validation", "role": "source",
                                          "path": str(path)}], "label_map": {"DATE": "O", "ORG": "GROUP"}}
    data = load_task_data("ner", spec)
    expected = [["B-PER", "O", "B-PER", "O", "O"], ["B-GROUP", "I-GROUP"]]
    assert [e["tags"] for e in data.train] == [e["tags"] for e in data.eval_sets[0].examples] == expected
    assert data.label_names == ["O", "B-GROUP", "I-GROUP", "B-PER"]
    with pytest.raises(OfaError, match="label_map maps entity types .* not tags: 'B-DATE'"):
        load_task_data("ner", {**spec, "label_map": {"B-DATE": "O"}})
    nli = write_jsonl(tmp_path / "nli.jsonl", [{"premise": "a", "hypothesis": "b", "label": 0}])
    with pytest.raises(OfaError, match="task 'nli' does not support label_map"):
        load_task_data("nli", {"train": str(nli), "label_map": {"neutral": "contradiction"},
                               "eval": [{"dataset": "d", "language": "en", "split": "validation", "role": "source",
                                         "path": str(nli)}]})


def test_a_hub_data_table_reads_each_languages_configuration_and_splits(monkeypatch):
    import datasets

    from producers import hub
    from producers.data import load_task_data

    names = ["O", "B-PER", "I-PER", "B-DATE", "I-DATE"]
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    loaded = []

    def fake_load(path, configuration, split, revision=None):
        loaded.append((path, configuration, split))
        rows = [[f"{configuration}-{split}", "Ada"]], [[0, 1]]
        return datasets.Dataset.from_dict({"tokens": rows[0], "ner_tags": rows[1]}, features=features)

    monkeypatch.setattr(hub, "_load", fake_load)
    spec = {"hub": {"path": "someone/ner-corpus", "configuration": "{language}_ner",
                    "splits": {"validation": "dev"}},
            "source": "pcm", "targets": ["hau", "yor"], "label_map": {"DATE": "O"}}
    data = load_task_data("ner", spec)
    assert loaded == [("someone/ner-corpus", "pcm_ner", "train"), ("someone/ner-corpus", "pcm_ner", "dev"),
                      *(("someone/ner-corpus", f"{language}_ner", split)
                        for language in ("hau", "yor") for split in ("dev", "test"))]
    assert [(e.dataset, e.language, e.split, e.role) for e in data.eval_sets] == [
        ("ner-corpus", "pcm", "validation", "source"),
        *(("ner-corpus", language, split, "target") for language in ("hau", "yor") for split in ("validation", "test"))]
    assert data.train[0]["tags"] == ["O", "B-PER"] and data.eval_sets[-1].examples[0]["tokens"][0] == "yor_ner-test"


def test_hub_data_offline_is_a_one_line_error():
    from producers.data import load_task_data

    spec = {"hub": {"path": "ofa-eval-tests/no-such-dataset"}, "source": "pcm", "targets": ["hau"]}
    with pytest.raises(OfaError) as error:
        load_task_data("ner", spec)
    message = str(error.value)
    assert message.startswith("Hub dataset 'ofa-eval-tests/no-such-dataset' (configuration 'pcm', split 'train'): "
                              "cannot be loaded") and "\n" not in message
    assert "HF_HUB_OFFLINE=1" in message


def test_data_tables_and_task_tables_are_checked_when_the_grid_is_read(tmp_path):
    from producers.grid import load_grid

    grid = tmp_path / "grid.toml"
    head = 'model = "m"\nmodel_name_or_path = "x"\nlearning_rates = [1e-5]\nbatch_sizes = [8]\nseeds = [1]\n'
    grid.write_text(head + '[ner]\ndata = { directory = "d", sorce = "pcm" }\n')
    with pytest.raises(OfaError, match=r"grid.toml \[ner\]: data: unknown key\(s\) sorce \(known here: .*source"):
        load_grid(grid)
    grid.write_text(head + '[ner]\ndata = { hub = { path = "a/b" }, source = "pcm" }\n')
    with pytest.raises(OfaError, match=r"data: missing key\(s\) targets"):
        load_grid(grid)
    grid.write_text(head + '[sc]\ndata = { directory = "d" }\n')
    with pytest.raises(OfaError, match=r"\[sc\] is not a task that can be trained .*--task-module"):
        load_grid(grid)


def test_hub_data_names_its_task():
    from producers.hub import LANGUAGES, load_hub

    with pytest.raises(OfaError, match="for the nli task"):
        load_hub("qa", {"hub": "xnli"})
    assert len(LANGUAGES["wikiann"]) == 25 and len(LANGUAGES["tydiqa"]) == 8


def test_commands_import_without_torch():
    import subprocess
    import sys

    code = "import sys, producers.commands; print(any(m.startswith(('torch', 'transformers')) for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "False", result.stderr
