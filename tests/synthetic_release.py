"""A small random release in the ofa-xlt file format, with its quirks, for importer and protocol tests.

The generator keeps the plain-Python truth (every run's scores, every draw) so tests can compute
the expected protocol results by brute force, independently of the store and the engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import polars as pl

LEARNING_RATES = (1e-5, 2e-5, 3e-5)
BATCH_SIZES = (16, 32)
SEEDS_PER_CONFIG = 2
RELEASE_VARIANTS = ("last", "oracle-source", "avg-ckpt", "oracle")
SOURCE_DEV = {"last": "validation_last", "oracle-source": "validation_oracle-source", "avg-ckpt": "validation_avg-ckpt"}

# task -> (zs file, ra file, dataset prefix in the ra file, metric, target (dataset, language) pairs, fractions)
TASKS = {
    "nli": ("nli_zs", "nli_ra", None, "acc", [("xnli", "de"), ("xnli", "sw"), ("indicxnli", "hi")], True),
    "tydiqa": ("tydiqa_zs", "tyqa_ra", "ydiqa", "f1", [("tydiqa", "ar"), ("tydiqa", "fi")], False),
    "ner": ("ner_zs", "ner_ra", None, "f1", [("wikiann", "de"), ("masakhaner2", "yor")], True),
}
SOURCE = {"nli": "xnli", "tydiqa": "tydiqa", "ner": "wikiann"}
RECIPE_WEIGHTS = {"last": "ralast", "src-dev": "rasrcdev", "ca": "raca", "soup-top5": "ratop5"}


@dataclass
class SyntheticRelease:
    runs: dict[str, dict] = field(default_factory=dict)  # task -> id -> run record (percent)
    draws: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # task -> seed -> ids
    averages: dict[str, dict[tuple[str, tuple[str, ...]], float]] = field(default_factory=dict)


def _score(rng: random.Random, fractions: bool) -> float:
    # few distinct values, so that ties in the selection criterion happen
    value = rng.choice([60.0, 61.5, 62.25, 63.0, 64.75, 66.0, 70.5])
    return value / 100 if fractions else value


def write_release(directory, model="tiny-model", n_draws=3, max_r=4, seed=0, drop=None) -> SyntheticRelease:
    """Write the six release files into `directory`; `drop` names a file to leave out."""
    rng = random.Random(seed)
    truth = SyntheticRelease()
    for task, (zs_name, ra_name, ra_prefix, metric, targets, fractions) in TASKS.items():
        scale = 100.0 if fractions else 1.0
        runs = _runs(rng, task, model, metric, targets, fractions)
        truth.runs[task] = {row["id"]: _percent_record(row, metric, targets, scale) for row in runs}
        draws = _draws(rng, runs, n_draws, max_r)
        truth.draws[task] = draws
        averages, ra_rows = _averages(rng, task, model, draws, metric, targets, fractions, ra_prefix, scale)
        truth.averages[task] = averages
        if drop != zs_name:
            pl.DataFrame(runs).write_parquet(directory / f"{zs_name}.parquet")
        if drop != ra_name:
            pl.DataFrame(ra_rows).write_parquet(directory / f"{ra_name}.parquet")
    return truth


def _runs(rng, task, model, metric, targets, fractions):
    rows = []
    for lr in LEARNING_RATES:
        for bs in BATCH_SIZES:
            for s in range(SEEDS_PER_CONFIG):
                row = {"kind": "single", "model": model, "lr": lr, "epochs": 10, "bs": bs,
                       "seed": rng.randrange(10**6), "scheduler": 0.1, "id": f"{task}-{lr}-{bs}-{s}"}
                for column in list(SOURCE_DEV.values()) + ["validation_oracle"]:
                    row[column] = _score(rng, fractions)
                for dataset, language in targets + [(SOURCE[task], "en")]:
                    for variant in RELEASE_VARIANTS:
                        row[f"{dataset}_{language}_{metric}_{variant}"] = _score(rng, fractions)
                rows.append(row)
    return rows


def _percent_record(row, metric, targets, scale):
    record = {"lr": row["lr"], "bs": row["bs"]}
    for variant in RELEASE_VARIANTS:
        values = [row[f"{d}_{lang}_{metric}_{variant}"] * scale for d, lang in targets]
        record[f"target_{variant}"] = sum(values) / len(values)
    for variant, column in SOURCE_DEV.items():
        record[f"source_dev_{variant}"] = row[column] * scale
    record["target_dev"] = row["validation_oracle"] * scale
    return record


def _draws(rng, runs, n_draws, max_r):
    by_config = {}
    for row in runs:
        by_config.setdefault((row["lr"], row["bs"]), []).append(row["id"])
    draws = {}
    for d in range(n_draws):
        configs = rng.sample(sorted(by_config), max_r)
        draws[str(d)] = [rng.choice(by_config[c]) for c in configs]
    return draws


def _averages(rng, task, model, draws, metric, targets, fractions, ra_prefix, scale):
    truth, rows = {}, []
    for seed, ids in draws.items():
        for recipe, weights in RECIPE_WEIGHTS.items():
            for r in range(1, len(ids) + 1):
                row = {"weights": weights, "approach": "all", "num_models": str(r), "model": model,
                       "lr": "2e-05", "epochs": "10", "bs": "32", "seed": seed, "scheduler": "0.1",
                       "ids": ids[:r]}
                values = []
                # the same member set is the same model: its scores depend on the set alone
                model_rng = random.Random(f"{task}|{recipe}|{sorted(ids[:r])}")
                for dataset, language in targets + [(SOURCE[task], "en")]:
                    prefix = ra_prefix or dataset
                    value = _score(model_rng, fractions)
                    row[f"{prefix}_{language}_{metric}"] = value
                    if language != "en":
                        values.append(value * scale)
                rows.append(row)
                truth[(recipe, tuple(sorted(ids[:r])))] = sum(values) / len(values)
    return truth, rows
