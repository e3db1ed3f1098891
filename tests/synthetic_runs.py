"""Run folders in the artifact format (docs/artifacts.md) with random NLI predictions.

No torch: weights are small safetensors files written with numpy. The generator returns the
plain-Python truth (per snapshot and evaluation set: gold and predicted labels) so tests can
compute every score by hand.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
from safetensors.numpy import save_file

EVAL_SETS = [("xnli", "en", "validation", "source"), ("xnli", "de", "validation", "target"),
             ("xnli", "de", "test", "target"), ("xnli", "sw", "validation", "target"),
             ("xnli", "sw", "test", "target")]
SUBJECTS = [f"snapshot-{i:02d}" for i in range(1, 11)] + ["ca"]


def _name(dataset, language, split):
    return f"{dataset}__{language}__{split}.parquet"


def write_run(root: Path, name: str, lr: float, bs: int, seed: int, n_examples: int = 40,
              state: str = "complete") -> dict:
    """One NLI run folder; returns {(subject, dataset, language, split): (gold, predicted)}."""
    rng = random.Random(f"{name}-{seed}")
    run = root / name
    (run / "gold").mkdir(parents=True)
    (run / "weights").mkdir()
    truth, eval_sets = {}, []
    for dataset, language, split, role in EVAL_SETS:
        gold = [rng.randrange(3) for _ in range(n_examples)]
        ids = [f"{language}-{split}-{i}" for i in range(n_examples)]
        path = f"gold/{_name(dataset, language, split)}"
        pl.DataFrame({"example_id": ids, "label": gold}).write_parquet(run / path)
        eval_sets.append({"dataset": dataset, "language": language, "split": split, "role": role,
                          "gold": path, "n_examples": n_examples})
        for subject in SUBJECTS:
            accuracy = rng.random()
            predicted = [g if rng.random() < accuracy else (g + 1) % 3 for g in gold]
            folder = run / "predictions" / subject
            folder.mkdir(parents=True, exist_ok=True)
            # shuffled rows: ingest must join on example_id, not rely on order
            order = list(range(n_examples))
            rng.shuffle(order)
            pl.DataFrame({"example_id": [ids[i] for i in order], "label": [predicted[i] for i in order]}
                         ).write_parquet(folder / _name(dataset, language, split))
            truth[(subject, dataset, language, split)] = (gold, predicted)
    snapshots = []
    for index in range(1, 11):
        weights = f"weights/snapshot-{index:02d}.safetensors"
        save_file({"w": np.full((4, 4), index, dtype=np.float32)}, str(run / weights))
        snapshots.append({"index": index, "step": index * 7, "epoch": index / 10 * 3, "weights": weights,
                          "sha256": None, "bytes": (run / weights).stat().st_size})
    save_file({"w": np.full((4, 4), 5.5, dtype=np.float32)}, str(run / "weights/ca.safetensors"))
    manifest = {"format_version": 1, "state": state, "task": "nli", "model": "synthetic-model",
                "learning_rate": lr, "batch_size": bs, "seed": seed, "epochs": 3, "snapshots": snapshots,
                "ca": {"weights": "weights/ca.safetensors", "sha256": None, "bytes": None},
                "eval_sets": eval_sets, "label_names": ["entailment", "neutral", "contradiction"]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return truth


def write_grid(root: Path) -> dict:
    """3 learning rates x 2 batch sizes x 2 seeds; returns {run name: (config, truth)}."""
    runs = {}
    for lr in (1e-5, 2e-5, 3e-5):
        for bs in (16, 32):
            for seed in (1, 2):
                name = f"nli-lr{lr}-bs{bs}-seed{seed}"
                runs[name] = ((lr, bs), write_run(root, name, lr, bs, seed))
    return runs
