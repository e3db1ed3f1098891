"""Timing helpers shared by the benchmark scripts: medians after a warm-up run."""

from __future__ import annotations

import statistics
import subprocess
import time


def median_seconds(function, repeat: int) -> float:
    """Median wall time of `function()` over `repeat` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_command_seconds(command: list[str], repeat: int = 5) -> float:
    """Median wall time of a whole process (start-up included), after a warm-up run (page cache,
    bytecode)."""
    return median_seconds(lambda: subprocess.run(command, check=True, capture_output=True), repeat)
