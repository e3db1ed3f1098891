"""The offline quickstart's producer side: data, tokenizer, tiny model, head alignment, grid.

`train_quickstart_grid(out_dir)` writes
- `out_dir/data/`: the synthetic corpus (`producers.synthetic`),
- `out_dir/unlabeled/`: unlabeled synthetic text of every language, one `<language>.txt` each,
- `out_dir/model/`: a tokenizer trained on that text and a tiny XLM-R-shaped model pretrained on
  it by masked language modelling, as `ofa-eval build-model` makes it
  (`producers.pretrain.build_model_from_files`), so that every run is fine-tuned from one
  pretrained model, as in the paper,
- `out_dir/grid.toml`: a copy of `producers/grids/quickstart.toml`,
- `out_dir/runs/`: the aligned heads (`_heads/`) and one folder per run (docs/artifacts.md),
and returns `out_dir/runs`. Everything already there is reused: complete runs are skipped and
interrupted ones resume. Pretraining and training use one CPU thread (a model this small gains
nothing from more, and one thread is not slowed down by other processes competing for the cores).
"""

from __future__ import annotations

import shutil
from pathlib import Path

GRID = Path(__file__).parent / "grids" / "quickstart.toml"


def train_quickstart_grid(out_dir: Path, tasks=("nli", "qa", "ner"), progress: bool = True,
                          pretrain_steps: int | None = None) -> Path:
    """Generate the data, build the pretrained tiny model, and train the quickstart grid; returns
    the runs folder. `pretrain_steps` (default `pretrain.QUICKSTART_PRETRAIN_STEPS`) lets tests
    pretrain for less."""
    from ofa_eval.weights.averaging import torch_threads
    from producers import pretrain, synthetic
    from producers.grid import load_grid
    from producers.launch import train_local

    out_dir = Path(out_dir)
    synthetic.write_corpus(out_dir / "data")
    # sorted, as a shell lists `unlabeled/*.txt`: `ofa-eval build-model` on them reuses the model
    texts = sorted(synthetic.write_unlabeled(out_dir / "unlabeled"))
    grid = out_dir / "grid.toml"
    if not grid.is_file():
        shutil.copyfile(GRID, grid)
    if pretrain_steps is None:
        pretrain_steps = pretrain.QUICKSTART_PRETRAIN_STEPS
    pretrain.build_model_from_files(out_dir / "model", texts, pretrain_steps=pretrain_steps, progress=progress)
    with torch_threads(1):
        train_local(load_grid(grid, tasks=tuple(tasks)), out_dir / "runs", progress=progress)
    return out_dir / "runs"
