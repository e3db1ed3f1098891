"""The notebook API (ofa_eval.api): the same numbers as the CLI's CSV, cell for cell; DataFrames and
Figures; notes as warnings; no torch; and docs/python-api.md's examples run as written."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import polars as pl
import pytest

import ofa_eval
from ofa_eval.common.errors import OfaError
from synthetic_release import write_release

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "python-api.md"
MODEL = "xlm-roberta-large"


@pytest.fixture
def store(cli, tmp_path):
    """A store holding a synthetic release whose model is named like the paper's."""
    folder = tmp_path / "release"
    folder.mkdir()
    write_release(folder, model=MODEL, n_draws=4, max_r=6)  # draws as long as the 6 configurations
    assert cli("import", "ofa-xlt", folder).exit_code == 0
    return cli


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _same_cell(printed: str, value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return printed == ""
    if isinstance(value, bool):
        return printed == str(value)
    if isinstance(value, float):
        return float(printed) == round(value, 6)
    return printed == str(value)


def assert_cell_for_cell(printed_csv: str, frame: pl.DataFrame) -> None:
    printed = _csv_rows(printed_csv)
    assert list(printed[0]) == frame.columns
    assert len(printed) == frame.height > 0
    for line, row in zip(printed, frame.iter_rows(named=True)):
        wrong = {c: (line[c], row[c]) for c in frame.columns if not _same_cell(line[c], row[c])}
        assert not wrong, wrong


def _stdout(cli, *args) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("flags, keywords", [
    ([], {}),
    (["--strategy", "max-src-dev", "--strategy", "accumulative", "--variant", "ca", "--replay",
      "--exclude-draw", "1", "-R", "3"],
     {"strategy": ["max-src-dev", "accumulative"], "variant": "ca", "replay": True, "exclude_draws": ["1"],
      "max_runs": 3}),
    (["--strategy", "max-trg-dev", "--ci", "90", "--bootstrap", "500", "--bootstrap-seed", "3"],
     {"strategy": "max-trg-dev", "ci": 90, "bootstrap": 500, "bootstrap_seed": 3}),
    (["--strategy", "max-src-dev", "--exact"], {"strategy": "max-src-dev", "exact": True}),
])
def test_protocol_matches_the_cli_csv(store, flags, keywords):
    printed = _stdout(store, "protocol", "--task", "nli", "--model", MODEL, *flags, "--format", "csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ofa_eval.OfaNote)
        frame = ofa_eval.protocol(store.db, task="nli", model=MODEL, **keywords)
    assert isinstance(frame, pl.DataFrame)
    assert_cell_for_cell(printed, frame)


def test_compare_and_correlate_match_the_cli_csv(store):
    flags = ["--task", "tydiqa", "--model", MODEL, "--bootstrap", "300", "--format", "csv"]
    lines = _stdout(store, "compare", *flags).strip().split("\n")
    second_header = next(i for i, line in enumerate(lines) if i and line.startswith("task,model,"))
    printed = ["\n".join(lines[:second_header]), "\n".join(lines[second_header:])]
    tables = ofa_eval.compare(store.db, task="tydiqa", model=MODEL, bootstrap=300)
    assert list(tables) == ["by_r", "by_language"]
    for text, frame in zip(printed, tables.values()):
        assert_cell_for_cell(text.strip(), frame)

    for analysis in ("tracking", "regret", "languages", "source_ranking"):
        text = _stdout(store, "correlate", *flags, "--analysis", analysis)
        frame = ofa_eval.correlate(store.db, task="tydiqa", model=MODEL, bootstrap=300)[analysis]
        assert_cell_for_cell(text.strip(), frame)


def test_sql_and_grid_match_the_cli_csv(store):
    query = "SELECT task, model, count(*) AS runs, avg(learning_rate) AS mean_lr FROM runs GROUP BY ALL ORDER BY ALL"
    assert_cell_for_cell(_stdout(store, "sql", query, "--format", "csv"), ofa_eval.sql(store.db, query))
    grid = ofa_eval.grid(store.db, "ner", MODEL)
    printed = _csv_rows(_stdout(store, "grid", "--task", "ner", "--model", MODEL, "--format", "csv"))
    assert list(printed[0]) == grid.columns and len(printed) == grid.height


def test_sql_is_read_only_as_on_the_command_line(store):
    before = Path(store.db).read_bytes()
    with pytest.raises(OfaError, match="read-only: DELETE is refused"):
        ofa_eval.sql(store.db, "DELETE FROM runs")
    assert Path(store.db).read_bytes() == before


def test_notes_arrive_as_warnings_naming_what_was_done(store):
    with pytest.warns(ofa_eval.OfaNote, match="replayed its recorded draws"):
        ofa_eval.protocol(store.db, task="nli", model=MODEL, strategy="max-src-dev")


def test_language_gains_name_every_target_language(store):
    gains = ofa_eval.language_gains(store.db, "nli", MODEL, bootstrap=200)
    # the synthetic release's NLI targets (tests/synthetic_release.py)
    assert sorted(zip(gains["dataset"], gains["language"])) == [("indicxnli", "hi"), ("xnli", "de"), ("xnli", "sw")]
    assert (gains["gain"] - (gains["a_score"] - gains["b_score"])).abs().max() < 1e-9
    # the protocol's mean at r = R is the mean over target languages, computed along another path
    protocol = ofa_eval.protocol(store.db, task="nli", model=MODEL, strategy=["accumulative", "max-src-dev"])
    at_r = {(s, v): m for s, v, m in protocol.filter(pl.col("runs") == gains["runs"][0])
            .select("strategy", "variant", "mean").rows()}
    assert gains["a_score"].mean() == pytest.approx(at_r[("accumulative", "ca")], abs=1e-9)
    assert gains["b_score"].mean() == pytest.approx(at_r[("max-src-dev", "src-dev")], abs=1e-9)


def test_figures_are_the_reports_figures(store, tmp_path):
    import matplotlib.figure

    backend = matplotlib.get_backend()
    figures = ofa_eval.figures(store.db, task="ner", model=MODEL, bootstrap=100)
    assert set(figures) == {f"ner-{MODEL}-curves", f"ner-{MODEL}-language-gain", f"ner-{MODEL}-source-vs-target"}
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figures.values())
    assert matplotlib.get_backend() == backend  # a notebook's backend is left alone, and pyplot knows no figure
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    curves = figures[f"ner-{MODEL}-curves"].axes[0]
    pairs = ofa_eval.protocol(store.db, task="ner", model=MODEL).select("strategy", "variant").unique()
    assert curves.get_xlabel() == "runs r" and len(curves.get_lines()) == pairs.height  # a curve per pair
    md_path, _ = ofa_eval.report(store.db, tmp_path / "out", task="ner", model=MODEL, bootstrap=100)
    assert {p.name for p in md_path.parent.glob("*.png")} == {f"{stem}.png" for stem in figures}


def test_importing_and_using_the_api_loads_no_torch(store):
    code = ("import sys, ofa_eval; ofa_eval.protocol(sys.argv[1], task='nli'); ofa_eval.figures(sys.argv[1], "
            "task='nli', bootstrap=50); print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(store.db)], capture_output=True, text=True,
                         check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "[]"


def doc_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _run_doc(folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ofa_eval.OfaNote)
        for block in doc_examples():
            exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_the_docs_examples_run_on_a_release_store(store, monkeypatch):
    assert len(doc_examples()) >= 5
    Path(store.db).rename(Path(store.db).parent / "ofa-eval.duckdb")
    namespace = _run_doc(Path(store.db).parent, monkeypatch)
    assert isinstance(namespace["table"], pl.DataFrame) and namespace["table"].height > 0


def test_the_docs_examples_run_on_the_papers_release(release_store, tmp_path, monkeypatch):
    (tmp_path / "ofa-eval.duckdb").write_bytes(Path(release_store).read_bytes())
    namespace = _run_doc(tmp_path, monkeypatch)
    table = namespace["table"]
    # Table 1 of the paper, NLI with XLM-R large at r = 10 from the release: averaging beats selection
    at_ten = {(s, v): m for s, v, m in table.filter(pl.col("runs") == 10).select("strategy", "variant", "mean").rows()}
    assert at_ten[("accumulative", "ca")] > at_ten[("max-src-dev", "src-dev")]
