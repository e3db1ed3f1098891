"""Grid files: the hyperparameter grid a user edits, as TOML (read with `tomllib`).

Top-level keys are shared by every task; a table per task (`[nli]`, `[qa]`, `[ner]`, or a plug-in
task's name) makes the grid train that task and may override any top-level key:

    model = "xlm-roberta-large"                       # short name, in run names and manifests
    model_name_or_path = "FacebookAI/xlm-roberta-large"  # Hub id, or a path starting with ./ ../ or /
    learning_rates = [1e-6, 5e-6, 1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5]
    batch_sizes = [16, 32, 64]
    seeds = [1, 2, 3]
    epochs = 10
    weight_storage = "needed"                         # or "all"

    [qa]
    epochs = 40
    max_length = 384
    data = { hub = "tydiqa" }                         # or local files: see producers.data
    head_alignment = { mode = "frozen-copied", learning_rate = 2e-5, batch_size = 32 }

Every other `RunConfig` field (`max_length`, `stride`, `n_best`, `max_answer_length`,
`weight_decay`, `warmup_ratio`, `max_grad_norm`, `snapshots`, `eval_batch_size`) may be set the
same way. `head_alignment` takes `mode` (default: the task's, `frozen-copied` for NLI and QA,
`shared-init` for NER) and, for the initial fine-tune, `learning_rate` (2e-5), `batch_size`
(32), `epochs` (the task's) and `seed` (0). Relative paths are relative to the grid file.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ofa_eval.common.errors import OfaError
from producers.config import CONFIG_KEYS, RunConfig
from producers.data import check_spec
from producers.tasks import get_task, task_names

GRID_KEYS = {"learning_rates", "batch_sizes", "seeds", "data", "head_alignment"}
PER_RUN = {"task", "learning_rate", "batch_size", "seed"}
SETTING_KEYS = (set(CONFIG_KEYS) - PER_RUN) | GRID_KEYS
HEAD_KEYS = {"mode", "learning_rate", "batch_size", "epochs", "seed"}


@dataclass
class Experiment:
    """One task's grid: the shared settings, the hyperparameter axes, data and head alignment."""

    task: str
    settings: dict
    learning_rates: list[float]
    batch_sizes: list[int]
    seeds: list[int]
    data: dict
    head: dict = field(default_factory=dict)
    base_dir: Path = Path(".")

    def runs(self) -> list[RunConfig]:
        """Every (learning rate, batch size, seed) of the grid, seeds innermost."""
        return [RunConfig(task=self.task, learning_rate=float(lr), batch_size=int(bs), seed=int(seed), **self.settings)
                for lr, bs, seed in itertools.product(self.learning_rates, self.batch_sizes, self.seeds)]

    @property
    def head_mode(self) -> str:
        return self.head.get("mode", get_task(self.task).head_alignment)

    def head_config(self) -> RunConfig:
        """The recipe of the initial fine-tune whose head the runs share."""
        return RunConfig(task=self.task, learning_rate=float(self.head.get("learning_rate", 2e-5)),
                         batch_size=int(self.head.get("batch_size", 32)), seed=int(self.head.get("seed", 0)),
                         **{**self.settings, "epochs": int(self.head.get("epochs", self.settings.get("epochs", 10)))})

    def load_data(self):
        from producers.data import load_task_data

        return load_task_data(self.task, self.data, self.base_dir)


def load_grid(path, tasks=None) -> list[Experiment]:
    """The experiments of a grid file (only `tasks`, when given)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OfaError(f"{path}: not a readable TOML grid file ({error})") from None
    trainable = set(task_names())
    tasks_here = [name for name in document if name in trainable]  # in the file's order
    _check_tables(document, trainable, path)
    shared = {k: v for k, v in document.items() if k not in tasks_here}
    experiments = [_experiment(name, {**shared, **document[name]}, path) for name in tasks_here]
    if tasks is not None:
        experiments = [e for e in experiments if e.task in tasks]
    if not experiments:
        raise OfaError(f"{path}: no task table ({', '.join(f'[{name}]' for name in task_names())}) to train")
    return experiments


def _check_tables(document: dict, trainable: set[str], path: Path) -> None:
    """A table that is neither a task nor a setting is most likely a task that is not registered."""
    for name, value in document.items():
        if isinstance(value, dict) and name not in trainable and name not in SETTING_KEYS:
            raise OfaError(f"{path}: [{name}] is not a task that can be trained "
                           f"(known: {', '.join(sorted(trainable))}); a task of your own needs its package "
                           "installed or `ofa-eval --task-module FILE.py` (docs/tasks.md)")


def _experiment(task: str, values: dict, path: Path) -> Experiment:
    unknown = set(values) - SETTING_KEYS
    if unknown:
        raise OfaError(f"{path} [{task}]: unknown key(s) {', '.join(sorted(unknown))} "
                       f"(known: {', '.join(sorted(SETTING_KEYS))})")
    missing = {"model", "model_name_or_path", "learning_rates", "batch_sizes", "seeds", "data"} - set(values)
    if missing:
        raise OfaError(f"{path} [{task}]: missing key(s) {', '.join(sorted(missing))}")
    try:
        check_spec(values["data"])
    except OfaError as error:
        raise OfaError(f"{path} [{task}]: {error}") from None
    head = values.get("head_alignment", {})
    if set(head) - HEAD_KEYS:
        raise OfaError(f"{path} [{task}]: unknown head_alignment key(s) {', '.join(sorted(set(head) - HEAD_KEYS))}")
    settings = {k: v for k, v in values.items() if k not in GRID_KEYS}
    settings["model_name_or_path"] = resolve(settings["model_name_or_path"], path.parent)
    try:
        RunConfig(task=task, learning_rate=1.0, batch_size=1, seed=0, **settings)
    except (TypeError, ValueError) as error:
        raise OfaError(f"{path} [{task}]: {error}") from None
    return Experiment(task, settings, _numbers(values, "learning_rates", float, path, task),
                      _numbers(values, "batch_sizes", int, path, task), _numbers(values, "seeds", int, path, task),
                      dict(values["data"]), dict(head), path.parent.resolve())


def _numbers(values: dict, key: str, kind: type, path: Path, task: str) -> list:
    """A grid axis: a non-empty list of numbers of the given kind (integers must be whole)."""
    axis = values[key]
    wrong = [v for v in (axis if isinstance(axis, list) else [axis])
             if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v))
             or v != v or (kind is float and v <= 0)]
    if not isinstance(axis, list) or not axis or wrong:
        shown = f" ({wrong[0]!r})" if wrong else ""
        raise OfaError(f"{path} [{task}]: {key} must be a non-empty list of "
                       f"{'positive numbers' if kind is float else 'whole numbers'}{shown}")
    return [kind(v) for v in axis]


def resolve(name_or_path: str, base: Path) -> str:
    """A path written relative to the grid file made absolute; Hub ids stay as they are."""
    if name_or_path.startswith(("./", "../", "/", "~")):
        return str((base / Path(name_or_path).expanduser()).resolve())
    return name_or_path
