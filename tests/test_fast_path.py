"""The statistics path (import, protocol, sql, grid, check) gives its real results in a process
that never imports torch, transformers, datasets, scipy or submitit."""

import csv
import io
import json
import statistics
import subprocess
import sys
import textwrap

import pytest

from references import VARIANT_COLUMN, brute_force_mean_std, recorded_draws

HEAVY_MODULES = ("torch", "transformers", "datasets", "scipy", "submitit")

PROBE = textwrap.dedent("""
    import json
    import sys

    from click.testing import CliRunner

    from ofa_eval.cli import main

    db, commands, heavy_modules = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    results = {}
    for name, args in commands.items():
        result = CliRunner().invoke(main, ["--db", db, *args])
        results[name] = {"exit_code": result.exit_code, "stdout": result.stdout, "output": result.output,
                         "exception": repr(result.exception)}
    print(json.dumps({"results": results, "heavy": sorted(m for m in heavy_modules if m in sys.modules)}))
""")

PROTOCOL_RUNS = 3
GRID_VARIANTS = ("last", "src-dev", "ca", "trg-dev")


def run_probe(db, commands):
    """Run the commands one after another in a fresh Python; their results and the heavy modules it loaded."""
    arguments = [sys.executable, "-c", PROBE, str(db), json.dumps(commands), json.dumps(HEAVY_MODULES)]
    probe = subprocess.run(arguments, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout)


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def benchmark_table(path, mean):
    path.write_text(f"task,model,strategy,variant,runs,mean,std,draws\nnli,tiny-model,max-src-dev,ca,1,{mean},,\n")
    return str(path)


def assert_protocol_matches_brute_force(stdout, truth):
    rows = csv_rows(stdout)
    assert {row["task"] for row in rows} == set(truth.runs)
    assert len(rows) == len(truth.runs) * 8 * PROTOCOL_RUNS  # the paper's 8 strategy/variant pairs
    for row in rows:
        draws = recorded_draws(truth, row["task"])
        mean, std = brute_force_mean_std(truth, row["task"], row["strategy"], row["variant"], draws,
                                         int(row["runs"]))
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-5), row
        assert float(row["std"]) == pytest.approx(std, abs=1e-5), row


def assert_grid_matches_truth(stdout, runs):
    """One row per (learning rate, batch size): means over its seeds of the truth's scores."""
    seeds_of = {}
    for run in runs.values():
        seeds_of.setdefault((run["lr"], run["bs"]), []).append(run)
    rows = {(float(row["learning_rate"]), int(row["batch_size"])): row for row in csv_rows(stdout)}
    assert sorted(rows) == sorted(seeds_of)
    for config, row in rows.items():
        seeds = seeds_of[config]
        assert int(row["seeds"]) == len(seeds)
        for variant in GRID_VARIANTS:
            target = statistics.mean(run[f"target_{VARIANT_COLUMN[variant]}"] for run in seeds)
            assert float(row[f"{variant} target"]) == pytest.approx(target, abs=1e-5), (row, variant)
            if variant != "trg-dev":
                source = statistics.mean(run[f"source_dev_{VARIANT_COLUMN[variant]}"] for run in seeds)
                assert float(row[f"{variant} src-dev"]) == pytest.approx(source, abs=1e-5), (row, variant)


def test_statistics_commands_give_their_results_without_heavy_imports(write_synthetic_release, tmp_path):
    release, truth = write_synthetic_release()
    cell_mean, _ = brute_force_mean_std(truth, "nli", "max-src-dev", "ca", recorded_draws(truth, "nli"), 1)
    commands = {
        "import": ["import", "ofa-xlt", str(release)],
        "protocol": ["protocol", "--replay", "-R", str(PROTOCOL_RUNS), "--format", "csv"],
        "sql": ["sql", "SELECT count(DISTINCT run_id) AS runs FROM scores WHERE scored = 'run'", "--format", "csv"],
        "grid": ["grid", "--task", "nli", "--model", "tiny-model", "--format", "csv"],
        "check agreeing": ["check", benchmark_table(tmp_path / "agreeing.csv", cell_mean), "--replay"],
        "check disagreeing": ["check", benchmark_table(tmp_path / "disagreeing.csv", cell_mean + 1), "--replay"],
        "help": ["--help"],
        "protocol help": ["protocol", "--help"],
    }
    outcome = run_probe(tmp_path / "store.duckdb", commands)
    results = outcome["results"]
    exit_codes = {name: result["exit_code"] for name, result in results.items()}
    assert exit_codes == {name: 1 if name == "check disagreeing" else 0 for name in commands}, results
    assert outcome["heavy"] == []

    assert_protocol_matches_brute_force(results["protocol"]["stdout"], truth)
    assert results["sql"]["stdout"].split() == ["runs", str(sum(len(runs) for runs in truth.runs.values()))]
    assert_grid_matches_truth(results["grid"]["stdout"], truth.runs["nli"])
    assert "1 cells checked, 0 outside tolerance" in results["check agreeing"]["stdout"]
    assert "1 cells checked, 1 outside tolerance" in results["check disagreeing"]["stdout"]
    assert "Usage:" in results["help"]["stdout"] and "--replay" in results["protocol help"]["stdout"]


def test_sql_and_help_load_nothing_they_do_not_need(synthetic_store):
    """`sql` needs duckdb alone: the engine's modules, numpy and polars stay unloaded (start-up)."""
    unneeded = ["numpy", "polars", "ofa_eval.evaluation", "ofa_eval.averages.materialize", "torch"]
    arguments = [sys.executable, "-c", PROBE, str(synthetic_store.db),
                 json.dumps({"sql": ["sql", "SELECT count(*) AS n FROM runs"], "help": ["materialize", "--help"]}),
                 json.dumps(unneeded)]
    out = json.loads(subprocess.run(arguments, capture_output=True, text=True, timeout=300, check=True).stdout)
    assert out["results"]["sql"]["exit_code"] == 0 and out["results"]["help"]["exit_code"] == 0
    assert "--averages-per-job" in out["results"]["help"]["stdout"]
    assert out["heavy"] == []
