"""The task registry (ofa_eval.tasks): built-in tasks, and plug-ins found through the
`ofa_eval.tasks` entry-point group that both the engine and the producers then use.

The plug-in is a real installed distribution (a `.dist-info` folder with `entry_points.txt` on
sys.path), loaded in a fresh interpreter so that this process's registry stays as it is.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ofa_eval.common.errors import OfaError

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
from ofa_eval.tasks.metrics import AccuracyMetric
from ofa_eval.tasks.registry import TaskDefinition
from producers.tasks import Task


class POSTask(Task):
    """Part-of-speech tags, one per example here; trains like any task (not exercised)."""

    name = "pos"
    metric = AccuracyMetric()
    gold_column = "tag"
    prediction_column = "predicted_tag"
    model_class = "AutoModelForTokenClassification"


class OtherNLI(TaskDefinition):
    name = "nli"
    metric = AccuracyMetric()
    gold_column = "label"
    prediction_column = "label"


class ChunkDefinition(TaskDefinition):
    """A task the engine can score but nobody can train here."""

    name = "chunk"
    metric = AccuracyMetric()
    gold_column = "chunk"
    prediction_column = "chunk"
'''


def install_plugin(site: Path, entry_points: str) -> Path:
    """A distribution `pos-plugin` in `site` whose entry points are `entry_points`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "pos_plugin.py").write_text(PLUGIN)
    info = site / "pos_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pos-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ofa_eval.tasks]\n{entry_points}\n")
    return site


def run_python(code: str, site: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"})


def test_built_in_tasks_match_the_documented_run_format():
    """docs/artifacts.md, 'Gold and prediction tables', is the reference for the columns."""
    from ofa_eval.tasks.registry import get_task, task_names

    rows = [line.split("|")[1:4] for line in (REPO / "docs" / "artifacts.md").read_text().splitlines()
            if line.startswith("| `") and "`example_id`" in line]
    documented = {cells[0].strip(" `"): (cells[1].split("`")[3], cells[2].split("`")[3]) for cells in rows}
    assert task_names() == sorted(documented) == ["ner", "nli", "qa"]
    for name, (gold, prediction) in documented.items():
        assert (get_task(name).gold_column, get_task(name).prediction_column) == (gold, prediction)
    assert [get_task(name).primary_metric for name in ("nli", "qa", "ner")] == ["accuracy", "f1", "f1"]


def test_unknown_task_names_the_known_ones():
    from ofa_eval.tasks.registry import get_task

    with pytest.raises(OfaError) as error:
        get_task("pos")
    assert str(error.value) == "unknown task 'pos' (known: ner, nli, qa)"


def test_producer_tasks_are_the_engine_definitions_with_training_code():
    from ofa_eval.tasks import registry
    from producers.tasks import Task, get_task, task_names

    assert task_names() == registry.task_names()
    for name in task_names():
        task, definition = get_task(name), registry.get_task(name)
        assert isinstance(task, Task) and isinstance(task, type(definition))
        assert (task.name, task.metric, task.gold_column, task.prediction_column) == (
            definition.name, definition.metric, definition.gold_column, definition.prediction_column)


def test_a_plugin_task_is_found_scored_by_ingest_and_offered_to_train(tmp_path):
    site = install_plugin(tmp_path / "site", "pos = pos_plugin:POSTask\nchunk = pos_plugin:ChunkDefinition")
    code = """
        import json, sys
        from pathlib import Path

        import ofa_eval.tasks.registry as registry
        import producers.tasks
        from ofa_eval.artifacts.scoring import score_run
        from producers.artifacts import gold_table, prediction_table, write_json, write_table

        run = Path(sys.argv[1])
        gold = {"en": ["NOUN", "VERB", "DET", "NOUN"], "xx": ["NOUN", "ADJ", "VERB", "NOUN", "DET"]}
        predicted = {"en": ["NOUN", "VERB", "NOUN", "NOUN"], "xx": ["NOUN", "NOUN", "VERB", "ADJ", "DET"]}
        eval_sets = [("en", "validation", "source"), ("xx", "test", "target")]
        for language, split, _ in eval_sets:
            ids = [f"{language}-{i}" for i in range(len(gold[language]))]
            write_table(run / f"gold/d__{language}__{split}.parquet", gold_table("pos", ids, gold[language]))
            write_table(run / f"predictions/snapshot-01/d__{language}__{split}.parquet",
                        prediction_table("pos", ids[::-1], predicted[language][::-1]))
        write_json(run / "manifest.json", {
            "format_version": 1, "state": "complete", "task": "pos", "model": "m", "learning_rate": 1e-5,
            "batch_size": 8, "seed": 1, "ca": None,
            "snapshots": [{"index": 1, "step": 10, "epoch": 1.0, "weights": None, "sha256": None, "bytes": None}],
            "eval_sets": [{"dataset": "d", "language": language, "split": split, "role": role,
                           "gold": f"gold/d__{language}__{split}.parquet", "n_examples": len(gold[language])}
                          for language, split, role in eval_sets]})
        scores = score_run(run).scores
        print(json.dumps({
            "engine": registry.task_names(), "trainable": producers.tasks.task_names(),
            "same_object": producers.tasks.get_task("pos") is registry.get_task("pos"),
            "en": scores[("snapshot-01", "d", "en", "validation")]["accuracy"],
            "xx": scores[("snapshot-01", "d", "xx", "test")]["accuracy"],
            "torch": "torch" in sys.modules}))
        """
    result = run_python(code, site, tmp_path / "pos-run")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["engine"] == ["chunk", "ner", "nli", "pos", "qa"]
    assert found["trainable"] == ["ner", "nli", "pos", "qa"]
    assert found["same_object"] is True
    assert found["en"] == pytest.approx(100 * 3 / 4) and found["xx"] == pytest.approx(100 * 3 / 5)
    assert found["torch"] is False

    result = run_python("from ofa_eval.cli import main; main(prog_name='ofa-eval')", site, "train", "--help")
    assert result.returncode == 0 and "[ner|nli|pos|qa]" in result.stdout, result.stdout + result.stderr
    result = run_python("import producers.tasks as t\ntry:\n    t.get_task('chunk')\nexcept Exception as e:\n"
                        "    print(e)", site)
    assert result.stdout.startswith("task 'chunk' cannot be trained"), result.stdout + result.stderr


@pytest.mark.parametrize("entry_point, problem", [
    ("pos = pos_plugin:NoSuchThing", "task plug-in pos = pos_plugin:NoSuchThing: cannot be loaded (AttributeError"),
    ("tags = pos_plugin:POSTask", "task plug-in tags = pos_plugin:POSTask: the entry point is named 'tags' but "
                                  "the task 'pos'"),
    ("nli = pos_plugin:OtherNLI", "task plug-in nli = pos_plugin:OtherNLI: task 'nli' is already defined "
                                  "(<task 'nli': ofa_eval.tasks.registry.NLIDefinition>)"),
])
def test_a_broken_plugin_is_named_in_a_one_line_error(tmp_path, entry_point, problem):
    site = install_plugin(tmp_path / "site", entry_point)
    result = run_python("from ofa_eval.cli import main; main(prog_name='ofa-eval')", site, "train", "--help")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {problem}") and result.stderr.count("\n") == 1, result.stderr
