"""The whole pipeline on real (tiny) training: producers -> ingest -> materialize -> protocol.

One NLI quickstart grid is trained once per test session (about a minute on 2 cores); the tests
then check the averaging path against independent references: a one-member average predicts
exactly like its member, averaged weights equal a numpy mean, and a second call makes nothing.
"""

import csv
import io

import numpy as np
import pytest
from safetensors.numpy import load_file


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from producers.quickstart import train_quickstart_grid

    root = tmp_path_factory.mktemp("quickstart")
    runs = train_quickstart_grid(root, tasks=("nli",), progress=False)
    return root, runs


@pytest.fixture
def store(trained, cli):
    root, runs = trained
    result = cli("ingest", runs, "--quiet")
    assert result.exit_code == 0, result.output
    cli.averages = root / "averages-test"
    return cli


def protocol_csv(store, *extra):
    result = store("protocol", "--task", "nli", "--strategy", "accumulative", "--strategy", "max-src-dev",
                   "--variant", "ca", "--draws", 2, "--seed", 4, "-R", 2, "--format", "csv", *extra)
    assert result.exit_code == 0, result.output
    return {(r["strategy"], int(r["runs"])): float(r["mean"]) for r in csv.DictReader(io.StringIO(result.stdout))}


def test_materialize_then_protocol(store):
    made = store("materialize", "--task", "nli", "--strategy", "accumulative", "--variant", "ca",
                 "--draws", 2, "--seed", 4, "-R", 2, "--out", store.averages)
    assert made.exit_code == 0, made.output
    count = int(made.stdout.split()[0])
    assert 2 <= count <= 4
    table = protocol_csv(store)
    # a one-run average is that run's CA model: same predictions, same score
    assert table[("accumulative", 1)] == pytest.approx(table[("max-src-dev", 1)], abs=1e-9)
    again = store("materialize", "--task", "nli", "--strategy", "accumulative", "--variant", "ca",
                  "--draws", 2, "--seed", 4, "-R", 2, "--out", store.averages)
    assert again.stdout.startswith("0 averaged model(s)")
    assert protocol_csv(store, "--materialize") == table


def test_averaged_weights_are_the_numpy_mean_of_the_members(store):
    store("materialize", "--task", "nli", "--strategy", "accumulative", "--variant", "ca", "--draws", 2,
          "--seed", 4, "-R", 2, "--out", store.averages)
    rows = store("sql", "SELECT a.weights_path, list(w.weights_path ORDER BY m.position) AS members "
                        "FROM averaged_models a JOIN average_member_table m USING (average_id) "
                        "JOIN run_weights w ON w.run_id = m.run_id AND w.variant = 'ca' "
                        "WHERE a.n_members = 2 GROUP BY ALL", "--format", "json").stdout
    import json

    pairs = json.loads(rows)
    assert pairs
    for row in pairs:
        averaged = load_file(row["weights_path"])
        members = [load_file(path) for path in row["members"]]
        for name, tensor in averaged.items():
            expected = np.mean([m[name].astype(np.float64) for m in members], axis=0)
            assert np.max(np.abs(tensor - expected)) <= 1e-6, name


def test_joint_bootstrap_pairs_averages_with_runs(store):
    """Averaged models get per-example statistics too, resampled with the runs' own resamples:
    at r = 1 the average is the run's CA model, so both intervals must be identical."""
    made = store("materialize", "--task", "nli", "--strategy", "accumulative", "--variant", "ca",
                 "--draws", 2, "--seed", 4, "-R", 2, "--out", store.averages)
    assert made.exit_code == 0, made.output
    result = store("protocol", "--task", "nli", "--strategy", "accumulative", "--strategy", "max-src-dev",
                   "--variant", "ca", "--draws", 2, "--seed", 4, "-R", 2, "--ci", 95, "--bootstrap", 300,
                   "--resample", "draws+examples", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {(r["strategy"], int(r["runs"])): r for r in csv.DictReader(io.StringIO(result.stdout))}
    for bound in ("ci_low", "ci_high"):
        assert float(rows[("accumulative", 1)][bound]) == pytest.approx(float(rows[("max-src-dev", 1)][bound]),
                                                                      abs=1e-9)
    for row in rows.values():
        assert float(row["ci_low"]) < float(row["mean"]) + 1e-9 and float(row["mean"]) < float(row["ci_high"]) + 1e-9
