"""Time and peak memory of `ofa-eval average` against the physical floor, a naive loop and mergekit.

Inputs: n model folders (config.json + model.safetensors) shaped like XLM-R large with a 3-way
classification head (hidden 1024, 16 heads, intermediate 4096, vocabulary --vocab), random fp32
weights; `--layers` sets the depth (24 is the real model: 2.24 GB per checkpoint, too much for
ten of them in this machine's page cache, so the default is shallower).

Methods, each in its own process, timed inside the process around the work only (interpreter
and library start-up excluded), peak RSS from VmHWM; before every run the outputs of the last
one are deleted, dirty pages synced, and every input the run uses is read once (warm-up): the
page cache cannot be dropped here, so every method reads from a warm cache. Methods take turns,
best of --repeat runs (the machine may be shared with other work).

- read: read the r input files once, sequentially, into one reused page-aligned 4 MiB buffer
  (the fastest plain read we found: a destination at an unlucky page offset is 5x slower here).
- floor: the physical floor of averaging r inputs, reading them once and writing one output of
  the output's size: the first input is copied, chunk by chunk, to a new file in the output's
  folder (preallocated with fallocate and not fsynced, as `average` does by default), then the
  other r - 1 inputs are read as in `read`.
- average: `ofa_eval.weights.averaging.average_checkpoints` of the first r inputs.
- cli: `ofa-eval average -q OUT IN...` at r = n, timed from outside around the whole command
  (interpreter start-up and imports included), to show the command's own overhead.
- accumulate (`--accumulate`): `accumulate_checkpoints` of all n inputs (prefixes 1..n, one
  pass), against floor-all: the floor with the first input copied to n files.
- naive: `safetensors.torch.load_file` of every full checkpoint, summed in fp32, `save_file`.
- mergekit: `mergekit.merge.run_merge` with a linear merge, run with the venv's Python given by
  `--mergekit-python` (skipped and recorded as such when it is missing).

Inputs and outputs live in benchmarks/_work/average/ (removed afterwards unless --keep).

    python benchmarks/bench_average.py [--layers 4] [--vocab 100000] [--inputs 10]
        [--average-r 1,2,5,10] [--naive-r R] [--mergekit-r R] [--accumulate]
        [--mergekit-python /tmp/mk/bin/python] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "average"  # other benchmarks keep their files in _work/
RESULTS = HERE / "results"
REPO = HERE.parent
READ_BUFFER_BYTES = 4 << 20


# ---------------------------------------------------------------------------------------------
# Worker side: one method, in its own process; prints {"seconds": ..., "rss_before": ...}


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """VmHWM: the peak RSS of this process image. (ru_maxrss would also count the parent's RSS at
    fork time, which the Linux kernel carries over into the child's maximum across exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def read_files(paths: list[Path], buffer: mmap.mmap) -> int:
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                total += count
    return total


def write_fully(handle, data: memoryview) -> None:
    done = 0
    while done < data.nbytes:
        done += handle.write(data[done:])


def copy_to(source: Path, targets: list[Path], buffer: mmap.mmap) -> None:
    """Stream `source` into every target, chunk by chunk; targets preallocated, as `average`'s are."""
    size = source.stat().st_size
    handles = [open(target, "wb", buffering=0) for target in targets]
    try:
        for handle in handles:
            os.posix_fallocate(handle.fileno(), 0, size)
        with open(source, "rb", buffering=0) as reader:
            while count := reader.readinto(buffer):
                for handle in handles:
                    write_fully(handle, memoryview(buffer)[:count])
    finally:
        for handle in handles:
            handle.close()


def worker_floor(paths: list[Path], output: Path, n_writes: int) -> None:
    """Read the inputs once, the first one copied to `n_writes` new files (none: a plain read)."""
    buffer = mmap.mmap(-1, READ_BUFFER_BYTES)  # page-aligned
    if n_writes == 0:
        read_files(paths, buffer)
        return
    targets = [output] if n_writes == 1 else [output / f"{index}.bin" for index in range(n_writes)]
    if n_writes > 1:
        output.mkdir()
    copy_to(paths[0], targets, buffer)
    read_files(paths[1:], buffer)


def worker_average(paths: list[Path], output: Path) -> None:
    from ofa_eval.weights.averaging import average_checkpoints

    average_checkpoints(paths, output)


def worker_accumulate(paths: list[Path], output: Path) -> None:
    from ofa_eval.weights.averaging import accumulate_checkpoints

    accumulate_checkpoints(paths, output)


def worker_naive(paths: list[Path], output: Path) -> None:
    from safetensors.torch import load_file, save_file

    total = None
    for path in paths:
        state = load_file(path)
        if total is None:
            total = {name: tensor.float().clone() for name, tensor in state.items()}
        else:
            for name, tensor in state.items():
                total[name].add_(tensor)
        del state
    save_file({name: tensor.div_(len(paths)) for name, tensor in total.items()}, output, metadata={"format": "pt"})


def worker_mergekit(folders: list[Path], output: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate({
        "merge_method": "linear", "dtype": "float32", "parameters": {"normalize": True},
        "models": [{"model": str(folder), "parameters": {"weight": 1.0}} for folder in folders]})
    run_merge(config, str(output), options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))


def preload_libraries(method: str) -> None:
    """Import what a method needs before its clock starts: library start-up is not averaging."""
    if method in ("average", "accumulate"):
        import ofa_eval.weights.averaging  # noqa: F401 - torch with it
    elif method == "naive":
        import safetensors.torch  # noqa: F401
    elif method == "mergekit":
        import mergekit.config  # noqa: F401
        import mergekit.merge  # noqa: F401
        import mergekit.options  # noqa: F401


def run_worker_method(method: str, inputs: list[Path], output: Path) -> None:
    files = [folder / "model.safetensors" for folder in inputs]
    work = {"read": lambda: worker_floor(files, output, n_writes=0),
            "floor": lambda: worker_floor(files, output, n_writes=1),
            "floor-all": lambda: worker_floor(files, output, n_writes=len(files)),
            "average": lambda: worker_average(inputs, output),
            "accumulate": lambda: worker_accumulate(inputs, output),
            "naive": lambda: worker_naive(files, output),
            "mergekit": lambda: worker_mergekit(inputs, output)}[method]
    preload_libraries(method)
    rss_before = current_rss_bytes()
    began = time.perf_counter()
    work()
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "rss_before": rss_before, "peak_rss": peak_rss_bytes()}))


# ---------------------------------------------------------------------------------------------
# Harness side


def xlmr_large_config(layers: int, vocab: int):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16,
                            intermediate_size=4096, vocab_size=vocab, max_position_embeddings=514,
                            type_vocab_size=1, num_labels=3, architectures=["XLMRobertaForSequenceClassification"])


def tensor_shapes(config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of XLMRobertaForSequenceClassification's state dict, built on the meta device."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    with torch.device("meta"):
        model = XLMRobertaForSequenceClassification(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def fill_from_pool(flat, pool, offset: int) -> None:
    """Fill a flat tensor with the random pool, cyclically, from `offset` on (cheap distinct values)."""
    position = 0
    while position < flat.numel():
        start = (offset + position) % pool.numel()
        take = min(flat.numel() - position, pool.numel() - start)
        flat[position: position + take] = pool[start: start + take]
        position += take


def write_inputs(config, shapes: dict[str, tuple[int, ...]], n_inputs: int) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(16_777_259, generator=generator) * 0.02
    folders = []
    for index in range(n_inputs):
        folder = WORK / f"input-{index:02d}"
        folders.append(folder)
        if (folder / "config.json").exists() and (folder / "config.json").read_text() == config.to_json_string():
            continue  # kept (--keep) from an earlier run with the same shapes
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, shape in shapes.items():
            state[name] = torch.empty(shape)
            fill_from_pool(state[name].view(-1), pool, int(torch.randint(0, pool.numel(), (1,), generator=generator)))
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(config.to_json_string())
        del state
    return folders


def warm_up(folders: list[Path]) -> None:
    read_files([folder / "model.safetensors" for folder in folders], mmap.mmap(-1, READ_BUFFER_BYTES))


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat, idle and iowait excluded)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def method_command(method: str, folders: list[Path], python: str, output: Path) -> list[str]:
    if method == "cli":
        return [str(Path(python).parent / "ofa-eval"), "average", "-q", str(output), *map(str, folders)]
    return [python, str(Path(__file__).resolve()), "--worker", method, "--output", str(output), *map(str, folders)]


def measure(method: str, folders: list[Path], python: str, keep: bool = False) -> dict:
    """Run one method in a fresh process on a warm cache: its seconds and peak RSS, and how many
    cores other work on the machine kept busy meanwhile (all busy CPU time minus this run's)."""
    output = WORK / f"out-{method}-{len(folders)}"
    remove(output)
    os.sync()
    warm_up(folders)
    busy_before, own_before, began = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    completed = subprocess.run(method_command(method, folders, python, output), cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - began
    others = (busy_cpu_seconds() - busy_before - (children_cpu_seconds() - own_before)) / wall
    if completed.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{completed.stderr[-3000:]}")
    if method == "cli":  # timed from outside: the whole command
        result = {"seconds": wall, "rss_before": 0, "peak_rss": 0}
    else:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    result.update(rss_growth=result["peak_rss"] - result["rss_before"], other_cores=max(others, 0.0))
    if not keep:
        remove(output)
    return result


def summarise(runs: list[dict]) -> dict:
    return {"seconds": min(r["seconds"] for r in runs), "all_seconds": [r["seconds"] for r in runs],
            "peak_rss": max(r["peak_rss"] for r in runs), "rss_growth": max(r["rss_growth"] for r in runs),
            "other_cores": [round(r["other_cores"], 2) for r in runs]}


def interleaved(methods: list[str], folders: list[Path], python: str, repeat: int, keep: str = "") -> dict:
    """Each method `repeat` times, taking turns (so that all see the same spells of load from
    other work); the best time of each. The last output of method `keep` is kept."""
    runs: dict[str, list[dict]] = {method: [] for method in methods}
    for attempt in range(repeat):
        for method in methods:
            runs[method].append(measure(method, folders, python, keep=method == keep and attempt == repeat - 1))
    return {method: summarise(method_runs) for method, method_runs in runs.items()}


def repeated(method: str, folders: list[Path], python: str, repeat: int, keep: bool = False) -> dict:
    return interleaved([method], folders, python, repeat, keep=method if keep else "")[method]


def max_abs_difference(first: Path, second: Path) -> float:
    from safetensors import safe_open

    worst = 0.0
    with safe_open(first, "pt") as a, safe_open(second, "pt") as b:
        for name in a.keys():
            worst = max(worst, (a.get_tensor(name) - b.get_tensor(name)).abs().max().item())
    return worst


def machine() -> dict:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
               for line in Path("/proc/meminfo").read_text().splitlines()}
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": round(meminfo["MemTotal"] / 2**30, 1),
            "available_gb": round(meminfo["MemAvailable"] / 2**30, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def parse_r_values(text: str) -> list[int]:
    values = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        values += list(range(int(low), int(high or low) + 1))
    return values


# ---------------------------------------------------------------------------------------------
# Report


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f}"


KEPT_MARKER = "<!-- written by hand: kept when the benchmark rewrites this file -->"


def kept_sections(path: Path) -> list[str]:
    """The hand-written tail of an earlier results file (profile notes, history), from KEPT_MARKER on."""
    text = path.read_text() if path.exists() else ""
    return ["", text[text.index(KEPT_MARKER):].rstrip("\n")] if KEPT_MARKER in text else []


def load_summary(result: dict) -> str:
    runs = result["average"] + ([result["cli"]] if result.get("cli") else [])
    cores = [value for row in runs for key in ("read_other_cores", "floor_other_cores", "average_other_cores",
                                               "other_cores") for value in row.get(key, [])]
    return (f"1-minute load average {result['load_average_before'][0]:.2f} before the benchmark and "
            f"{result['load_average_after'][0]:.2f} after; during each timed run other work kept "
            f"{min(cores):.1f} to {max(cores):.1f} of the {result['machine']['cores']} cores busy "
            f"(median {sorted(cores)[len(cores) // 2]:.1f}; from /proc/stat minus the run's own CPU time)")


def markdown(result: dict, kept: list[str]) -> str:
    m, size = result["machine"], result["checkpoint_bytes"]
    lines = [
        "# `ofa-eval average`: streaming weight averaging against the physical floor", "",
        f"Machine: {m['cpu']}, {m['cores']} cores (nproc), {m['ram_gb']} GiB RAM ({m['available_gb']} GiB available "
        f"at the start), Linux {m['kernel']}, Python {m['python']}, torch {result['torch']}. The machine is shared "
        f"with other work: {load_summary(result)}.",
        f"Command: `{result['command']}` ({result['total_minutes']:.1f} min in all).", "",
        f"Inputs: {result['inputs']} XLM-R-large-shaped checkpoints (hidden 1024, 16 heads, intermediate 4096, "
        f"vocabulary {result['vocab']}, 3-way head) with **{result['layers']} of 24 layers**, random fp32 weights: "
        f"{result['n_tensors']} tensors, {result['parameters'] / 1e6:.0f} M parameters, {gb(size)} GB per "
        f"checkpoint ({gb(size * result['inputs'])} GB in all, sized so that inputs and outputs fit in the "
        "page cache together).",
        "Each method runs in its own process and is timed inside it around the work only (interpreter start-up "
        "and imports excluded); before each run the previous outputs are deleted, dirty pages synced, and the "
        "run's inputs read once: every method reads from a **warm page cache** (it cannot be dropped here). "
        "Outputs are not fsynced (`average`'s default). Methods take turns; "
        f"best of {result['repeat']} runs each (every run is in the .json).", "",
        "**floor** = the physical work of averaging r inputs: read the r inputs once and write one output "
        "of the output's size. Measured as a plain streaming copy of the first input to a new file in the "
        "output's folder (4 MiB page-aligned buffer, file preallocated with fallocate as `average`'s is, no "
        "fsync), then a read of the other r - 1 inputs. **read** is the read alone (the old, read-only floor).", "",
        "## Average of r inputs", "",
        "| r | GB read | read s | floor s | `average` s | **`average` / floor** | `average` / read "
        "| `average` GB/s read | RSS growth MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["average"]:
        lines.append(f"| {row['r']} | {gb(size * row['r'])} | {row['read']:.2f} | {row['floor']:.2f} | "
                     f"{row['average']:.2f} | **{row['average'] / row['floor']:.2f}** | "
                     f"{row['average'] / row['read']:.2f} | {size * row['r'] / 1e9 / row['average']:.1f} | "
                     f"{row['average_rss_growth'] / 1e6:.0f} |")
    if result.get("cli"):
        cli = result["cli"]
        lines += ["", f"The command, `ofa-eval average -q OUT IN...` at r = {cli['r']}, timed from outside: "
                  f"{cli['seconds']:.2f} s, {cli['seconds'] / cli['floor']:.2f}x the floor; "
                  f"{cli['seconds'] - cli['average']:.2f} s more than `average_checkpoints` in-process "
                  "(interpreter start-up, importing torch and the CLI, the progress bar's set-up)."]
    lines += others_markdown(result) + accumulate_markdown(result)
    lines += ["", "## Reading the numbers", "", *summary_notes(result)]
    return "\n".join(lines + kept) + "\n"


def others_markdown(result: dict) -> list[str]:
    if not result["others"]:
        return []
    lines = ["", "## Other ways to average r inputs", "",
             "| method | r | seconds | / floor | / `average` | peak RSS MB | RSS growth MB "
             "| max abs diff to `average` |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["others"]:
        difference = "" if row.get("max_abs_diff") is None else f"{row['max_abs_diff']:.1e}"
        versus_average = f"{row['seconds'] / row['average']:.2f}" if row.get("average") else ""
        lines.append(f"| {row['method']} | {row['r']} | {row['seconds']:.2f} | {row['seconds'] / row['floor']:.2f} | "
                     f"{versus_average} | {row['peak_rss'] / 1e6:.0f} | {row['rss_growth'] / 1e6:.0f} | {difference} |")
    if result.get("mergekit_note"):
        lines += ["", f"mergekit: {result['mergekit_note']}"]
    elif result.get("mergekit_versions"):
        lines += ["", f"mergekit: {result['mergekit_versions']} in a separate venv, `run_merge` with "
                  "`merge_method: linear`, `normalize: true`, `dtype: float32`, no tokenizer copy, no model card."]
    return lines


def accumulate_markdown(result: dict) -> list[str]:
    acc, n = result.get("accumulate"), result["inputs"]
    if not acc:
        return []
    return ["", f"## `--accumulate` over {n} inputs (prefixes 1..{n} in one pass)", "",
            "| what | seconds |", "|---|---|",
            f"| floor-all: read the {n} inputs once, the first copied to {n} new files | {acc['floor-all']:.2f} |",
            f"| `accumulate_checkpoints` (writes {n} outputs, {gb(result['checkpoint_bytes'] * n)} GB) "
            f"| {acc['seconds']:.2f} ({acc['seconds'] / acc['floor-all']:.2f}x floor-all) |",
            "", f"Accumulate RSS growth: {acc['rss_growth'] / 1e6:.0f} MB (peak {acc['peak_rss'] / 1e6:.0f} MB)."]


def summary_notes(result: dict) -> list[str]:
    """Plain statements derived from the measurements, for the results file."""
    rows = result["average"]
    above = [row for row in rows if row["average"] > 1.2 * row["floor"]]
    worst = max(rows, key=lambda row: row["average"] / row["floor"])
    goal = ("met at every r measured" if not above else
            "not met at r = " + ", ".join(f"{row['r']} ({row['average'] / row['floor']:.2f}x)" for row in above))
    notes = [
        f"- Goal: `average` within 1.2x of the floor at every r: {goal}. Worst ratio: "
        f"{worst['average'] / worst['floor']:.2f}x at r = {worst['r']}.",
        "- Write share of the floor (floor minus read, over floor): " + ", ".join(
            f"r = {row['r']}: {(row['floor'] - row['read']) / row['floor']:.0%}" for row in rows) + ".",
        f"- Peak RSS growth of `average`: at most {max(row['average_rss_growth'] for row in rows) / 1e6:.0f} MB "
        f"(any r), against {gb(result['checkpoint_bytes'])} GB per checkpoint.",
    ]
    compared = [row for row in result["others"] if row.get("max_abs_diff") is not None]
    if compared:
        notes.append("- Max abs difference to `average` at r = {}: {}.".format(
            result["inputs"], "; ".join(f"{row['method']} {row['max_abs_diff']:.1e}" for row in compared)))
    return notes


# ---------------------------------------------------------------------------------------------
# Main


def mergekit_available(python: str) -> str | None:
    """None when mergekit imports in `python`, else why not."""
    if not Path(python).exists():
        return f"{python} does not exist (install: python3 -m venv /tmp/mk && /tmp/mk/bin/pip install mergekit)"
    check = subprocess.run([python, "-c", "import mergekit.merge"], capture_output=True, text=True)
    return None if check.returncode == 0 else f"mergekit does not import: {check.stderr.strip().splitlines()[-1]}"


def mergekit_versions(python: str) -> str:
    """mergekit's and its torch's versions in that venv."""
    code = ("import importlib.metadata as m, torch; "
            "print(f'mergekit {m.version(\"mergekit\")}, torch {torch.__version__}')")
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def measure_averages(args, folders, python, result) -> dict[int, float]:
    """read, floor and `average` for each r (and the CLI at r = n), taking turns; returns each r's floor."""
    floors = {}
    compare = bool(args.naive_r or args.mergekit_r)
    for r in args.average_r:
        methods = ["read", "floor", "average"] + (["cli"] if r == args.inputs else [])
        runs = interleaved(methods, folders[:r], python, args.repeat,
                           keep="average" if r == args.inputs and compare else "")
        floors[r], average = runs["floor"]["seconds"], runs["average"]
        result["average"].append({"r": r, "read": runs["read"]["seconds"], "floor": floors[r],
                                  "average": average["seconds"], "average_all": average["all_seconds"],
                                  "read_all": runs["read"]["all_seconds"], "floor_all": runs["floor"]["all_seconds"],
                                  "average_peak_rss": average["peak_rss"], "average_rss_growth": average["rss_growth"],
                                  **{f"{method}_other_cores": runs[method]["other_cores"] for method in methods
                                     if method != "cli"}})
        if "cli" in runs:
            result["cli"] = {"r": r, "floor": floors[r], "average": average["seconds"], **runs["cli"]}
        print(f"r={r}: read {runs['read']['seconds']:.2f}s, floor {floors[r]:.2f}s, "
              f"average {average['seconds']:.2f}s ({average['seconds'] / floors[r]:.2f}x)", flush=True)
    for r in sorted((set(args.naive_r) | set(args.mergekit_r)) - set(floors)):
        floors[r] = repeated("floor", folders[:r], python, args.repeat)["seconds"]
    return floors


def measure_others(args, folders, python, result, floors) -> None:
    """The naive loop and mergekit; their r = n outputs compared with `average`'s."""
    averages = {row["r"]: row["average"] for row in result["average"]}
    reference = WORK / f"out-average-{args.inputs}"
    for method, r_values in (("naive", args.naive_r), ("mergekit", args.mergekit_r)):
        if not r_values:
            continue
        if method == "mergekit":
            result["mergekit_note"] = mergekit_available(args.mergekit_python)
            if result["mergekit_note"]:
                continue
            result["mergekit_versions"] = mergekit_versions(args.mergekit_python)
        method_python = python if method == "naive" else args.mergekit_python
        for r in r_values:
            run = repeated(method, folders[:r], method_python, args.repeat, keep=r == args.inputs)
            output = WORK / f"out-{method}-{r}"
            output_file = output / "model.safetensors" if output.is_dir() else output
            compare = r == args.inputs and reference.exists()
            difference = max_abs_difference(reference, output_file) if compare else None
            remove(output)
            result["others"].append({"method": method, "r": r, "floor": floors[r], "average": averages.get(r),
                                     **run, "max_abs_diff": difference})
            print(f"{method} r={r}: {run['seconds']:.2f}s", flush=True)
    remove(reference)


def measure_accumulate(args, folders, python, result) -> None:
    runs = interleaved(["floor-all", "accumulate"], folders, python, args.repeat)
    result["accumulate"] = {**runs["accumulate"], "floor-all": runs["floor-all"]["seconds"]}
    print(f"accumulate: {runs['accumulate']['seconds']:.2f}s", flush=True)


def run_benchmark(args) -> dict:
    import torch

    began, load_before = time.perf_counter(), os.getloadavg()
    config = xlmr_large_config(args.layers, args.vocab)
    shapes = tensor_shapes(config)
    folders = write_inputs(config, shapes, args.inputs)
    python = sys.executable
    result = {"machine": machine(), "torch": torch.__version__, "load_average_before": load_before,
              "layers": args.layers, "vocab": args.vocab, "inputs": args.inputs, "repeat": args.repeat,
              "checkpoint_bytes": (folders[0] / "model.safetensors").stat().st_size, "n_tensors": len(shapes),
              "parameters": sum(torch.Size(s).numel() for s in shapes.values()), "average": [], "others": []}
    floors = measure_averages(args, folders, python, result)
    measure_others(args, folders, python, result, floors)
    if args.accumulate:
        measure_accumulate(args, folders, python, result)
    result["total_minutes"] = (time.perf_counter() - began) / 60
    result["load_average_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (XLM-R large has 24)")
    parser.add_argument("--vocab", type=int, default=100000,
                        help="vocabulary (XLM-R has 250002: 1.23 GB per 4-layer checkpoint; 100000: 0.61 GB)")
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--average-r", type=parse_r_values, default="1,2,5,10")
    parser.add_argument("--naive-r", type=parse_r_values, default="", help="e.g. 10 (default: not run)")
    parser.add_argument("--mergekit-r", type=parse_r_values, default="", help="e.g. 10 (default: not run)")
    parser.add_argument("--accumulate", action="store_true", help="also time --accumulate over all inputs")
    parser.add_argument("--mergekit-python", default="/tmp/mk/bin/python")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results-name", default="average-cpu",
                        help="benchmarks/results/NAME.md and .json (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep benchmarks/_work/ (the inputs) afterwards")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker_method(args.worker, args.paths, args.output)
        return
    command = "python benchmarks/bench_average.py " + " ".join(sys.argv[1:])
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(args)
    finally:
        if not args.keep:
            remove(WORK)
    result["command"] = command.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(result, indent=1) + "\n")
    report = markdown(result, kept_sections(RESULTS / f"{args.results_name}.md"))
    (RESULTS / f"{args.results_name}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
