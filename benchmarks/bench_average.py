"""Time and peak memory of `ofa-eval average` against the read floor, a naive loop and mergekit.

Inputs: n model folders (config.json + model.safetensors) shaped like XLM-R large with a 3-way
classification head (hidden 1024, 16 heads, intermediate 4096, vocabulary 250002), random fp32
weights; `--layers` sets the depth (24 is the real model: 2.24 GB per checkpoint, too much for
ten of them in this machine's page cache, so the default is shallower).

Methods, each in its own process, timed inside the process around the work only (interpreter
and library start-up excluded), peak RSS from VmHWM; before every run the outputs of the last
one are deleted, dirty pages synced, and every input the run uses is read once (warm-up): the
page cache cannot be dropped here, so every method sees a warm cache. Best of --repeat runs
(the machine may be shared with other work).

- floor: read the r input files once, sequentially, into one reused page-aligned 4 MiB buffer
  (the fastest plain read we found: a destination at an unlucky page offset is 5x slower here).
- floor+write: the floor, then one checkpoint-sized file written (what any averager must write).
- average: `ofa_eval.averaging.average_checkpoints` of the first r inputs.
- accumulate: `accumulate_checkpoints` of all n inputs (prefixes 1..n, one pass).
- naive: `safetensors.torch.load_file` of every full checkpoint, summed in fp32, `save_file`.
- mergekit: `mergekit.merge.run_merge` with a linear merge, run with the venv's Python given by
  `--mergekit-python` (skipped and recorded as such when it is missing).

    python benchmarks/bench_average.py [--layers 4] [--inputs 10] [--average-r 1-10]
        [--naive-r 10] [--mergekit-r 10] [--mergekit-python /tmp/mk/bin/python] [--repeat 3]
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
WORK = HERE / "_work"
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


def worker_floor(paths: list[Path], output: Path, n_writes: int) -> None:
    """Read the inputs once; then write `n_writes` checkpoint-sized files (preallocated, as ours are)."""
    buffer = mmap.mmap(-1, READ_BUFFER_BYTES)  # page-aligned
    read_files(paths, buffer)
    size = paths[0].stat().st_size
    if n_writes:
        output.mkdir()
    for index in range(n_writes):
        with open(output / f"{index}.bin", "wb", buffering=0) as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
            for start in range(0, size, READ_BUFFER_BYTES):
                handle.write(memoryview(buffer)[: min(READ_BUFFER_BYTES, size - start)])


def worker_average(paths: list[Path], output: Path) -> None:
    from ofa_eval.averaging import average_checkpoints

    average_checkpoints(paths, output)


def worker_accumulate(paths: list[Path], output: Path) -> None:
    from ofa_eval.averaging import accumulate_checkpoints

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
        import ofa_eval.averaging  # noqa: F401 - torch with it
    elif method == "naive":
        import safetensors.torch  # noqa: F401
    elif method == "mergekit":
        import mergekit.config  # noqa: F401
        import mergekit.merge  # noqa: F401
        import mergekit.options  # noqa: F401


def run_worker_method(method: str, inputs: list[Path], output: Path) -> None:
    files = [folder / "model.safetensors" for folder in inputs]
    work = {"floor": lambda: worker_floor(files, output, n_writes=0),
            "floor+write": lambda: worker_floor(files, output, n_writes=1),
            "floor+write-all": lambda: worker_floor(files, output, n_writes=len(files)),
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
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, shape in shapes.items():
            state[name] = torch.empty(shape)
            fill_from_pool(state[name].view(-1), pool, int(torch.randint(0, pool.numel(), (1,), generator=generator)))
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        config.to_json_file(folder / "config.json")
        folders.append(folder)
        del state
    return folders


def warm_up(folders: list[Path]) -> None:
    read_files([folder / "model.safetensors" for folder in folders], mmap.mmap(-1, READ_BUFFER_BYTES))


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def measure(method: str, folders: list[Path], python: str, keep: bool = False) -> dict:
    """Run one method in a fresh process on a warm cache: its in-process seconds and peak RSS."""
    output = WORK / f"out-{method}-{len(folders)}"
    remove(output)
    os.sync()
    warm_up(folders)
    command = [python, str(Path(__file__).resolve()), "--worker", method, "--output", str(output),
               *map(str, folders)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    if completed.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["rss_growth"] = result["peak_rss"] - result["rss_before"]
    if not keep:
        remove(output)
    return result


def summarise(runs: list[dict]) -> dict:
    return {"seconds": min(r["seconds"] for r in runs), "all_seconds": [r["seconds"] for r in runs],
            "peak_rss": max(r["peak_rss"] for r in runs), "rss_growth": max(r["rss_growth"] for r in runs)}


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
    ram = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": round(ram / 2**30, 1), "kernel": platform.release(),
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


def markdown(result: dict) -> str:
    m, size = result["machine"], result["checkpoint_bytes"]
    lines = [
        "# `ofa-eval average`: streaming weight averaging against the read floor", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}, torch {result['torch']}.",
        f"Command: `{result['command']}` ({result['total_minutes']:.1f} min in all).", "",
        f"Inputs: {result['inputs']} XLM-R-large-shaped checkpoints (hidden 1024, 16 heads, intermediate 4096, "
        f"vocabulary {result['vocab']}, 3-way head) with **{result['layers']} of 24 layers**, random fp32 weights: "
        f"{result['n_tensors']} tensors, {result['parameters'] / 1e6:.0f} M parameters, {gb(size)} GB per "
        f"checkpoint ({gb(size * result['inputs'])} GB in all).",
        "Each method runs in its own process and is timed inside it around the work only; before each run the "
        "previous outputs are deleted, dirty pages synced, and the run's inputs read once (warm-up: the page "
        "cache cannot be dropped here, so every method reads from a warm cache). Peak RSS is the child's "
        "VmHWM (peak RSS of its own image); growth is peak minus the RSS just before the work began. "
        f"Best of {result['repeat']} run(s): the machine is shared with other work (1-minute load average "
        f"{result['load_average_before'][0]:.2f} before the benchmark, which adds about 1 while running, "
        f"{result['load_average_after'][0]:.2f} after); every run is in the .json.", "",
        "The floor reads the r input files once into one reused page-aligned 4 MiB buffer. floor+write also "
        "writes one checkpoint-sized file, which any averager has to write: the gap between the two is the "
        "cost of the output alone.", "",
        "## Average of r inputs", "",
        "| r | GB read | floor s | floor+write s | average s | average / floor | average / floor+write "
        "| average GB/s | average RSS growth MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["average"]:
        lines.append(f"| {row['r']} | {gb(size * row['r'])} | {row['floor']:.2f} | {row['floor+write']:.2f} | "
                     f"{row['average']:.2f} | **{row['average'] / row['floor']:.2f}** | "
                     f"{row['average'] / row['floor+write']:.2f} | {size * row['r'] / 1e9 / row['average']:.1f} | "
                     f"{row['average_rss_growth'] / 1e6:.0f} |")
    lines += ["", "## Other ways to average r inputs", "",
              "| method | r | seconds | / floor | / `average` | peak RSS MB | RSS growth MB "
              "| max abs diff to `average` |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result["others"]:
        difference = "" if row.get("max_abs_diff") is None else f"{row['max_abs_diff']:.1e}"
        lines.append(f"| {row['method']} | {row['r']} | {row['seconds']:.2f} | {row['seconds'] / row['floor']:.2f} | "
                     f"{row['seconds'] / row['average']:.2f} | {row['peak_rss'] / 1e6:.0f} | "
                     f"{row['rss_growth'] / 1e6:.0f} | {difference} |")
    if result.get("mergekit_note"):
        lines += ["", f"mergekit: {result['mergekit_note']}"]
    elif result.get("mergekit_versions"):
        lines += ["", f"mergekit: {result['mergekit_versions']} in a separate venv (`python3 -m venv /tmp/mk && "
                  "/tmp/mk/bin/pip install mergekit` pulled a CUDA torch 2.14.1; `pip install torch==2.13.0` "
                  "then put the CPU torch of this project in its place), `run_merge` with `merge_method: linear`, "
                  "`normalize: true`, `dtype: float32`, no tokenizer copy, no model card."]
    acc = result["accumulate"]
    lines += ["", f"## `--accumulate` over {result['inputs']} inputs (prefixes 1..{result['inputs']} in one pass)", "",
              "| what | seconds |", "|---|---|",
              f"| floor: read the {result['inputs']} inputs once | {acc['floor']:.2f} |",
              f"| floor+write-all: read them once and write {result['inputs']} checkpoint-sized files "
              f"| {acc['floor+write-all']:.2f} |",
              f"| `accumulate_checkpoints` (writes {result['inputs']} outputs, {gb(size * result['inputs'])} GB) "
              f"| {acc['seconds']:.2f} ({acc['seconds'] / acc['floor']:.2f}x the floor, "
              f"{acc['seconds'] / acc['floor+write-all']:.2f}x floor+write-all) |",
              f"| separate `average` calls for r = {', '.join(map(str, acc['separate_r']))} (sum of the rows above) "
              f"| {acc['separate_seconds']:.2f} |",
              "", f"Accumulate RSS growth: {acc['rss_growth'] / 1e6:.0f} MB (peak {acc['peak_rss'] / 1e6:.0f} MB).", ""]
    lines += ["## Reading the numbers", "", *summary_notes(result)]
    return "\n".join(lines) + "\n"


def summary_notes(result: dict) -> list[str]:
    """Plain statements derived from the measurements, for the results file."""
    within = [row["r"] for row in result["average"] if row["average"] <= 1.3 * row["floor"]]
    largest = result["average"][-1]
    max_growth = max(row["average_rss_growth"] for row in result["average"])
    others = result["others"]
    compared = [row for row in others if row.get("max_abs_diff") is not None]
    return [
        f"- Goal: `average` within 1.3x of the read floor. Met at r = {', '.join(map(str, within)) or 'none'}; "
        f"at r = {largest['r']} (best of the runs) the ratio is {largest['average'] / largest['floor']:.2f} "
        f"({largest['average'] / largest['floor+write']:.2f}x floor+write). The fixed part of the gap is "
        "writing the output (floor+write minus floor), which weighs most at small r.",
        "- `average` adds the inputs through memory maps, straight from the page cache (no copy), and a "
        "second thread writes the output while the next chunk is summed; on 2 cores that thread competes "
        "with the adds and with anything else running.",
        "- Separate `average` runs delete their single output before it reaches the disk, while the "
        f"{gb(result['checkpoint_bytes'] * result['inputs'])} GB that `--accumulate` writes exceed the kernel's "
        "dirty-page limit and go to disk during the run: compare `--accumulate` with floor+write-all, not with "
        "the sum of separate runs.",
        f"- Peak RSS growth: at most {max_growth / 1e6:.0f} MB for `average` (any r) and "
        f"{result['accumulate']['rss_growth'] / 1e6:.0f} MB for `--accumulate`, against "
        f"{gb(result['checkpoint_bytes'])} GB per checkpoint. "
        + "; ".join(f"{row['method']} at r = {row['r']}: {row['rss_growth'] / 1e9:.1f} GB" for row in others) + ".",
        "- Max abs difference to `average` at r = {}: {}.".format(
            result["inputs"], "; ".join(f"{row['method']} {row['max_abs_diff']:.1e}" for row in compared) or "n/a"),
    ]


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
    """floor, floor+write and `average` for each r, taking turns; returns each r's floor."""
    floors = {}
    for r in args.average_r:
        runs = interleaved(["floor", "floor+write", "average"], folders[:r], python, args.repeat,
                           keep="average" if r == args.inputs else "")
        floors[r], write_floor, average = runs["floor"]["seconds"], runs["floor+write"], runs["average"]
        result["average"].append({"r": r, "floor": floors[r], "floor+write": write_floor["seconds"],
                                  "average": average["seconds"], "average_all": average["all_seconds"],
                                  "average_peak_rss": average["peak_rss"], "average_rss_growth": average["rss_growth"]})
        print(f"r={r}: floor {floors[r]:.2f}s, floor+write {write_floor['seconds']:.2f}s, "
              f"average {average['seconds']:.2f}s", flush=True)
    for r in sorted((set(args.naive_r) | set(args.mergekit_r) | {args.inputs}) - set(floors)):
        floors[r] = repeated("floor", folders[:r], python, args.repeat)["seconds"]
    return floors


def measure_others(args, folders, python, result, floors) -> None:
    """The naive loop and mergekit; their r = n outputs compared with `average`'s."""
    averages = {row["r"]: row["average"] for row in result["average"]}
    reference = WORK / f"out-average-{args.inputs}"
    for method, r_values in (("naive", args.naive_r), ("mergekit", args.mergekit_r)):
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


def measure_accumulate(args, folders, python, result, floors) -> None:
    averages = {row["r"]: row["average"] for row in result["average"]}
    runs = interleaved(["floor+write-all", "accumulate"], folders, python, args.repeat)
    write_all, accumulate = runs["floor+write-all"], runs["accumulate"]
    result["accumulate"] = {**accumulate, "floor": floors[args.inputs], "floor+write-all": write_all["seconds"],
                            "separate_r": sorted(averages), "separate_seconds": sum(averages.values())}
    print(f"accumulate: {accumulate['seconds']:.2f}s", flush=True)


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
    measure_accumulate(args, folders, python, result, floors)
    result["total_minutes"] = (time.perf_counter() - began) / 60
    result["load_average_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (XLM-R large has 24)")
    parser.add_argument("--vocab", type=int, default=250002)
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--average-r", type=parse_r_values, default="1-10")
    parser.add_argument("--naive-r", type=parse_r_values, default="10")
    parser.add_argument("--mergekit-r", type=parse_r_values, default="10")
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
    WORK.mkdir(exist_ok=True)
    try:
        result = run_benchmark(args)
    finally:
        if not args.keep:
            for path in WORK.glob("*"):
                remove(path)
    result["command"] = command.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.results_name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
