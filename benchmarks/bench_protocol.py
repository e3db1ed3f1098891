"""Whole-process time of producing the paper's Tables 1 and 2 against the start-up floor.

Baseline (the floor): `python -c "import duckdb, polars"`, the least any command over the store
can cost. Measured: one `ofa-eval protocol --all --replay` process computing every cell of
Tables 1 and 2 for the three tasks, and the three one-task processes. Each command runs
`--repeat` times after one warm-up; the median is reported, with the ratio to the floor.

    python benchmarks/bench_protocol.py [--release ../shared/ofa-xlt-release] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from timing import median_command_seconds as median_seconds

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
RESULTS = HERE / "results"


def ofa_eval_command() -> list[str]:
    script = shutil.which("ofa-eval", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "ofa_eval.cli"]


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=HERE.parent.parent / "shared" / "ofa-xlt-release")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    db = WORK / "release.duckdb"
    db.unlink(missing_ok=True)
    ofa = ofa_eval_command() + ["--db", str(db)]
    subprocess.run(ofa + ["import", "ofa-xlt", str(args.release)], check=True, capture_output=True)
    tables = ["protocol", "--model", "xlm-roberta-large", "--all", "--replay", "--exclude-draw", "1", "--format", "csv"]
    floor = median_seconds([sys.executable, "-c", "import duckdb, polars"], args.repeat)
    all_tasks = median_seconds(ofa + tables, args.repeat)
    per_task = {task: median_seconds(ofa + tables + ["--task", task], args.repeat) for task in ("nli", "tydiqa", "ner")}
    result = {
        "machine": machine(), "repeat": args.repeat, "floor_seconds": floor,
        "tables_1_and_2_one_process_seconds": all_tasks, "ratio_one_process": all_tasks / floor,
        "per_task_seconds": per_task, "ratio_per_task": {t: s / floor for t, s in per_task.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "protocol-cpu.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Tables 1 and 2 from the release: whole-process time against the start-up floor", "",
        f"Machine: {result['machine']}. Command: `python benchmarks/bench_protocol.py --repeat {args.repeat}`.",
        "Median of the repeats after one warm-up run; the goal is within 3x of the floor.", "",
        "| what | seconds | ratio to floor |", "|---|---|---|",
        f"| floor: `python -c \"import duckdb, polars\"` | {floor:.3f} | 1.00 |",
        f"| `ofa-eval protocol --all --replay` (3 tasks, 240+ cells, one process) | {all_tasks:.3f} | {all_tasks / floor:.2f} |",
    ]
    lines += [f"| the same, `--task {t}` only | {s:.3f} | {s / floor:.2f} |" for t, s in per_task.items()]
    (RESULTS / "protocol-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
