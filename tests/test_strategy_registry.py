"""A strategy defined outside the package works in every command that takes strategies.

The toy strategy here ("first-run") always scores the first run of the draw, whatever r is:
useless as a method, but easy to compute independently with SQL over the recorded draws.
"""

import json

import pytest

from ofa_eval.evaluation import Strategy, get_strategy, register_strategy, unregister_strategy


class FirstRun(Strategy):
    name = "first-run"
    label = "First run"
    variants = ("last", "src-dev")

    def cell_models(self, pool, draws, variant, max_runs):
        return [[("run", variant, runs[0])] * max_runs for runs in draws.runs]


@pytest.fixture
def first_run():
    strategy = register_strategy(FirstRun())
    yield strategy
    unregister_strategy(strategy.name)


def first_run_means(store, variant: str) -> float:
    """Mean over recorded draws of the target score of each draw's first run, by SQL."""
    result = store("sql", f"""
        SELECT avg(v.target_test) AS mean FROM draws d
        JOIN run_variants v ON v.run_id = d.run_id AND v.variant = '{variant}'
        WHERE d.task = 'nli' AND d.recipe = '*' AND d.position = (
            SELECT min(position) FROM draws e WHERE e.task = d.task AND e.model = d.model AND e.draw = d.draw
              AND e.recipe = '*')""", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]["mean"]


def protocol_rows(store, *extra):
    result = store("protocol", "--task", "nli", "--replay", "-R", 4, "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_registered_strategy_runs_in_protocol(synthetic_store, first_run):
    rows = protocol_rows(synthetic_store, "--strategy", "first-run", "--variant", "src-dev")
    expected = first_run_means(synthetic_store, "src-dev")
    assert {row["strategy"] for row in rows} == {"first-run"}
    assert len(rows) >= 2
    for row in rows:
        assert float(row["mean"]) == pytest.approx(expected, abs=1e-9)


def test_a_registered_strategy_is_checked_against_benchmark_tables(synthetic_store, first_run, tmp_path):
    expected = first_run_means(synthetic_store, "last")
    model = protocol_rows(synthetic_store, "--strategy", "first-run", "--variant", "last")[0]["model"]
    header = "task,model,strategy,variant,runs,mean,std,draws\n"
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(header + f"nli,{model},first-run,last,2,{expected:.6f},,\n")
    bad.write_text(header + f"nli,{model},first-run,last,2,{expected + 1:.6f},,\n")
    assert synthetic_store("check", good, "--replay").exit_code == 0
    failed = synthetic_store("check", bad, "--replay")
    assert failed.exit_code == 1 and "first-run last r=2" in failed.stdout


def test_a_registered_strategy_is_drawn_in_the_report(synthetic_store, first_run, tmp_path):
    result = synthetic_store("report", tmp_path / "report", "--task", "nli", "--replay", "--strategy", "first-run",
                             "--strategy", "max-src-dev", "--variant", "src-dev", "-R", 4, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    assert "first-run" in (tmp_path / "report" / "report.md").read_text()


def test_an_unknown_strategy_names_the_registered_ones(synthetic_store, first_run):
    result = synthetic_store("protocol", "--strategy", "last-run", "--replay")
    assert result.exit_code == 2
    assert "unknown strategy 'last-run'" in result.output and "first-run" in result.output


def test_registering_a_taken_name_is_refused(first_run):
    from ofa_eval.common.errors import OfaError

    with pytest.raises(OfaError, match="already registered"):
        register_strategy(FirstRun())
    assert get_strategy("first-run") is first_run
