"""The offline quickstart's producer side: data, tokenizer, tiny model, head alignment, grid.

`train_quickstart_grid(out_dir)` writes
- `out_dir/data/`: the synthetic corpus (`producers.synthetic`),
- `out_dir/model/`: a tokenizer trained on it and a tiny XLM-R-shaped model (`producers.modeling`),
- `out_dir/grid.toml`: a copy of `producers/grids/quickstart.toml`,
- `out_dir/runs/`: the aligned heads (`_heads/`) and one folder per run (docs/artifacts.md),
and returns `out_dir/runs`. Everything already there is reused: complete runs are skipped and
interrupted ones resume. Training uses one CPU thread (a model this small gains nothing from
more, and one thread is not slowed down by other processes competing for the cores).
"""

from __future__ import annotations

import shutil
from pathlib import Path

GRID = Path(__file__).parent / "grids" / "quickstart.toml"


def train_quickstart_grid(out_dir: Path, tasks=("nli", "qa", "ner"), progress: bool = True) -> Path:
    """Generate the data, build the tiny model, and train the quickstart grid; returns the runs folder."""
    import torch

    from producers import modeling, synthetic
    from producers.grid import load_grid
    from producers.launch import train_local

    out_dir = Path(out_dir)
    data = synthetic.write_corpus(out_dir / "data")
    if not (out_dir / "model" / "config.json").is_file():
        modeling.build_tiny_model(out_dir / "model", synthetic.corpus_texts(data))
    grid = out_dir / "grid.toml"
    if not grid.is_file():
        shutil.copyfile(GRID, grid)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_local(load_grid(grid, tasks=tuple(tasks)), out_dir / "runs", progress=progress)
    finally:
        torch.set_num_threads(threads)
    return out_dir / "runs"
