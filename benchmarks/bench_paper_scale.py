"""Ingest at the paper's scale: run folders with the real example counts of its three tasks.

Run folders in the artifact format (docs/artifacts.md): 7 learning rates x 3 batch sizes x N
seeds (N = 3: the paper's 63 runs; N = 30: 630), 10 snapshots + CA (tiny safetensors weights,
bench_scale.write_weights), random predictions. Example counts per evaluation set:

- NLI, XNLI: English source validation 2,490; 15 target languages (bench_scale.TARGETS), each
  validation 2,490 and test 5,010 (XNLI's dev and test sizes). 31 sets, 115,000 examples.
- QA, TyDiQA-GoldP (9 languages): English source validation 440 (the GoldP dev set); the 8
  other languages' GoldP dev sets (ar 921, bn 113, fi 782, id 565, ko 276, ru 812, sw 499,
  te 669; GoldP has no public test set) split into validation (first half, rounded down) and
  test (the rest). 17 sets, 5,077 examples.
- NER: WikiANN (XTREME splits) English source validation 10,000; 24 WikiANN targets with
  validation and test of 10,000 each (ar bg de el es fi fr he hi hu ja ru tr vi zh), 1,000
  (sw ta te ur) or 100 (am ay ig qu rw yo); MasakhaNER 1.0 (10 languages: amh hau ibo kin lug
  luo pcm swa wol yor) at about 300 validation / 600 test sentences each; MasakhaNER 2.0
  (19 languages) at the ../shared/masakhaner2-sample counts for hau 816/1,633, pcm 806/1,613,
  swa 942/1,883, yor 983/1,964, and 900/1,800 for the 15 others. 107 sets, 418,914 sentences
  of 14 tokens. `--scale` multiplies every count (at least 20): NER at full size is about
  4.6 million sentences per run, more than this 2-core machine scores in a session.

Per task and size, after generating the folders and `sync` (so that their write-back does not
land on one of the two timings), `--repeats` times (default once): `ofa-eval ingest --workers W`
into a fresh store, in one process (wall time, peak RSS: ru_maxrss, the largest process of its
tree; store size), then the floor: ONE DuckDB pass (`read_parquet` over every prediction file
with its gold file joined on example_id) computing the same per-file scores (accuracy; SQuAD F1;
entity F1) into a table. Each floor's snapshot scores are checked against the store's (the floor
must compute what ingest does). The best ingest is compared with the best floor.
On NLI, the joint draws x examples bootstrap (`protocol --resample draws+examples`,
JOINT_BOOTSTRAP) as a whole process. Then start-up of `sql`, `grid`, `check`, `protocol`
(bench_scale.startup) against `python -c "import duckdb, polars"`.

    python benchmarks/bench_paper_scale.py --task nli --seeds 3 --repeats 3 --workers 2
    python benchmarks/bench_paper_scale.py --task nli --seeds 30 --workers 2
    python benchmarks/bench_paper_scale.py --task qa --seeds 3 30 --workers 2
    python benchmarks/bench_paper_scale.py --task ner --seeds 3 30 --scale 0.02 --workers 2

Results: benchmarks/results/paper-scale-cpu.json (appended per task and size) and
paper-scale-cpu.md (by hand). Generated run folders are removed after measuring unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "paper-scale"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_protocol import machine, ofa_eval_command  # noqa: E402
from bench_scale import BATCH_SIZES, LEARNING_RATES, SUBJECTS, TARGETS, measured, startup, write_weights  # noqa: E402

TYDIQA_DEV = {"ar": 921, "bn": 113, "fi": 782, "id": 565, "ko": 276, "ru": 812, "sw": 499, "te": 669}
WIKIANN = {**{lang: 10_000 for lang in "ar bg de el es fi fr he hi hu ja ru tr vi zh".split()},
           **{lang: 1_000 for lang in "sw ta te ur".split()}, **{lang: 100 for lang in "am ay ig qu rw yo".split()}}
MASAKHANER = {lang: (300, 600) for lang in "amh hau ibo kin lug luo pcm swa wol yor".split()}
MASAKHANER2 = {**{lang: (900, 1_800) for lang in "bam bbj ewe fon ibo kin lug mos nya sna tsn twi wol xho zul".split()},
               "hau": (816, 1_633), "pcm": (806, 1_613), "swa": (942, 1_883), "yor": (983, 1_964)}
NER_TAGS = np.array(["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"])
QA_WORDS = np.array(["the", "a", "river", "Paris,", "1990", "north-east", "city.", "an", "old", "king's", "(third)"])
SENTENCE_LENGTH = 14


def eval_sets(task: str, scale: float) -> list[tuple[str, str, str, str, int]]:
    """(dataset, language, split, role, n_examples) of every evaluation set, the paper's counts times `scale`."""
    if task == "nli":
        sets = [("xnli", "en", "validation", "source", 2_490)]
        sets += [("xnli", lang, split, "target", n) for lang in TARGETS for split, n in (("validation", 2_490),
                                                                                          ("test", 5_010))]
    elif task == "qa":
        sets = [("tydiqa", "en", "validation", "source", 440)]
        sets += [("tydiqa", lang, split, "target", n) for lang, dev in TYDIQA_DEV.items()
                 for split, n in (("validation", dev // 2), ("test", dev - dev // 2))]
    else:
        sets = [("wikiann", "en", "validation", "source", 10_000)]
        sets += [("wikiann", lang, split, "target", n) for lang, n in WIKIANN.items() for split in ("validation", "test")]
        sets += [(dataset, lang, split, "target", n) for dataset, sizes in (("masakhaner", MASAKHANER),
                                                                           ("masakhaner2", MASAKHANER2))
                 for lang, counts in sizes.items() for split, n in zip(("validation", "test"), counts)]
    return [(d, lang, split, role, max(20, round(n * scale))) for d, lang, split, role, n in sets]


# --- gold and predicted values, by task ------------------------------------------------------------

def nli_values(rng, n: int):
    gold = rng.integers(0, 3, n)
    return {"label": gold}, lambda: {"label": np.where(rng.random(n) > rng.uniform(0.4, 0.9), (gold + 1) % 3, gold)}


def qa_values(rng, n: int):
    answers = [" ".join(rng.choice(QA_WORDS, rng.integers(1, 4))) for _ in range(n)]
    gold = pa.array([[a] for a in answers], pa.list_(pa.string()))

    def predicted():
        keep = rng.random(n) < rng.uniform(0.3, 0.8)
        other = [" ".join(rng.choice(QA_WORDS, rng.integers(1, 4))) for _ in range(n)]
        return {"answer": pa.array(np.where(keep, answers, other), pa.string())}
    return {"answers": gold}, predicted


def _tag_lists(tags: np.ndarray) -> pa.Array:
    n = len(tags) // SENTENCE_LENGTH
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * SENTENCE_LENGTH, pa.int32()), pa.array(tags))


def ner_values(rng, n: int):
    gold = NER_TAGS[rng.choice(len(NER_TAGS), n * SENTENCE_LENGTH, p=[0.7, .05, .05, .05, .05, .05, .05])]

    def predicted():
        flip = rng.random(len(gold)) > rng.uniform(0.7, 0.97)
        return {"tags": _tag_lists(np.where(flip, NER_TAGS[rng.integers(0, len(NER_TAGS), len(gold))], gold))}
    return {"tags": _tag_lists(gold)}, predicted


VALUES = {"nli": nli_values, "qa": qa_values, "ner": ner_values}
DATASET_LABELS = {"nli": ["entailment", "neutral", "contradiction"], "ner": list(NER_TAGS)}


def write_run(root: Path, task: str, name: str, config: tuple, sets: list, rng) -> None:
    """One complete run folder of `task` with random predictions for every subject."""
    run = root / name
    for folder in ["gold", "weights"] + [f"predictions/{s}" for s in SUBJECTS]:
        (run / folder).mkdir(parents=True)
    records = []
    for dataset, language, split, role, n in sets:
        file = f"{dataset}__{language}__{split}.parquet"
        ids = pa.array([f"{language}-{split}-{i:05d}" for i in range(n)])
        gold, predicted = VALUES[task](rng, n)
        pq.write_table(pa.table({"example_id": ids, **gold}), run / "gold" / file)
        for subject in SUBJECTS:
            pq.write_table(pa.table({"example_id": ids, **predicted()}), run / "predictions" / subject / file)
        records.append({"dataset": dataset, "language": language, "split": split, "role": role,
                        "gold": f"gold/{file}", "n_examples": n})
    lr, bs, seed = config
    snapshots = [{"index": i, "step": i * 100, "epoch": i / 10 * 2, "weights": f"weights/snapshot-{i:02d}.safetensors",
                  "sha256": f"{i:064x}", "bytes": write_weights(run / f"weights/snapshot-{i:02d}.safetensors", i)}
                 for i in range(1, 11)]
    ca = {"weights": "weights/ca.safetensors", "sha256": f"{99:064x}",
          "bytes": write_weights(run / "weights/ca.safetensors", 5.5)}
    manifest = {"format_version": 1, "state": "complete", "task": task, "model": "synthetic-large",
                "learning_rate": lr, "batch_size": bs, "seed": seed, "epochs": 2, "total_steps": 1000,
                "snapshots_per_run": 10, "weight_storage": "all", "snapshots": snapshots, "ca": ca,
                "eval_sets": records, "run_name": name}
    if task in DATASET_LABELS:
        manifest["label_names"] = DATASET_LABELS[task]
    (run / "manifest.json").write_text(json.dumps(manifest))


def _write_seeded_run(root: Path, task: str, sets: list, indexed_config: tuple[int, tuple]) -> None:
    run_index, (lr, bs, seed) = indexed_config
    write_run(root, task, f"{task}-lr{lr}-bs{bs}-seed{seed}", (lr, bs, seed), sets, np.random.default_rng(run_index))


def write_grid(root: Path, task: str, seeds: int, scale: float) -> int:
    """Every run folder of the grid, on all cores (NER's 630 runs are 831,600 files); each run's
    random predictions come from a generator seeded by its index, so the grid is the same on any core count."""
    configs = [(lr, bs, seed) for lr in LEARNING_RATES for bs in BATCH_SIZES for seed in range(1, seeds + 1)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(partial(_write_seeded_run, root, task, eval_sets(task, scale)), enumerate(configs), chunksize=4))
    return len(configs)


# --- the floor: one DuckDB pass computing every file's score --------------------------------------

MACROS = {
    # SQuAD v1.1 normalisation (ASCII punctuation, articles, whitespace) and token F1
    "qa": [r"""CREATE MACRO squad_tokens(x) AS list_filter(string_split_regex(regexp_replace(regexp_replace(
               lower(x), '[!-/:-@\[-`{-~]', '', 'g'), '\b(a|an|the)\b', ' ', 'g'), '\s+'), lambda t: t <> '')""",
           """CREATE MACRO common_tokens(p, g) AS coalesce(list_sum(list_transform(list_distinct(p),
               lambda t: least(len(list_filter(p, lambda x: x = t)), len(list_filter(g, lambda x: x = t))))), 0)""",
           """CREATE MACRO token_f1(p, g) AS CASE WHEN common_tokens(p, g) = 0 THEN 0.0
               ELSE 2.0 * common_tokens(p, g) / (len(p) + len(g)) END"""],
    # seqeval's default entity extraction: where an entity begins, and where it ends
    "ner": ["""CREATE MACRO entity_begins(t, i) AS t[i] <> 'O' AND (i = 1 OR t[i - 1] = 'O'
               OR t[i - 1][1] IN ('E', 'S') OR t[i][1] IN ('B', 'S') OR t[i][3:] <> t[i - 1][3:])""",
            """CREATE MACRO entities(t) AS list_transform(list_filter(range(1, len(t) + 1), lambda i: entity_begins(t, i)),
               lambda i: t[i][3:] || ':' || i || ':' || coalesce(list_filter(range(i + 1, len(t) + 1),
               lambda j: t[j] = 'O' OR entity_begins(t, j))[1] - 1, len(t)))"""],
}
PER_EXAMPLE = {  # per joined row: the statistics the score sums
    "nli": "(p.label = g.label)::DOUBLE AS hit",
    "qa": "list_max(list_transform(g.answers, lambda a: token_f1(squad_tokens(p.answer), squad_tokens(a)))) AS hit",
    "ner": "len(list_intersect(entities(p.tags), entities(g.tags))) AS tp, len(entities(p.tags)) AS n_pred, "
           "len(entities(g.tags)) AS n_gold",
}
AGGREGATE = {"nli": "100 * avg(hit)", "qa": "100 * avg(hit)",
             "ner": "CASE WHEN sum(n_pred) + sum(n_gold) = 0 THEN 0 ELSE 200.0 * sum(tp) / (sum(n_pred) + sum(n_gold)) END"}
COLUMNS = {"nli": ("label", "label"), "qa": ("answer", "answers"), "ner": ("tags", "tags")}


def floor_seconds(task: str, runs: Path) -> tuple[float, "duckdb.DuckDBPyConnection"]:
    """Seconds of one DuckDB pass scoring every prediction file against its gold file, into a table."""
    import duckdb

    con = duckdb.connect()
    prediction, gold = COLUMNS[task]
    start = time.perf_counter()
    for macro in MACROS.get(task, []):
        con.execute(macro)
    con.execute(f"""
        CREATE TABLE floor AS
        WITH p AS (SELECT regexp_replace(filename, '/predictions/[^/]+/', '/gold/') AS gold_file, filename,
                          example_id, {prediction} FROM read_parquet('{runs}/*/predictions/*/*.parquet', filename=true)),
             g AS (SELECT filename AS gold_file, example_id, {gold} FROM read_parquet('{runs}/*/gold/*.parquet',
                                                                                       filename=true)),
             joined AS (SELECT p.filename, {PER_EXAMPLE[task]} FROM p JOIN g USING (gold_file, example_id))
        SELECT filename, {AGGREGATE[task]} AS score FROM joined GROUP BY filename""")
    return time.perf_counter() - start, con


def floor_disagreement(con, db: Path) -> tuple[int, float]:
    """(snapshot scores compared, largest absolute difference) between the floor and the store."""
    con.execute(f"ATTACH '{db}' AS store (READ_ONLY)")
    compared, worst = con.execute("""
        WITH f AS (SELECT score, string_split(filename, '/') AS parts FROM floor),
             named AS (SELECT score, parts[-4] AS run, parts[-2] AS subject,
                              string_split(replace(parts[-1], '.parquet', ''), '__') AS dsl FROM f),
             stored AS (SELECT r.external_id AS run, printf('snapshot-%02d', sn.snapshot_index) AS subject,
                               e.dataset, e.language, e.split, s.value
                        FROM store.score_table s JOIN store.snapshot_table sn USING (snapshot_id)
                        JOIN store.run_table r ON r.run_id = sn.run_id JOIN store.eval_set_table e USING (eval_set_id)
                        JOIN store.task_table t ON t.task = e.task WHERE s.metric = t.metric)
        SELECT count(*), max(abs(named.score - stored.value)) FROM named JOIN stored
        ON named.run = stored.run AND named.subject = stored.subject AND dsl[1] = stored.dataset
        AND dsl[2] = stored.language AND dsl[3] = stored.split""").fetchall()[0]
    return compared, worst


JOINT_BOOTSTRAP = ["protocol", "--strategy", "max-src-dev", "--strategy", "max-trg-dev", "-R", "10", "--draws", "10",
                   "--ci", "95", "--resample", "draws+examples", "--bootstrap", "10000", "--format", "csv"]


def joint_bootstrap(db: Path) -> dict:
    """The draws x examples bootstrap on the store, a whole `protocol` process (goal: 10 s, 1 GB)."""
    return measured(ofa_eval_command() + ["--db", str(db), *JOINT_BOOTSTRAP])


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def ingest_and_floor(task: str, runs: Path, db: Path, workers: int, repeats: int
                     ) -> tuple[list[dict], list[float], int, float]:
    """`repeats` ingests into a fresh store, each followed by a floor, so that both see the same
    moments of the machine (a 2-core VM whose speed moves by a third from one minute to the next).
    The store of the last ingest stays, checked against its floor's scores."""
    ingests, floors = [], []
    for _ in range(repeats):
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        ingests.append(measured(ofa_eval_command() + ["--db", str(db), "ingest", str(runs), "--quiet",
                                                      "--workers", str(workers)]))
        print(f"ingest {ingests[-1]['seconds']:.1f} s, {ingests[-1]['rss_mib']:.0f} MiB", flush=True)
        seconds, con = floor_seconds(task, runs)
        floors.append(seconds)
        compared, worst = floor_disagreement(con, db)
        con.close()
        print(f"floor {seconds:.1f} s; {compared} snapshot scores compared, largest difference {worst}", flush=True)
        if worst is None or worst > 1e-9:
            raise SystemExit(f"the floor and the store disagree: largest difference {worst}")
    return ingests, floors, compared, worst


def one_size(task: str, seeds: int, scale: float, workers: int, keep: bool, repeats: int = 1) -> dict:
    folder = WORK / f"{task}-seeds-{seeds}-x{scale}"
    shutil.rmtree(folder, ignore_errors=True)
    runs = folder / "runs"
    start = time.perf_counter()
    n_runs = write_grid(runs, task, seeds, scale)
    os.sync()  # else the kernel writes the new folders back during the ingest timed next, not the floor after it
    print(f"{task}: {n_runs} runs generated in {time.perf_counter() - start:.0f} s", flush=True)
    db = folder / "store.duckdb"
    load_before = list(os.getloadavg())
    ingests, floors, compared, worst = ingest_and_floor(task, runs, db, workers, repeats)
    ingest = min(ingests, key=lambda i: i["seconds"])
    floor = min(floors)
    sets = eval_sets(task, scale)
    result = {"task": task, "runs": n_runs, "seeds": seeds, "scale": scale, "workers": workers,
              "eval_sets": len(sets), "examples_per_subject": sum(s[-1] for s in sets),
              "run_folders_mib": folder_mib(runs), "ingest_seconds": ingest["seconds"],
              "ingest_peak_rss_mib": max(i["rss_mib"] for i in ingests), "floor_seconds": floor, "repeats": repeats,
              "ingest_seconds_all": [i["seconds"] for i in ingests], "floor_seconds_all": floors,
              "ingest_over_floor": ingest["seconds"] / floor, "floor_scores_compared": compared,
              "floor_largest_difference": worst, "store_mib": db.stat().st_size / 2**20,
              "load_average_before": load_before}
    if task == "nli":
        result["joint_bootstrap"] = joint_bootstrap(db)
        print(f"joint bootstrap {result['joint_bootstrap']['seconds']:.1f} s, "
              f"{result['joint_bootstrap']['rss_mib']:.0f} MiB", flush=True)
    table = folder / "table.csv"
    table.write_text(subprocess.run(ofa_eval_command() + ["--db", str(db), "protocol", "--strategy", "max-src-dev",
                                                          "--variant", "src-dev", "-R", "2", "--draws", "10",
                                                          "--format", "csv"],
                                    check=True, capture_output=True, text=True).stdout)
    result["startup"] = startup(db, task, "synthetic-large", table)
    result["load_average_after"] = list(os.getloadavg())
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(VALUES), default="nli")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 30], help="seeds per configuration (21 configurations)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every example count (default: the paper's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated run folders and stores")
    parser.add_argument("--repeats", type=int, default=1,
                        help="ingests and floors per size, alternating; the best of each is compared")
    args = parser.parse_args()
    out = RESULTS / "paper-scale-cpu.json"
    results = json.loads(out.read_text()) if out.exists() else {"sizes": []}
    results.update(machine=machine(), nproc=os.cpu_count())
    for seeds in args.seeds:
        result = one_size(args.task, seeds, args.scale, args.workers, args.keep, args.repeats)
        print(json.dumps(result, indent=1), flush=True)
        same = (args.task, seeds, args.scale)
        results["sizes"] = [r for r in results["sizes"] if (r["task"], r["seeds"], r["scale"]) != same] + [result]
        out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
