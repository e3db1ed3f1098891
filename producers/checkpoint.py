"""A run's resume state in one safetensors file, without pickle.

`checkpoint/state.safetensors` holds every tensor of the state: the model's weights
(`model/<name>`), the running CA mean (`ca/<name>`), the optimizer's per-parameter state
(`optimizer/<parameter index>/<key>`: AdamW's `step`, `exp_avg`, `exp_avg_sq`) and the torch,
CUDA and NumPy generator states (`rng/...`). Everything else is one JSON document in the file's
header metadata (key `ofa_eval_checkpoint`): the run's progress (step, snapshot records, best
snapshot), the optimizer's parameter groups and non-tensor state, the scheduler's state, and
Python's and NumPy's generator scalars. Restoring all of it makes a resumed run bit-identical to
an uninterrupted one on a CPU (`tests/test_producers_training.py`).

The file is written to a temporary beside it and renamed into place: the checkpoint on disk is
always the last one written completely. Nothing here unpickles, so a checkpoint from elsewhere
cannot run code when it is read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from producers import artifacts

FILE = "state.safetensors"
METADATA_KEY = "ofa_eval_checkpoint"
FORMAT = 1


def save(path: Path, model, optimizer, scheduler, progress: dict, ca: dict | None) -> None:
    """Write the state of a run after a snapshot: `progress` is JSON, `ca` a dict of tensors."""
    from safetensors.torch import save_file

    tensors = {**_prefixed("model", model.state_dict()), **_prefixed("ca", ca or {})}
    optimizer_tensors, optimizer_json = _split_optimizer(optimizer.state_dict())
    rng_tensors, rng_json = _rng_states()
    document = {"format": FORMAT, "progress": progress, "optimizer": optimizer_json,
                "scheduler": scheduler.state_dict(), "rng": rng_json}
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    with artifacts.atomic_path(path) as temporary:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(temporary),
                  metadata={METADATA_KEY: json.dumps(document)})


def load(path: Path, model, optimizer, scheduler) -> tuple[dict, dict | None]:
    """Restore model, optimizer, scheduler and generators; returns (progress, CA mean or None)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        document = json.loads(handle.metadata()[METADATA_KEY])
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {document.get('format')}, expected {FORMAT}")
    tensors = load_file(str(path))
    model.load_state_dict(_unprefixed("model", tensors))
    optimizer.load_state_dict(_join_optimizer(tensors, document["optimizer"], optimizer))
    scheduler.load_state_dict(document["scheduler"])
    _set_rng_states(tensors, document["rng"])
    ca = _unprefixed("ca", tensors)
    return document["progress"], ca or None


def _prefixed(prefix: str, tensors: dict) -> dict:
    return {f"{prefix}/{name}": value for name, value in tensors.items()}


def _unprefixed(prefix: str, tensors: dict) -> dict:
    start = len(prefix) + 1
    return {name[start:]: value for name, value in tensors.items() if name.startswith(prefix + "/")}


# --- the optimizer: per-parameter tensors in the file, the rest in JSON ---------------------------


def _split_optimizer(state_dict: dict) -> tuple[dict, dict]:
    import torch

    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict, saved: dict, optimizer) -> dict:
    """The optimizer's state_dict again; tuples (AdamW's betas) that JSON made lists are tuples again."""
    state: dict[int, dict] = {int(index): dict(values) for index, values in saved["scalars"].items()}
    for name, value in _unprefixed("optimizer", tensors).items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()["param_groups"]
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in group.items()}
              for group, now in zip(saved["param_groups"], current)]
    return {"state": state, "param_groups": groups}


# --- random number generators ---------------------------------------------------------------------


def _rng_states() -> tuple[dict, dict]:
    import numpy as np
    import torch

    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {"rng/torch": torch.get_rng_state(), "rng/numpy": torch.from_numpy(keys.astype("int64"))}
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, python_state, gauss = random.getstate()
    return tensors, {"python": [version, list(python_state), gauss],
                     "numpy": [kind, int(position), int(has_gauss), float(cached)]}


def _set_rng_states(tensors: dict, saved: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["rng/torch"])
    cuda = _unprefixed("rng/cuda", tensors)  # {"0": state of device 0, ...}
    if cuda:
        torch.cuda.set_rng_state_all([cuda[str(i)] for i in range(len(cuda))])
    version, python_state, gauss = saved["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype("uint32"), position, has_gauss, cached))
