"""A task of one's own, out of tree: the sentence-classification task of docs/tasks.md, trained,
ingested and put through the protocol by `ofa-eval` in subprocesses, once as an installed package
(entry point `ofa_eval.tasks`) and once as a plain file (`--task-module`).

The code and the package's pyproject.toml are taken from docs/tasks.md, so the walkthrough is
what runs. The package is installed with `pip install --target` into a temporary folder that
only the subprocesses see (PYTHONPATH): the project's environment is never changed, not even by
a test that fails half-way. The references are computed here from the data's own labels and the
runs' prediction files: accuracy by hand, and Max SRC-DEV for a one-run pool by hand.
"""

import csv
import importlib.util
import io
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "tasks.md"
SPLITS = {"en": {"train": 48, "dev": 12}, "xx": {"dev": 12, "test": 16}, "yy": {"validation": 12, "test": 16}}
GRID = """\
model = "tiny"
model_name_or_path = "./model"
learning_rates = [1e-3]
batch_sizes = {batch_sizes}
seeds = [1]
epochs = 2
snapshots = 3
max_length = 32

[sc]
data = {{ directory = "data", source = "en", dataset = "toy-sc" }}
head_alignment = {{ mode = "shared-init" }}
"""


def doc_block(language: str, first_line: str) -> str:
    """The fenced `language` block of docs/tasks.md that starts with `first_line` (dedented)."""
    for indent, body in re.findall(rf"^( *)```{language}\n(.*?)^\1```", DOC.read_text(), re.M | re.S):
        body = textwrap.dedent(body)
        if body.startswith(first_line):
            return body
    raise AssertionError(f"docs/tasks.md has no {language} block starting with {first_line!r}")


def write_data(folder: Path) -> dict:
    """JSON Lines files `<language>/<split>.jsonl`; returns {(language, split): {id: label}}."""
    rng = random.Random(0)
    words = {"pos": ["good", "great", "lovely", "happy"], "neg": ["bad", "awful", "sad", "poor"]}
    filler = ["the", "film", "was", "very", "and", "a", "day", "story", "really", "quite"]
    labels = {}
    for language, sizes in SPLITS.items():
        for split, n in sizes.items():
            rows = []
            for i in range(n):
                label = rng.choice(["pos", "neg"])
                text = " ".join(rng.sample(filler, 4) + [rng.choice(words[label])])
                if language != "en":  # a "language" that spells words differently
                    text = text.replace("a", "o" if language == "xx" else "ae")
                rows.append({"id": f"{language}-{split}-{i}", "text": text, "label": label})
            path = folder / language / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            labels[(language, {"dev": "validation"}.get(split, split))] = {r["id"]: r["label"] for r in rows}
    return labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, a tiny model and the task's file: (folder, labels)."""
    folder = tmp_path_factory.mktemp("sc-world")
    labels = write_data(folder / "data")
    ofa_eval("build-model", *sorted((folder / "data").glob("*/*.jsonl")), "--out", "model", "--vocab-size", 200,
             "--pretrain-steps", 0, "--quiet", cwd=folder, env_changes={})
    (folder / "sc_task.py").write_text(doc_block("python", '"""Sentence classification'))
    return folder, labels


def ofa_eval(*args, cwd, env_changes) -> str:
    env = {key: value for key, value in os.environ.items() if key != "OFA_EVAL_TASK_MODULES"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env_changes})
    result = subprocess.run([sys.executable, "-c", "from ofa_eval.cli import main; main(prog_name='ofa-eval')",
                             *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def snapshot_scores(runs: Path, store: Path, run_with) -> list[dict]:
    query = ("SELECT r.external_id AS run, s.snapshot_index AS snapshot, s.language, s.split, s.role, s.value "
             "FROM scores s JOIN runs r USING (run_id) WHERE s.task = 'sc' AND s.scored = 'snapshot' "
             "AND s.metric = 'accuracy' ORDER BY ALL")
    return json.loads(run_with("--db", store, "sql", "--format", "json", query, cwd=runs.parent))


def accuracy_by_hand(runs: Path, row: dict, labels: dict) -> float:
    import polars as pl

    predictions = pl.read_parquet(runs / row["run"] / "predictions" / f"snapshot-{row['snapshot']:02d}" /
                                  f"toy-sc__{row['language']}__{row['split']}.parquet")
    gold = labels[(row["language"], row["split"])]
    assert sorted(predictions["example_id"].to_list()) == sorted(gold)
    correct = sum(gold[i] == label for i, label in zip(predictions["example_id"], predictions["label"]))
    return 100 * correct / len(gold)


def task_choices(train_help: str) -> list[str]:
    return re.search(r"--task \[([a-z|]+)\]", train_help).group(1).split("|")


def protocol_rows(output: str) -> list[dict]:
    return [row for row in csv.DictReader(io.StringIO(output)) if row["task"] == "sc"]


def test_an_installed_task_package_trains_ingests_and_runs_the_protocol(world, tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("installing the plug-in package without network needs setuptools in this environment")
    folder, labels = world
    package, site = tmp_path / "ofa-sc-task", tmp_path / "site"
    package.mkdir()
    (package / "sc_task.py").write_text((folder / "sc_task.py").read_text())
    (package / "pyproject.toml").write_text(doc_block("toml", "[build-system]"))
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--target", str(site), str(package)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    def run_with(*args, cwd):
        return ofa_eval(*args, cwd=cwd, env_changes={"PYTHONPATH": str(site)})

    (folder / "grid-package.toml").write_text(GRID.format(batch_sizes=[8, 16]))
    assert task_choices(ofa_eval("train", "--help", cwd=folder, env_changes={})) == ["ner", "nli", "qa"]
    assert task_choices(run_with("train", "--help", cwd=folder)) == ["ner", "nli", "qa", "sc"]
    assert "2 run(s) complete" in run_with("train", "grid-package.toml", "--out", "runs-package", "-q", cwd=folder)
    store = tmp_path / "store.duckdb"
    run_with("--db", store, "ingest", "runs-package", "-q", cwd=folder)

    rows = snapshot_scores(folder / "runs-package", store, run_with)
    assert len(rows) == 2 * 3 * 5  # runs x snapshots x evaluation sets (en dev, xx and yy dev and test)
    for row in rows:
        assert row["value"] == pytest.approx(accuracy_by_hand(folder / "runs-package", row, labels), abs=1e-9)
    output = run_with("--db", store, "protocol", "--task", "sc", "--strategy", "max-src-dev", "--strategy",
                      "max-trg-dev", "--draws", "3", "--format", "csv", cwd=folder)
    assert {(row["strategy"], row["runs"]) for row in protocol_rows(output)} == {
        (strategy, runs) for strategy in ("max-src-dev", "max-trg-dev") for runs in ("1", "2")}


def test_a_task_module_file_works_without_installing_anything(world, tmp_path):
    folder, labels = world
    module = folder / "sc_task.py"
    (folder / "grid-file.toml").write_text(GRID.format(batch_sizes=[8]))
    assert "1 run(s) complete" in ofa_eval("--task-module", module, "train", "grid-file.toml", "--out", "runs-file",
                                           "-q", cwd=folder, env_changes={})
    store = tmp_path / "store.duckdb"
    ofa_eval("--db", store, "ingest", "runs-file", "-q", cwd=folder,
             env_changes={"OFA_EVAL_TASK_MODULES": str(module)})  # the environment variable does the same

    def run_with(*args, cwd):
        return ofa_eval("--task-module", module, *args, cwd=cwd, env_changes={})

    rows = snapshot_scores(folder / "runs-file", store, run_with)
    assert len(rows) == 3 * 5
    for row in rows:
        row["by_hand"] = accuracy_by_hand(folder / "runs-file", row, labels)
        assert row["value"] == pytest.approx(row["by_hand"], abs=1e-9)
    # Max SRC-DEV of a one-run pool: the snapshot best on en validation (the earliest on a tie),
    # its test accuracy averaged over the target languages.
    source = [row for row in rows if row["role"] == "source"]
    best = max(source, key=lambda row: (row["by_hand"], -row["snapshot"]))["snapshot"]
    expected = sum(row["by_hand"] for row in rows if row["snapshot"] == best and row["split"] == "test") / 2
    output = run_with("--db", store, "protocol", "--task", "sc", "--strategy", "max-src-dev", "--variant", "src-dev",
                      "--draws", "2", "--format", "csv", cwd=folder)
    [row] = protocol_rows(output)
    assert float(row["mean"]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("code, problem", [
    (None, "no such task module file"),
    ("import no_such_package\n", "cannot be imported (ModuleNotFoundError: No module named 'no_such_package')"),
    ("from producers.tasks import Task\n", "defines no task (a class deriving from producers.tasks.Task"),
    ("from ofa_eval.tasks.metrics import AccuracyMetric\nfrom producers.tasks import Task\n\n\nclass MyNLI(Task):\n"
     "    name = 'nli'\n    metric = AccuracyMetric()\n    gold_column = prediction_column = 'label'\n",
     "MyNLI: task 'nli' is already defined (<task 'nli': ofa_eval.tasks.registry.NLIDefinition>)"),
])
def test_a_broken_task_module_is_a_one_line_error(tmp_path, code, problem):
    module = tmp_path / "my_task.py"
    if code is not None:
        module.write_text(code)
    result = subprocess.run([sys.executable, "-c", "from ofa_eval.cli import main; main(prog_name='ofa-eval')",
                             "--task-module", str(module), "sql", "SELECT 1"], capture_output=True, text=True,
                            cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "OFA_EVAL_TASK_MODULES"})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {module}: ") and result.stderr.count("\n") == 1, result.stderr
    assert problem in result.stderr, result.stderr
