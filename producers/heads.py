"""Aligning task heads across runs, so that their weights can be averaged (paper, appendix A.1).

Runs that start from differently initialised task heads end up with incompatible weights. Two
modes make every run of a grid start from the same head:

- `frozen-copied` (NLI and QA in the paper, after Schmidt et al. 2023): one initial fine-tune
  (batch size 32, learning rate 2e-5 in the paper) trains a model; its task head is saved, and
  every grid run starts from the pretrained body plus that head, which stays frozen.
- `shared-init` (NER in the paper): the head is randomly initialised once (from a seed) and
  saved; every run starts from it and trains it.
- `none`: every run initialises its own head (no alignment; for comparison only).

The head is saved once per (task, model) under `<runs>/_heads/<task>-<model>/`: `head.safetensors`
and `head.json` (mode, content hash, and the initial fine-tune's recipe), written last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ofa_eval.common.errors import OfaError

MODES = ("frozen-copied", "shared-init", "none")


@dataclass(frozen=True)
class HeadAlignment:
    """How a run's task head is aligned: the mode, and the saved head every run starts from."""

    mode: str = "none"
    path: str | None = None
    sha256: str | None = None

    def manifest(self) -> dict:
        return {"mode": self.mode, "head_sha256": self.sha256}


def head_folder(runs_dir, config) -> Path:
    return Path(runs_dir) / "_heads" / f"{config.task}-{config.model}"


def read_head(folder) -> HeadAlignment | None:
    """The head saved in `folder`, or None if it is not complete yet."""
    info = Path(folder) / "head.json"
    if not info.is_file():
        return None
    meta = json.loads(info.read_text())
    return HeadAlignment(meta["mode"], str(Path(folder) / "head.safetensors"), meta["sha256"])


def prepare_head(mode: str, config, data, folder, progress: bool = False) -> HeadAlignment:
    """Make (or reuse) the aligned head; `config` is the initial fine-tune's recipe."""
    if mode not in MODES:
        raise OfaError(f"unknown head alignment {mode!r} (known: {', '.join(MODES)})")
    if mode == "none":
        return HeadAlignment()
    existing = read_head(folder)
    if existing is not None:
        if existing.mode != mode:
            raise OfaError(f"{folder}: holds a {existing.mode} head, the grid asks for {mode}")
        return existing
    head = _initial_head(mode, config, data, progress)
    return save_head(folder, mode, head, config)


def _initial_head(mode: str, config, data, progress: bool) -> dict:
    from transformers import set_seed

    from producers.finetune import fine_tune
    from producers.modeling import head_state, load_model
    from producers.tasks import get_task

    task = get_task(config.task)
    set_seed(config.seed)
    model = load_model(task, config.model_name_or_path, data.label_names)
    if mode == "frozen-copied":
        fine_tune(model, task, data, config, progress=progress)
    return head_state(model)


def save_head(folder, mode: str, head: dict, config) -> HeadAlignment:
    from safetensors.torch import save_file

    from producers.artifacts import atomic_path, write_json
    from producers.modeling import tensors_sha256

    folder = Path(folder)
    with atomic_path(folder / "head.safetensors") as temporary:
        save_file({k: v.contiguous() for k, v in head.items()}, str(temporary))
    sha256 = tensors_sha256(head)
    recipe = {k: v for k, v in config.recipe().items() if k not in ("weight_storage",)}
    write_json(folder / "head.json", {"mode": mode, "sha256": sha256, "initial_fine_tune": recipe
                                      if mode == "frozen-copied" else None, "seed": config.seed})
    return HeadAlignment(mode, str(folder / "head.safetensors"), sha256)


def apply_head(model, alignment: HeadAlignment | None) -> None:
    """Load the aligned head into a freshly built model; freeze it when the mode says so."""
    if alignment is None or alignment.mode == "none":
        return
    from safetensors.torch import load_file

    from producers.modeling import head_names, tensors_sha256

    head = load_file(alignment.path)
    if sorted(head) != sorted(head_names(model)) or tensors_sha256(head) != alignment.sha256:
        raise OfaError(f"{alignment.path}: the saved head does not fit this model or its hash changed")
    parameters = dict(model.named_parameters())
    for name, tensor in head.items():
        parameters[name].data.copy_(tensor)
        if alignment.mode == "frozen-copied":
            parameters[name].requires_grad_(False)
