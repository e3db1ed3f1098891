"""Materialization against its work: `materialize` of the quickstart's averages against the same
predictions done in one process with the model built once and the inputs tokenized once.

Pool: the quickstart grid (NLI, QA and NER, 8 runs each, the tiny 1M-parameter XLM-R-shaped
model), trained once into benchmarks/_work/quickstart/ with the quickstart machinery
(`producers.quickstart.train_quickstart_grid`) and ingested into a base store; both are reused.
What is materialized is what `ofa-eval quickstart` materializes: accumulative CA averaging, r =
1..4, `--draws` draws of seed 0 (5 draws: 57 averaged models, 42 of them averaged and predicted,
the one-run ones copying their run's CA predictions).

Each measurement runs in its own process, on a fresh copy of the base store and into an empty
averages folder:

- cli: `ofa-eval materialize` as a user runs it; wall time of the whole command (interpreter
  start-up, imports, planning, averaging and predicting, ingest).
- new: `materialize_here` (what the command calls) timed inside the process: in all (plan,
  make, ingest), and the making of the folders (average, predict, write) alone. Libraries
  (torch, transformers, pyarrow, the engine's modules) are imported before the clock starts,
  in this and every mode below.
- old: the same with the predictor as it was before predictions reused the model and the
  tokenized inputs (`legacy_predict_with_weights` below: it rebuilds the model, reloads the
  tokenizer and re-tokenizes every evaluation set for every average, with torch's default
  threads; measured once, in the first repeat); old-1-thread: the same on one torch thread.
- baseline: the work itself. For every folder that `new` averaged and predicted: load its
  averaged weights into a model built once per pool (`load_state_dict`), run the model over every
  evaluation set, tokenized once per pool, decode, and write the prediction tables; only this
  loop is timed (building and tokenizing are reported apart). Same thread setting as `new`.

Each measurement records wall time and CPU time (user + system, all threads; for cli, the
child's rusage). On a machine shared with other work, wall time varies with the load while CPU
time counts the work done. The ratios new / baseline (in all, and for making the folders alone)
are the overhead of materializing (goal: at most 1.5). `new`, `old` and `old-1-thread` must
write identical predictions (checked).

    python benchmarks/bench_materialize.py [--draws 5] [--repeat 2] [--modes cli,new,baseline,old-1-thread,old]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
WORK = HERE / "_work"
RESULTS = HERE / "results"
POOL = WORK / "quickstart"
BASE_STORE = WORK / "materialize-base.duckdb"
PAIRS = [("accumulative", "ca")]
MAX_RUNS = 4
MODES = ("cli", "new", "baseline", "old-1-thread", "old")


# ---------------------------------------------------------------------------------------------
# The predictor as it was (kept here to measure the old path)


def legacy_predict_with_weights(run_dir, weights, out_dir) -> Path:
    """Before: every call rebuilds the model, reloads the tokenizer and re-tokenizes every set."""
    from safetensors.torch import load_file

    from ofa_eval.artifacts import run_format
    from producers.config import RunConfig
    from producers.modeling import load_tokenizer, model_from_config, pick_device
    from producers.predict import predict, read_inputs, write_predictions
    from producers.tasks import get_task

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest = json.loads((run_dir / run_format.MANIFEST).read_text())
    config = RunConfig.from_recipe(manifest)
    task, device = get_task(manifest["task"]), pick_device()
    tokenizer = load_tokenizer(run_dir / run_format.MODEL)
    model = model_from_config(task, run_dir / run_format.MODEL)
    model.load_state_dict(load_file(str(weights)))
    model.to(device)
    for eval_set in read_inputs(run_dir, manifest):
        features = task.eval_features(eval_set.examples, tokenizer, config, manifest.get("label_names"))
        predictions = predict(model, task, eval_set, features, config, manifest.get("label_names"), device,
                              tokenizer.pad_token_id)
        write_predictions(out_dir, task, eval_set, predictions)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Worker side: one measurement in this process; prints one JSON line


def draw_options(draws: int):
    from ofa_eval.evaluation import DrawOptions

    return DrawOptions(n_draws=draws, seed=0)


def materialize_with(predictor, store: Path, out: Path, draws: int) -> dict:
    from ofa_eval.averages.materialize import make_averages, materialize_missing

    making = []

    def maker(plans, root):
        began, cpu = time.perf_counter(), time.process_time()
        folders = make_averages(plans, root, predictor, progress=True)
        making.append((time.perf_counter() - began, time.process_time() - cpu))
        return folders

    began, cpu = time.perf_counter(), time.process_time()
    made = materialize_missing(str(store), (), (), PAIRS, draw_options(draws), MAX_RUNS, out, maker)
    return {"seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu,
            "make_seconds": sum(wall for wall, _ in making), "make_cpu_seconds": sum(cpu for _, cpu in making),
            "made": made, "predicted": len(list(out.glob("*/model.safetensors")))}


def baseline(averages: Path, scratch: Path) -> dict:
    """load_state_dict + forward passes + decoding + writing, with everything else done beforehand."""
    from safetensors.torch import load_file

    from ofa_eval.artifacts import run_format
    from producers.config import RunConfig
    from producers.predict import Evaluation, cpu_threads_for, evaluation_key, predict, write_predictions

    folders = sorted(averages.glob("*/model.safetensors"))
    prepared, setup = {}, 0.0
    for weights in folders:  # build and tokenize once per pool, untimed in the loop below
        reference = Path(json.loads((weights.parent / "average.json").read_text())["reference_run"])
        manifest = json.loads((reference / run_format.MANIFEST).read_text())
        config = RunConfig.from_recipe(manifest)
        key = evaluation_key(reference, manifest, config)
        if key not in prepared:
            began = time.perf_counter()
            prepared[key] = Evaluation.build(key, reference, manifest, config)
            setup += time.perf_counter() - began
        prepared[weights] = (prepared[key], config)
    began, cpu = time.perf_counter(), time.process_time()
    for n, weights in enumerate(folders):
        evaluation, config = prepared[weights]
        model = evaluation.model
        model.load_state_dict(load_file(str(weights)))
        with cpu_threads_for(model, evaluation.device):
            for eval_set, features in evaluation.eval_sets:
                predictions = predict(model, evaluation.task, eval_set, features, config, evaluation.label_names,
                                      evaluation.device, evaluation.pad_token_id)
                write_predictions(scratch / str(n), evaluation.task, eval_set, predictions)
    return {"seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu, "setup_seconds": setup,
            "predicted": len(folders)}


def preload() -> None:
    """Import the libraries every mode uses before its clock starts (the cli mode pays for them)."""
    import pyarrow.parquet  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers
    import transformers.models.xlm_roberta.modeling_xlm_roberta  # noqa: F401

    import ofa_eval.weights.averaging  # noqa: F401
    import ofa_eval.artifacts.ingest  # noqa: F401
    from producers.tasks import BUILT_IN

    for task in BUILT_IN.values():
        getattr(transformers, task.model_class)
    getattr(transformers, "PreTrainedTokenizerFast")


def worker(mode: str, store: Path, out: Path, draws: int, averages: Path | None) -> dict:
    import torch

    preload()
    if mode == "old-1-thread":
        torch.set_num_threads(1)
    if mode == "new":
        from producers.predict import predict_with_weights

        return materialize_with(predict_with_weights, store, out, draws)
    if mode in ("old", "old-1-thread"):
        return materialize_with(legacy_predict_with_weights, store, out, draws)
    if mode == "baseline":
        return baseline(averages, out)
    raise ValueError(mode)


# ---------------------------------------------------------------------------------------------
# Driver side


def ensure_pool() -> None:
    """Train the quickstart grid into _work/quickstart and ingest it into the base store (once)."""
    if BASE_STORE.is_file():
        return
    runs = POOL / "runs"
    if len(list(runs.glob("*/manifest.json"))) < 24:
        from producers.quickstart import train_quickstart_grid

        runs = train_quickstart_grid(POOL, progress=True)
    subprocess.run([ofa_eval_command(), "--db", str(BASE_STORE), "ingest", str(runs), "--quiet"], check=True, cwd=REPO)


def ofa_eval_command() -> str:
    return str(Path(sys.executable).with_name("ofa-eval"))


def run_mode(mode: str, draws: int, label: str, averages: Path | None = None) -> dict:
    store, out = WORK / f"materialize-{label}.duckdb", WORK / f"materialize-{label}"
    shutil.rmtree(out, ignore_errors=True)
    store.unlink(missing_ok=True)
    shutil.copyfile(BASE_STORE, store)
    if mode == "cli":
        command = [ofa_eval_command(), "--db", str(store), "materialize",
                   "--strategy", "accumulative", "--variant", "ca", "--draws", str(draws), "--seed", "0",
                   "-R", str(MAX_RUNS), "--out", str(out)]
        began, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = {"seconds": time.perf_counter() - began, "made": int(done.stdout.split()[0]),
                  "cpu_seconds": after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime}
    else:
        command = [sys.executable, __file__, "--worker", mode, "--store", str(store), "--out", str(out),
                   "--draws", str(draws)] + (["--averages", str(averages)] if averages else [])
        done = subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(mode=mode, load_after=os.getloadavg()[0])
    print(json.dumps(result), file=sys.stderr)
    return result


def same_predictions(a: Path, b: Path) -> bool:
    import polars as pl

    files = sorted(p.relative_to(a) for p in a.glob("*/predictions/*.parquet"))
    return bool(files) and files == sorted(p.relative_to(b) for p in b.glob("*/predictions/*.parquet")) and all(
        pl.read_parquet(a / f).equals(pl.read_parquet(b / f)) for f in files)


def machine() -> dict:
    import platform

    import torch

    name = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), name)
    return {"cpu": name, "nproc": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--averages", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(worker(options.worker, options.store, options.out, options.draws, options.averages)))
        return
    modes = options.modes.split(",")
    ensure_pool()
    load_before = os.getloadavg()
    runs = {mode: [] for mode in modes}
    for repeat in range(options.repeat):
        for mode in modes:
            if mode == "old" and repeat:  # minutes on a loaded machine: once is enough to see it
                continue
            label = f"{mode}-{repeat}"
            averages = WORK / f"materialize-new-{repeat}" if mode == "baseline" else None
            runs[mode].append(run_mode(mode, options.draws, label, averages))
    checks = {}
    if "new" in modes and "old-1-thread" in modes:
        checks["new_equals_old_1_thread"] = same_predictions(WORK / "materialize-new-0", WORK / "materialize-old-1-thread-0")
    if "new" in modes and "old" in modes:
        checks["new_equals_old"] = same_predictions(WORK / "materialize-new-0", WORK / "materialize-old-0")
    medians = {measure: {mode: statistics.median(r[measure] for r in results)
                         for mode, results in runs.items() if measure in results[0]}
               for measure in ("seconds", "cpu_seconds", "make_seconds", "make_cpu_seconds")}
    report = {"machine": machine(), "load_before": load_before, "load_after": os.getloadavg(),
              "draws": options.draws, "command": "python benchmarks/bench_materialize.py " + " ".join(sys.argv[1:]),
              "runs": runs, "medians": medians, "checks": checks}
    if "baseline" in modes:  # the baseline's only measure is its loop: against all, and against making alone
        report["ratios_to_baseline"] = {
            measure: {mode: value / medians[measure.replace("make_", "")]["baseline"] for mode, value in values.items()}
            for measure, values in medians.items()}
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "materialize-cpu.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
