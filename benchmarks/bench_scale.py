"""Ingest and the protocol at lab scale: 63, 630 and 6,300 synthetic NLI runs.

Run folders in the artifact format (docs/artifacts.md): 7 learning rates x 3 batch sizes x N
seeds, 10 snapshots + CA (tiny safetensors weights), English validation and 15 target
languages with validation and test sets. Per size, in one run each:

- `ofa-eval ingest` (a fresh store, one process plus its workers): wall time and peak RSS
  (ru_maxrss of the command's process tree: the largest single process);
- a raw DuckDB insert of the same rows: the ingested store's tables exported to Parquet (not
  timed), then inserted into a fresh store with plain INSERT ... SELECT in one transaction;
- the store's size on disk;
- `protocol` over the selection strategies (Max SRC-DEV, Max TRG-DEV, every variant): with
  sampled draws, with `--exact`, and with `--ci 95 --resample draws+examples`. (`--all` also
  needs averaged models, which ingested runs do not have before `materialize`.)
- start-up (median of 5 after a warm-up) of `sql`, `grid`, `check` and `protocol` on the
  largest store, and on the release store when ../shared/ofa-xlt-release exists, against
  `python -c "import duckdb, polars"`.

    python benchmarks/bench_scale.py --seeds 3 30 --examples 100 [--workers 2] [--keep]
    python benchmarks/bench_scale.py --seeds 300 --examples 20     # 6,300 runs

Results: benchmarks/results/scale-cpu.json (appended per size) and scale-cpu.md (by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "scale"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from bench_protocol import machine, ofa_eval_command  # noqa: E402
from timing import median_command_seconds as median_seconds  # noqa: E402

LEARNING_RATES = (5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4)
BATCH_SIZES = (16, 32, 64)
TARGETS = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh", "ay")
SUBJECTS = [f"snapshot-{i:02d}" for i in range(1, 11)] + ["ca"]
TABLES = ("task_table", "eval_set_table", "run_table", "snapshot_table", "score_table", "example_stat_table",
          "selection_table", "run_weight_table")


def eval_sets() -> list[tuple[str, str, str]]:
    return [("en", "validation", "source")] + [(lang, split, "target") for lang in TARGETS
                                               for split in ("validation", "test")]


def write_weights(path: Path, value: float) -> int:
    from safetensors.numpy import save_file

    save_file({"w": np.full((4, 4), value, dtype=np.float32)}, str(path))
    return path.stat().st_size


def write_run(root: Path, name: str, lr: float, bs: int, seed: int, n_examples: int, rng) -> None:
    run = root / name
    for folder in ["gold", "weights"] + [f"predictions/{s}" for s in SUBJECTS]:
        (run / folder).mkdir(parents=True)
    sets = []
    for language, split, role in eval_sets():
        file = f"xnli__{language}__{split}.parquet"
        ids = pa.array([f"{language}-{split}-{i:05d}" for i in range(n_examples)])
        gold = rng.integers(0, 3, n_examples)
        pq.write_table(pa.table({"example_id": ids, "label": gold}), run / "gold" / file)
        for subject in SUBJECTS:
            wrong = rng.random(n_examples) > rng.uniform(0.4, 0.9)
            pq.write_table(pa.table({"example_id": ids, "label": np.where(wrong, (gold + 1) % 3, gold)}),
                           run / "predictions" / subject / file)
        sets.append({"dataset": "xnli", "language": language, "split": split, "role": role,
                     "gold": f"gold/{file}", "n_examples": n_examples})
    snapshots = [{"index": i, "step": i * 100, "epoch": i / 10 * 2,
                  "weights": f"weights/snapshot-{i:02d}.safetensors", "sha256": f"{i:064x}",
                  "bytes": write_weights(run / f"weights/snapshot-{i:02d}.safetensors", i)} for i in range(1, 11)]
    ca = {"weights": "weights/ca.safetensors", "sha256": f"{99:064x}", "bytes": write_weights(run / "weights/ca.safetensors", 5.5)}
    manifest = {"format_version": 1, "state": "complete", "task": "nli", "model": "synthetic-large",
                "learning_rate": lr, "batch_size": bs, "seed": seed, "epochs": 2, "total_steps": 1000,
                "snapshots_per_run": 10, "weight_storage": "all", "snapshots": snapshots, "ca": ca,
                "eval_sets": sets, "label_names": ["entailment", "neutral", "contradiction"], "run_name": name}
    (run / "manifest.json").write_text(json.dumps(manifest))


def write_grid(root: Path, seeds: int, n_examples: int) -> int:
    rng = np.random.default_rng(seeds)
    count = 0
    for lr in LEARNING_RATES:
        for bs in BATCH_SIZES:
            for seed in range(1, seeds + 1):
                write_run(root, f"nli-lr{lr}-bs{bs}-seed{seed}", lr, bs, seed, n_examples, rng)
                count += 1
    return count


def measured(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MiB) of `command`, in a wrapper process so that ru_maxrss is its own."""
    wrapper = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps({'seconds': time.perf_counter() - t, 'code': r.returncode, 'stderr': r.stderr[-500:], "
               "'rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    result = json.loads(subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                                       check=True).stdout)
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result['stderr']}")
    return result


def raw_insert_seconds(db: Path, folder: Path) -> float:
    """The ingested rows exported to Parquet, then inserted into a fresh store: the bulk-insert floor."""
    import duckdb

    from ofa_eval.store.database import connected

    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db), read_only=True)
    for table in TABLES:
        con.execute(f"COPY (SELECT * FROM {table}) TO '{folder / table}.parquet' (FORMAT parquet)")
    con.close()
    fresh = folder / "raw.duckdb"
    with connected(str(fresh)):
        pass
    con = duckdb.connect(str(fresh))
    start = time.perf_counter()
    con.execute("BEGIN")
    for table in TABLES:
        con.execute(f"INSERT INTO {table} SELECT * FROM read_parquet('{folder / table}.parquet')")
    con.execute("COMMIT")
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def startup(db: Path, task: str, model: str, table: Path, check_options: list[str] = ()) -> dict:
    """Whole-process seconds of small commands against the floor."""
    ofa = ofa_eval_command() + ["--db", str(db)]
    commands = {
        "floor: python -c 'import duckdb, polars'": [sys.executable, "-c", "import duckdb, polars"],
        "sql 'SELECT count(*) FROM runs'": ofa + ["sql", "SELECT count(*) FROM runs"],
        "grid": ofa + ["grid", "--task", task, "--model", model],
        "check (one table)": ofa + ["check", str(table), *check_options],
        "protocol (max-src-dev, src-dev, R=1, 1 draw)": ofa + ["protocol", "--task", task, "--model", model,
                                                             "--strategy", "max-src-dev", "--variant", "src-dev",
                                                             "-R", "1", "--draws", "1"],
    }
    return {name: median_seconds(command) for name, command in commands.items()}


def protocol_times(db: Path) -> dict:
    ofa = ofa_eval_command() + ["--db", str(db), "protocol", "--strategy", "max-src-dev", "--strategy", "max-trg-dev"]
    return {name: measured(ofa + extra)["seconds"] for name, extra in {
        "protocol (selection strategies, 100 draws)": ["--draws", "100"],
        "protocol --exact": ["--exact"],
        "protocol --ci 95 --resample draws+examples": ["--draws", "100", "--ci", "95", "--resample", "draws+examples"],
    }.items()}


def load_average() -> list[float]:
    return list(os.getloadavg())


def one_size(seeds: int, n_examples: int, workers: int | None, keep: bool) -> dict:
    folder = WORK / f"seeds-{seeds}-n{n_examples}"
    shutil.rmtree(folder, ignore_errors=True)
    runs = folder / "runs"
    start = time.perf_counter()
    n_runs = write_grid(runs, seeds, n_examples)
    generated = time.perf_counter() - start
    print(f"{n_runs} runs generated in {generated:.0f} s", flush=True)
    db = folder / "store.duckdb"
    load_before = load_average()
    ingest = measured(ofa_eval_command() + ["--db", str(db), "ingest", str(runs), "--quiet"]
                      + (["--workers", str(workers)] if workers else []))
    print(f"ingest {ingest['seconds']:.1f} s, {ingest['rss_mib']:.0f} MiB", flush=True)
    raw = raw_insert_seconds(db, folder / "raw")
    result = {"runs": n_runs, "seeds": seeds, "examples_per_set": n_examples, "generate_seconds": generated,
              "ingest_seconds": ingest["seconds"], "ingest_peak_rss_mib": ingest["rss_mib"],
              "raw_insert_seconds": raw, "ingest_over_raw": ingest["seconds"] / raw,
              "store_mib": db.stat().st_size / 2**20, "load_average_before": load_before}
    result.update(protocol_times(db))
    table = folder / "table.csv"
    table.write_text(subprocess.run(ofa_eval_command() + ["--db", str(db), "protocol", "--strategy", "max-src-dev",
                                                          "--variant", "src-dev", "-R", "2", "--draws", "10",
                                                          "--format", "csv"],
                                    check=True, capture_output=True, text=True).stdout)
    result["startup"] = startup(db, "nli", "synthetic-large", table)
    result["load_average_after"] = load_average()
    if not keep:
        shutil.rmtree(runs, ignore_errors=True)
        shutil.rmtree(folder / "raw", ignore_errors=True)
    return result


def release_startup() -> dict | None:
    release = HERE.parent.parent / "shared" / "ofa-xlt-release"
    if not release.is_dir():
        return None
    db = WORK / "release.duckdb"
    if not db.exists():
        subprocess.run(ofa_eval_command() + ["--db", str(db), "import", "ofa-xlt", str(release)], check=True,
                       capture_output=True)
    return startup(db, "nli", "xlm-roberta-large", HERE / "tables" / "table1-xlm-roberta-large.csv",
                   check_options=["--replay", "--exclude-draw", "1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 30], help="seeds per configuration (21 configurations)")
    parser.add_argument("--examples", type=int, nargs="+", default=[100],
                        help="examples per evaluation set, one value or one per --seeds value")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--release", action="store_true", help="also time start-up on the release store")
    parser.add_argument("--keep", action="store_true", help="keep the generated run folders")
    args = parser.parse_args()
    examples = args.examples * len(args.seeds) if len(args.examples) == 1 else args.examples
    out = RESULTS / "scale-cpu.json"
    results = json.loads(out.read_text()) if out.exists() else {"sizes": []}
    results["machine"] = machine()
    results["nproc"] = os.cpu_count()
    for seeds, n_examples in zip(args.seeds, examples):
        result = one_size(seeds, n_examples, args.workers, args.keep)
        print(json.dumps(result, indent=1), flush=True)
        results["sizes"] = [r for r in results["sizes"] if (r["seeds"], r["examples_per_set"]) != (seeds, n_examples)]
        results["sizes"].append(result)
        out.write_text(json.dumps(results, indent=1) + "\n")
    if args.release:
        results["release_startup"] = release_startup()
        out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
