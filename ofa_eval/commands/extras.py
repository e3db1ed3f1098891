"""The optional `train` extra (pyproject.toml): the modules it installs, and a check for them.

The base install is the statistics engine. Training, prediction and weight averaging need the
extra; `ofa-eval` turns a missing module of it into a one-line install hint (`ofa_eval.cli`).
"""

from __future__ import annotations

import importlib.util

# the modules the commands import; the extra also installs accelerate, which a user's own
# `transformers.Trainer` needs before `ofa-eval adopt` takes over its output
TRAINING_MODULES = ("torch", "transformers", "tokenizers", "datasets", "submitit", "safetensors")
INSTALL_HINT = "pip install 'ofa-eval[train]'"


def is_training_module(error: ModuleNotFoundError) -> bool:
    """Whether a failed import is one of the extra's modules (or a submodule of one)."""
    return (error.name or "").split(".")[0] in TRAINING_MODULES


def require_training_extra() -> None:
    """Raise ModuleNotFoundError for the first module of the extra that is not installed.

    Commands call this before doing any work, so a missing extra is reported before, say, a
    grid's data is read. It only looks the modules up; nothing is imported.
    """
    for name in TRAINING_MODULES:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
