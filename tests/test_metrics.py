"""Task metrics against independent references: seqeval for NER, a transcription of the
official SQuAD v1.1 evaluation script for QA, and hand-computed values."""

import collections
import re
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.metrics import drop_entity_types, extract_entities
from ofa_eval.tasks.registry import get_task, task_names

MASAKHANER = Path(__file__).resolve().parents[2] / "shared" / "masakhaner2-sample"
MASAKHANER_TAGS = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC", "DATE") for p in "BI"]


# --- reference: the SQuAD v1.1 evaluation script, transcribed -----------------------------------


def squad_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction, ground_truth):
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact_match_score(prediction, ground_truth):
    return squad_normalize_answer(prediction) == squad_normalize_answer(ground_truth)


def squad_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def squad_evaluate(golds, preds):
    f1 = exact_match = 0
    for ground_truths, prediction in zip(golds, preds):
        exact_match += squad_metric_max_over_ground_truths(squad_exact_match_score, prediction, ground_truths)
        f1 += squad_metric_max_over_ground_truths(squad_f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_match / len(golds), "f1": 100.0 * f1 / len(golds)}


# --- helpers ------------------------------------------------------------------------------------


def seqeval_scores(gold, pred):
    """Micro precision/recall/F1 in percent from seqeval's default (non-strict) mode."""
    return {
        "f1": 100 * f1_score(gold, pred, zero_division=0),
        "precision": 100 * precision_score(gold, pred, zero_division=0),
        "recall": 100 * recall_score(gold, pred, zero_division=0),
    }


def random_tag_sequences(rng, n_sentences, prefixes="BI", types=("PER", "ORG", "LOC", "DATE")):
    """Messy tag sequences: I- after O, type switches inside entities, empty sentences."""
    labels = ["O"] + [f"{p}-{t}" for t in types for p in prefixes]
    weights = np.array([4.0] + [1.0] * (len(labels) - 1))
    lengths = rng.integers(0, 16, size=n_sentences)
    return [list(rng.choice(labels, size=length, p=weights / weights.sum())) for length in lengths]


def perturb(rng, tag_sequences, labels, rate):
    """A copy with each tag replaced by a random label with probability `rate`."""
    return [[str(rng.choice(labels)) if rng.random() < rate else tag for tag in tags] for tags in tag_sequences]


def read_masakhaner(language, split):
    """Tag sequences of a sample file, parsed here without the project's reader."""
    if not MASAKHANER.is_dir():
        pytest.skip(f"the MasakhaNER 2.0 sample is not at {MASAKHANER} (it lives in ../shared beside the repo)")
    text = (MASAKHANER / language / f"{split}.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.split("\n\n") if block.strip()]
    return [[line.split()[-1] for line in block.strip().split("\n")] for block in blocks]


# --- NLI ----------------------------------------------------------------------------------------


def test_nli_accuracy_hand_computed():
    metric = get_task("nli").metric
    stats = metric.example_stats([0, 1, 2, 1], [0, 2, 2, 1])
    assert stats["correct"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert metric.aggregate(stats) == {"accuracy": 75.0}
    assert metric.compute([2, 2, 0], [1, 0, 0])["accuracy"] == pytest.approx(100 / 3)


def test_nli_rejects_mismatched_or_empty_input():
    metric = get_task("nli").metric
    with pytest.raises(ValueError, match="3 examples but pred has 2"):
        metric.example_stats([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="no examples"):
        metric.example_stats([], [])


# --- QA -----------------------------------------------------------------------------------------

QA_CASES = [
    (["Eiffel Tower"], "the Eiffel Tower!"),
    (["Paris"], "in Paris, France"),
    (["whale", "the blue whale"], "Blue whale."),
    (["An"], ""),  # both normalise to "": EM 1 but F1 0 under v1.1
    (["1,000 km"], "1000 km"),
    (["Zürich"], "ZÜRICH"),
    (["«the» capital"], "the capital"),  # Unicode guillemets are not removed by v1.1
    (["İstanbul"], "istanbul"),  # 'İ'.lower() is two code points, so no match
    (["東京 都"], "東京"),
    (["naïve   approach"], "a naïve\tapproach"),
    (["a"], "an the a"),
    (["x y x"], "x x"),
]


def test_qa_hand_computed_values():
    metric = get_task("qa").metric
    golds, preds = zip(*QA_CASES[:4])
    stats = metric.example_stats(golds, preds)
    assert stats["exact_match"].tolist() == [1.0, 0.0, 1.0, 1.0]
    # "in paris france" vs "paris": precision 1/3, recall 1 -> F1 0.5
    assert stats["f1"].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.0])
    assert metric.aggregate(stats) == pytest.approx({"f1": 62.5, "exact_match": 75.0})


@pytest.mark.parametrize("gold_answers, prediction", QA_CASES)
def test_qa_matches_squad_script_on_hand_written_cases(gold_answers, prediction):
    stats = get_task("qa").metric.example_stats([gold_answers], [prediction])
    assert stats["f1"][0] == pytest.approx(
        squad_metric_max_over_ground_truths(squad_f1_score, prediction, gold_answers), abs=1e-12)
    assert stats["exact_match"][0] == squad_metric_max_over_ground_truths(
        squad_exact_match_score, prediction, gold_answers)


def test_qa_matches_squad_script_on_random_cases():
    rng = np.random.default_rng(1234)
    vocabulary = ["The", "the", "a", "An", "Paris", "paris", "river", "Río", "Ñandú", "2,5", "km.",
                  "«", "»", "(", ")", "'s", "don't", "x-ray", "日本", "Σίσυφος", "--", "!", "and"]
    separators = [" ", "  ", "\t", "\u00a0", "", "\n"]

    def random_text(max_words):
        words = rng.choice(vocabulary, size=rng.integers(0, max_words + 1))
        return "".join(str(word) + str(rng.choice(separators)) for word in words)

    golds = [[random_text(5) for _ in range(rng.integers(1, 4))] for _ in range(400)]
    preds = [random_text(6) if rng.random() < 0.6 else str(rng.choice(golds[i])) for i in range(400)]
    metric = get_task("qa").metric
    stats = metric.example_stats(golds, preds)
    expected_f1 = [squad_metric_max_over_ground_truths(squad_f1_score, p, g) for g, p in zip(golds, preds)]
    expected_em = [squad_metric_max_over_ground_truths(squad_exact_match_score, p, g) for g, p in zip(golds, preds)]
    assert stats["f1"] == pytest.approx(expected_f1, abs=1e-12)
    assert stats["exact_match"].tolist() == [float(em) for em in expected_em]
    assert 0 < stats["f1"].mean() < 1 and 0 < stats["exact_match"].mean() < 1  # the cases are mixed
    assert metric.aggregate(stats) == pytest.approx(squad_evaluate(golds, preds), abs=1e-9)
    # a second subject scored against the same gold: every string's normalisation now comes from the cache
    again = metric.example_stats(golds, preds)
    assert again["f1"].tolist() == stats["f1"].tolist() and again["exact_match"].tolist() == expected_em


def test_qa_rejects_bad_gold():
    metric = get_task("qa").metric
    with pytest.raises(ValueError, match="QA example 1 has no gold answers"):
        metric.example_stats([["a"], []], ["a", "b"])
    with pytest.raises(ValueError, match="list of answer strings"):
        metric.example_stats(["Paris"], ["Paris"])
    with pytest.raises(ValueError, match="2 examples but pred has 1"):
        metric.example_stats([["a"], ["b"]], ["a"])


# --- NER ----------------------------------------------------------------------------------------


def test_ner_entities_match_seqeval_get_entities():
    rng = np.random.default_rng(7)
    for tags in random_tag_sequences(rng, 500) + random_tag_sequences(rng, 300, prefixes="BIES"):
        assert extract_entities(tags) == set(get_entities(tags)), tags


def test_ner_hand_written_edge_cases():
    # I- after O starts an entity; a type change ends one; B- ends the previous one.
    assert extract_entities(["O", "I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC", "B-LOC"]) == {
        ("PER", 1, 2), ("LOC", 3, 3), ("LOC", 4, 5), ("LOC", 6, 6)}
    assert extract_entities(["B-PER", "E-PER", "I-PER", "S-ORG", "E-ORG"]) == {
        ("PER", 0, 1), ("PER", 2, 2), ("ORG", 3, 3), ("ORG", 4, 4)}
    metric = get_task("ner").metric
    scores = metric.compute([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    assert scores == pytest.approx({"f1": 50.0, "precision": 50.0, "recall": 50.0})
    assert metric.compute([["O", "O"]], [["O", "O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_ner_scores_match_seqeval_on_random_sequences(prefixes):
    rng = np.random.default_rng(42)
    labels = ["O"] + [f"{p}-{t}" for t in ("PER", "ORG", "LOC", "DATE") for p in prefixes]
    metric = get_task("ner").metric
    for _ in range(20):
        gold = random_tag_sequences(rng, 60, prefixes=prefixes)
        pred = perturb(rng, gold, labels, rate=rng.uniform(0.0, 0.6))
        assert metric.compute(gold, pred) == pytest.approx(seqeval_scores(gold, pred), abs=1e-9)


def test_ner_counts_match_seqeval_get_entities():
    rng = np.random.default_rng(3)
    gold = random_tag_sequences(rng, 300)
    pred = perturb(rng, gold, MASAKHANER_TAGS, rate=0.3)
    stats = get_task("ner").metric.example_stats(gold, pred)
    gold_entities = [set(get_entities(tags)) for tags in gold]
    pred_entities = [set(get_entities(tags)) for tags in pred]
    assert stats["n_gold"].tolist() == [len(entities) for entities in gold_entities]
    assert stats["n_pred"].tolist() == [len(entities) for entities in pred_entities]
    assert stats["tp"].tolist() == [len(g & p) for g, p in zip(gold_entities, pred_entities)]
    assert stats["n_gold"].sum() == len(get_entities(gold))  # seqeval's flattened count agrees


@pytest.mark.parametrize("language, split", [("hau", "dev"), ("pcm", "test"), ("yor", "dev")])
def test_ner_scores_match_seqeval_on_masakhaner(language, split):
    gold = read_masakhaner(language, split)
    rng = np.random.default_rng(11)
    pred = perturb(rng, gold, MASAKHANER_TAGS, rate=0.1)
    metric = get_task("ner").metric
    scores = metric.compute(gold, pred)
    assert scores == pytest.approx(seqeval_scores(gold, pred), abs=1e-9)
    assert 40 < scores["f1"] < 95  # a 10% tag corruption leaves a plausible score
    assert metric.compute(gold, gold) == pytest.approx({"f1": 100.0, "precision": 100.0, "recall": 100.0})
    # DATE mapped to O on both sides, as for a model trained on WikiANN's PER/ORG/LOC.
    gold_no_date = drop_entity_types(gold, {"DATE"})
    pred_no_date = drop_entity_types(pred, {"DATE"})
    assert metric.compute(gold_no_date, pred_no_date) == pytest.approx(
        seqeval_scores(gold_no_date, pred_no_date), abs=1e-9)


def test_drop_entity_types():
    tags = [["B-DATE", "I-DATE", "O", "B-PER"], ["I-DATE", "B-LOC", "S-DATE", "E-DATE"], []]
    assert drop_entity_types(tags, {"DATE"}) == [["O", "O", "O", "B-PER"], ["O", "B-LOC", "O", "O"], []]
    assert drop_entity_types(tags, set()) == tags
    assert drop_entity_types([["B-PER", "I-ORG"]], {"PER", "ORG"}) == [["O", "O"]]


def test_ner_rejects_bad_input():
    metric = get_task("ner").metric
    with pytest.raises(ValueError, match="NER sentence 1: gold has 2 tags but pred has 1"):
        metric.example_stats([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="NER sentence 0: not an IOB/IOBES tag: 'PER'"):
        metric.example_stats([["PER"]], [["O"]])
    with pytest.raises(ValueError, match="no examples"):
        metric.example_stats([], [])


# --- vectorized aggregation and the registry ----------------------------------------------------


def example_stats_per_task():
    rng = np.random.default_rng(5)
    gold_tags = random_tag_sequences(rng, 80)
    gold_answers = [["the answer", "an answer here"], ["Paris"], ["x"]] * 20
    predictions = ["answer", "Paris!", "y"] * 20
    return {
        "nli": get_task("nli").metric.example_stats(rng.integers(0, 3, 90), rng.integers(0, 3, 90)),
        "qa": get_task("qa").metric.example_stats(gold_answers, predictions),
        "ner": get_task("ner").metric.example_stats(gold_tags, perturb(rng, gold_tags, MASAKHANER_TAGS, 0.3)),
    }


@pytest.mark.parametrize("task", ["nli", "qa", "ner"])
def test_aggregate_is_vectorized_over_leading_axes(task):
    metric = get_task(task).metric
    stats = example_stats_per_task()[task]
    n = len(next(iter(stats.values())))
    resamples = np.random.default_rng(9).integers(0, n, size=(2, 3, n))
    batched = metric.aggregate({key: values[resamples] for key, values in stats.items()})
    assert set(batched) == set(metric.names)
    for name in metric.names:
        assert batched[name].shape == (2, 3)
        for i, j in np.ndindex(2, 3):
            single = metric.aggregate({key: values[resamples[i, j]] for key, values in stats.items()})
            assert isinstance(single[name], float)
            assert batched[name][i, j] == pytest.approx(single[name], abs=1e-10)


def test_aggregate_rejects_zero_examples():
    with pytest.raises(ValueError, match="zero examples"):
        get_task("nli").metric.aggregate({"correct": np.zeros((4, 0))})


def test_registry_and_unknown_task():
    assert sorted(task_names()) == ["ner", "nli", "qa"]
    assert (get_task("nli").metric.name, get_task("qa").metric.name, get_task("ner").metric.name) == ("accuracy", "f1", "f1")
    assert get_task("qa").metric.names == ("f1", "exact_match")
    assert set(get_task("ner").metric.names) == {"f1", "precision", "recall"}
    with pytest.raises(OfaError) as error:
        get_task("pos").metric
    assert str(error.value) == "unknown task 'pos' (known: ner, nli, qa)"


def test_metrics_import_no_heavy_or_reference_libraries():
    code = ("import sys, ofa_eval.tasks.metrics, producers.formats; "
            "print(sorted(m for m in ('torch', 'transformers', 'seqeval') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
