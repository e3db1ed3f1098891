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
    runs = train_quickstart_grid(root, tasks=("nli",), progress=False, pretrain_steps=100)
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


def _sql_json(store, query):
    import json

    result = store("sql", query, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_greedy_soup_materializes_round_by_round(store):
    """The greedy path from the store's own source validation scores, walked by hand."""
    made = store("materialize", "--task", "nli", "--strategy", "greedy-soup", "--variant", "ca", "--draws", 1,
                 "--seed", 2, "-R", 3, "--out", store.averages)
    assert made.exit_code == 0, made.output
    result = store("protocol", "--task", "nli", "--strategy", "greedy-soup", "--variant", "ca", "--draws", 1,
                   "--seed", 2, "-R", 3, "--format", "json")
    assert result.exit_code == 0, result.output
    import json

    from ofa_eval.evaluation import load_pool, sample_draws
    from ofa_eval.store.database import connected

    with connected(str(store.db), read_only=True) as con:
        pool = load_pool(con, "nli", "tiny-xlmr")
    runs = sample_draws(pool, 1, 3, seed=2).runs[0]
    run_dev = {r["run_id"]: r["value"] for r in _sql_json(store, """
        SELECT s.run_id, s.value FROM scores s WHERE s.scored = 'run' AND s.variant = 'ca'
          AND s.role = 'source' AND s.split = 'validation' AND s.metric = 'accuracy'""")}
    averages = _sql_json(store, """
        SELECT a.member_run_ids, max(s.value) FILTER (WHERE s.role = 'source' AND s.split = 'validation') AS dev,
               avg(s.value) FILTER (WHERE s.role = 'target' AND s.split = 'test') AS test
        FROM averaged_models a JOIN scores s USING (average_id)
        WHERE a.recipe = 'ca' AND s.metric = 'accuracy' GROUP BY ALL""")
    by_members = {frozenset(row["member_run_ids"]): row for row in averages}
    run_test = {r["run_id"]: r["target_test"] for r in _sql_json(store, "SELECT * FROM run_variants WHERE variant='ca'")}
    for r, row in enumerate(json.loads(result.stdout), 1):
        ingredients = sorted(runs[:r], key=lambda i: -run_dev[i])
        soup, best = [ingredients[0]], run_dev[ingredients[0]]
        for ingredient in ingredients[1:]:
            candidate = by_members[frozenset(soup + [ingredient])]["dev"]
            if candidate >= best:
                soup, best = soup + [ingredient], candidate
        expected = run_test[soup[0]] if len(soup) == 1 else by_members[frozenset(soup)]["test"]
        assert row["mean"] == pytest.approx(expected, abs=1e-9)


def test_report_draws_greedy_soups_beside_other_strategies(store, tmp_path):
    """Every registered strategy has a plot style: greedy-soup once ended in a KeyError here."""
    options = ["--task", "nli", "--variant", "ca", "--draws", 1, "--seed", 2, "-R", 3]
    made = store("materialize", "--strategy", "greedy-soup", "--strategy", "accumulative", *options,
                 "--out", store.averages)
    assert made.exit_code == 0, made.output
    result = store("report", tmp_path / "report", "--strategy", "greedy-soup", "--strategy", "accumulative",
                   *options, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "greedy-soup" in markdown and "accumulative" in markdown
    assert (tmp_path / "report" / "nli-tiny-xlmr-curves.png").stat().st_size > 0


def test_soup_top_k_on_ingested_runs_averages_the_best_snapshots(store):
    made = store("materialize", "--task", "nli", "--strategy", "soup", "--soup-k", 3, "--draws", 1, "--seed", 5,
                 "-R", 2, "--out", store.averages)
    assert made.exit_code == 0, made.output
    result = store("protocol", "--task", "nli", "--strategy", "soup", "--soup-k", 3, "--draws", 1, "--seed", 5,
                   "-R", 2, "--format", "json")
    assert result.exit_code == 0, result.output
    snapshots = _sql_json(store, """
        SELECT sn.run_id, sn.snapshot_index, sn.weights_path, s.value FROM scores s
        JOIN snapshots sn USING (snapshot_id)
        WHERE s.scored = 'snapshot' AND s.role = 'source' AND s.split = 'validation' AND s.metric = 'accuracy'""")
    soups = _sql_json(store, "SELECT average_id, weights_path, member_run_ids FROM averaged_models "
                             "WHERE recipe = 'soup-top3'")
    assert soups
    for soup in soups:
        candidates = sorted((s for s in snapshots if s["run_id"] in set(soup["member_run_ids"])),
                            key=lambda s: -s["value"])
        chosen = candidates[:3]
        # the uniform average of the three best snapshots by English validation (ties broken either way)
        assert all(s["value"] >= candidates[3]["value"] for s in chosen)
        averaged = load_file(soup["weights_path"])
        members = [load_file(s["weights_path"]) for s in chosen]
        if candidates[2]["value"] > candidates[3]["value"]:
            for name, tensor in averaged.items():
                expected = np.mean([m[name].astype(np.float64) for m in members], axis=0)
                assert np.max(np.abs(tensor - expected)) <= 1e-6, name


def test_one_member_shortcut_matches_averaging_and_predicting(store, tmp_path):
    import polars as pl

    from ofa_eval.averages.materialize import make_average, plan
    from ofa_eval.evaluation import DrawOptions, pools_in_store
    from ofa_eval.store.database import connected
    from producers.predict import predict_with_weights

    with connected(str(store.db), read_only=True) as con:
        plans = plan(con, pools_in_store(con, ("nli",), ()), [("accumulative", "last")], DrawOptions(n_draws=1),
                     1)
    assert len(plans) == 1 and len(plans[0].member_files) == 1
    shortcut = make_average(plans[0], tmp_path / "shortcut", predict_with_weights)
    computed = make_average(plans[0], tmp_path / "computed", predict_with_weights, reuse_member_predictions=False)
    assert not (shortcut / "model.safetensors").exists() and (computed / "model.safetensors").exists()
    files = sorted(p.name for p in (computed / "predictions").glob("*.parquet"))
    assert files and files == sorted(p.name for p in (shortcut / "predictions").glob("*.parquet"))
    for name in files:
        ours = pl.read_parquet(shortcut / "predictions" / name).sort("example_id")
        theirs = pl.read_parquet(computed / "predictions" / name).sort("example_id")
        assert ours.equals(theirs), name


def test_materialization_jobs_through_submitit_match_local_ones(store, tmp_path, monkeypatch):
    """The SLURM path with submitit's local executor: the same folders, ingested alike."""
    from ofa_eval.commands.pipeline import executor_maker, materialize_here
    from ofa_eval.evaluation import DrawOptions

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    maker = executor_maker(tmp_path / "jobs", "local", {"timeout_min": 10})
    options = DrawOptions(n_draws=1, seed=9)
    made = materialize_here(str(store.db), ("nli",), (), [("accumulative", "src-dev")], options, 2,
                            tmp_path / "jobs", maker)
    assert made >= 1
    assert list((tmp_path / "jobs" / "_slurm").iterdir())  # submitit's job logs
    result = store("protocol", "--task", "nli", "--strategy", "accumulative", "--strategy", "max-src-dev",
                   "--variant", "src-dev", "--draws", 1, "--seed", 9, "-R", 2, "--format", "csv")
    rows = {(r["strategy"], int(r["runs"])): float(r["mean"]) for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows[("accumulative", 1)] == pytest.approx(rows[("max-src-dev", 1)], abs=1e-9)
    assert ("accumulative", 2) in rows
