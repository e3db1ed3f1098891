"""Per-language gains (`ofa_eval.results.analysis.language_gains`), against brute-force loops.

On ingested synthetic runs (with per-example statistics) the reference re-selects runs by hand
from the raw gold and predicted labels and recomputes every accuracy for every resample; on the
paper's released results it rebuilds both strategies' per-language scores from the `scores` view.
"""

import duckdb
import numpy as np
import pytest

from ofa_eval.results.analysis import language_gains
from ofa_eval.evaluation import DrawOptions, ResamplingOptions, load_pool, sample_draws
from synthetic_runs import SUBJECTS

MODEL = "synthetic-model"
LANGUAGES = ("de", "sw")  # the store sorts 'xnli/de' before 'xnli/sw'
N_EXAMPLES = 40


def accuracy(pair, picks=None):
    gold, predicted = (np.asarray(x) for x in pair)
    correct = gold == predicted
    return 100.0 * (correct if picks is None else correct[picks]).mean()


def reference_gains(grid, pool, draws, r, n_resamples, seed, level, examples):
    """Brute force: max-src-dev LAST minus max-src-dev SRC-DEV per language at r, and its interval."""
    truth = {name: grid[name][1] for name in pool.external_id.values()}
    order = {lang: np.argsort(np.array([f"{lang}-test-{i}" for i in range(N_EXAMPLES)])) for lang in LANGUAGES}

    def subject(name, variant):
        source = [accuracy(truth[name][(s, "xnli", "en", "validation")]) for s in SUBJECTS[:10]]
        return SUBJECTS[9] if variant == "last" else SUBJECTS[int(np.argmax(source))]

    def selected(runs, variant):
        names = [pool.external_id[run] for run in runs[:r]]
        return names[int(np.argmax([accuracy(truth[n][(subject(n, variant), "xnli", "en", "validation")])
                                    for n in names]))]

    def score(runs, variant, lang, picks=None):
        name = selected(runs, variant)
        return accuracy(truth[name][(subject(name, variant), "xnli", lang, "test")],
                        None if picks is None else order[lang][picks])

    gains = np.array([[score(runs, "last", lang) - score(runs, "src-dev", lang) for lang in LANGUAGES]
                      for runs in draws.runs]).mean(axis=0)
    rng = np.random.default_rng(seed)
    example_picks = {lang: rng.integers(0, N_EXAMPLES, size=(n_resamples, N_EXAMPLES)) for lang in LANGUAGES
                     if examples}
    first_seen = {}
    groups = [first_seen.setdefault(frozenset(runs[:r]), len(first_seen)) for runs in draws.runs]
    group_picks = rng.integers(0, len(first_seen), size=(n_resamples, len(first_seen)))
    boot = np.empty((n_resamples, len(LANGUAGES)))
    for b in range(n_resamples):
        weights = np.array([np.sum(group_picks[b] == g) for g in groups], dtype=float)
        for i, lang in enumerate(LANGUAGES):
            picks = example_picks[lang][b] if examples else None
            per_draw = [score(runs, "last", lang, picks) - score(runs, "src-dev", lang, picks) for runs in draws.runs]
            boot[b, i] = np.dot(weights, per_draw) / weights.sum()
    alpha = (1 - level) / 2
    return gains, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)


@pytest.mark.parametrize("examples", [True, False])
def test_gains_match_a_brute_force_loop_over_raw_predictions(cli, ingested, examples):
    options, resampling = DrawOptions(n_draws=5, seed=2), ResamplingOptions(level=0.9, n_resamples=60, seed=4)
    with duckdb.connect(str(cli.db), read_only=True) as con:
        frame = language_gains(con, "nli", MODEL, ("max-src-dev", "last"), ("max-src-dev", "src-dev"), r=2,
                               draws=options, resampling=resampling, examples=examples, max_runs=3)
        pool = load_pool(con, "nli", MODEL)
    gains, low, high = reference_gains(ingested, pool, sample_draws(pool, 5, 3, seed=2), 2, 60, 4, 0.9, examples)
    assert frame["language"].to_list() == list(LANGUAGES) and frame["dataset"].to_list() == ["xnli", "xnli"]
    assert frame["n_examples"].to_list() == [N_EXAMPLES, N_EXAMPLES]
    assert frame["resampled"].to_list() == ["draws+examples" if examples else "draws"] * 2
    assert frame["gain"].to_list() == pytest.approx(list(gains), abs=1e-9)
    assert frame["ci_low"].to_list() == pytest.approx(list(low), abs=1e-9)
    assert frame["ci_high"].to_list() == pytest.approx(list(high), abs=1e-9)
    assert (frame["ci_low"] < frame["ci_high"]).all()


def test_automatic_resampling_uses_the_examples_where_the_store_has_them(cli, ingested):
    with duckdb.connect(str(cli.db), read_only=True) as con:
        frame = language_gains(con, "nli", MODEL, ("max-src-dev", "last"), ("max-trg-dev", "trg-dev"))
    assert frame["resampled"].unique().to_list() == ["draws+examples"]


RELEASE_TARGETS = """
SELECT s.run_id, s.average_id, s.dataset, s.language, s.value FROM scores s JOIN tasks t USING (task)
WHERE s.task = 'nli' AND s.model = 'xlm-roberta-large' AND s.role = 'target' AND s.split = 'test'
"""


def test_release_gains_are_the_per_language_differences_of_the_recorded_draws(release_store):
    with duckdb.connect(str(release_store), read_only=True) as con:
        frame = language_gains(con, "nli", "xlm-roberta-large", r=4, resampling=ResamplingOptions(n_resamples=200))
        draws = {}
        for draw, run_id in con.execute("SELECT draw, run_id FROM draws WHERE task = 'nli' AND model = "
                                        "'xlm-roberta-large' AND recipe = '*' ORDER BY draw, position").fetchall():
            draws.setdefault(draw, []).append(run_id)
        source = dict(con.execute(
            "SELECT run_id, value FROM scores WHERE task = 'nli' AND model = 'xlm-roberta-large' AND scored = 'run' "
            "AND variant = 'src-dev' AND role = 'source' AND split = 'validation'").fetchall())
        runs = {(run_id, f"{d}/{lang}"): v for run_id, d, lang, v in con.execute(
            "SELECT run_id, dataset, language, value FROM scores WHERE task = 'nli' AND model = 'xlm-roberta-large' "
            "AND scored = 'run' AND variant = 'src-dev' AND role = 'target' AND split = 'test'").fetchall()}
        averages = {(tuple(sorted(members)), f"{d}/{lang}"): v for members, d, lang, v in con.execute(
            "SELECT m.member_run_ids, s.dataset, s.language, s.value FROM scores s JOIN averaged_models m "
            "USING (average_id) WHERE m.task = 'nli' AND m.model = 'xlm-roberta-large' AND m.recipe = 'ca' "
            "AND m.approach = 'all' AND s.role = 'target' AND s.split = 'test'").fetchall()}
    names = [f"{d}/{lang}" for d, lang in zip(frame["dataset"], frame["language"])]
    assert len(names) == 25 and frame["n_examples"].null_count() == 25  # the release records no set sizes
    for name, gain in zip(names, frame["gain"]):
        differences = []
        for members in draws.values():
            first = members[:4]
            best = first[0]
            for run_id in first[1:]:
                best = run_id if source[run_id] > source[best] else best
            differences.append(averages[(tuple(sorted(first)), name)] - runs[(best, name)])
        assert gain == pytest.approx(np.mean(differences), abs=1e-9), name
    assert set(frame["resampled"]) == {"draws"} and set(frame["distinct_draws"]) == {10}
