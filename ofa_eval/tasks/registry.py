"""The task registry: what the engine knows of a task, and where tasks come from.

A task definition (`TaskDefinition`) gives the task's name, its metric (`ofa_eval.tasks.metrics`), the
columns of its gold and prediction tables in the run format (docs/artifacts.md), and its primary
metric: the value model selection compares and the store records for the task. Built in: `nli`,
`qa` and `ner`. Other packages add tasks through the entry-point group `ofa_eval.tasks`; each
entry point is named after its task and points at a `TaskDefinition` subclass or instance:

    [project.entry-points."ofa_eval.tasks"]
    pos = "my_package.pos:POSTask"

A task can also live in a plain Python file, without a package: `ofa-eval --task-module FILE.py`
(or the environment variable OFA_EVAL_TASK_MODULES, paths separated by ':') imports the file and
registers every task class it defines (`load_task_modules`).

Plug-ins are loaded the first time the registry is asked, so importing this module stays cheap.
A task that can also be trained derives from `producers.tasks.Task` (a `TaskDefinition` with the
training code), so one class carries both parts (docs/tasks.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from ofa_eval.common.errors import OfaError
from ofa_eval.tasks.metrics import AccuracyMetric, EntityF1Metric, Metric, SquadMetric

ENTRY_POINT_GROUP = "ofa_eval.tasks"
TASK_MODULES_ENV = "OFA_EVAL_TASK_MODULES"


class TaskDefinition:
    """What the engine needs of a task; subclasses set the class attributes."""

    name: str = ""
    metric: Metric | None = None
    gold_column: str = ""  # the gold table's value column (besides example_id)
    prediction_column: str = ""  # the prediction tables' value column

    @property
    def primary_metric(self) -> str:
        """The metric value that selects snapshots and runs (SRC-DEV, TRG-DEV)."""
        return self.metric.name

    def __repr__(self) -> str:
        return f"<task {self.name!r}: {type(self).__module__}.{type(self).__qualname__}>"

    def value_column(self, kind: str) -> str:
        """The value column of a `kind` ('gold' or 'prediction') table."""
        return self.gold_column if kind == "gold" else self.prediction_column

    def value_problem(self, kind: str, values, label_names: list[str] | None) -> str | None:
        """What is wrong with the value column (a polars Series) of a `kind` ('gold' or 'prediction')
        table, or None; `label_names` is the manifest's label list, if any. Plug-in tasks accept
        every value unless they override this (ofa_eval.artifacts.validation calls it)."""
        return None

    def pair_problem(self, example_ids, gold, predictions) -> str | None:
        """What is wrong with a prediction table given its gold table (Series aligned on
        `example_ids`), or None."""
        return None


class NLIDefinition(TaskDefinition):
    """Natural language inference: integer class labels, accuracy."""

    name = "nli"
    metric = AccuracyMetric()
    gold_column = "label"
    prediction_column = "label"

    def value_problem(self, kind, values, label_names):
        column = self.value_column(kind)
        if not values.dtype.is_integer():
            return f"column '{column}' holds {values.dtype}, not integer labels"
        if values.null_count():
            return f"column '{column}' has {values.null_count()} missing label(s)"
        top = len(label_names) - 1 if label_names else None
        outside = values.filter((values < 0) | (values > top)) if top is not None else values.filter(values < 0)
        if len(outside):
            allowed = f"0..{top} ({', '.join(label_names)})" if top is not None else "0 or more"
            return f"{len(outside)} label(s) outside {allowed}, e.g. {outside[0]}"
        return None


class QADefinition(TaskDefinition):
    """Extractive QA: gold answer strings, one predicted answer string, SQuAD v1.1 F1 and EM."""

    name = "qa"
    metric = SquadMetric()
    gold_column = "answers"
    prediction_column = "answer"

    def value_problem(self, kind, values, label_names):
        column = self.value_column(kind)
        if kind == "prediction":
            return _strings_problem(column, values)
        problem = _string_lists_problem(column, values, "answer strings")
        if problem is None and (values.list.len() == 0).any():
            return f"column '{column}' has {(values.list.len() == 0).sum()} example(s) without a gold answer"
        return problem


class NERDefinition(TaskDefinition):
    """Named entity recognition: one IOB2 tag per word, entity-level F1."""

    name = "ner"
    metric = EntityF1Metric()
    gold_column = "tags"
    prediction_column = "tags"

    def value_problem(self, kind, values, label_names):
        column = self.value_column(kind)
        problem = _string_lists_problem(column, values, "tags")
        if problem is not None:
            return problem
        tags = values.explode().drop_nulls().unique().sort().to_list()
        if label_names:
            unknown = [tag for tag in tags if tag not in label_names]
            if unknown:
                return f"column '{column}': tag(s) {', '.join(map(repr, unknown[:5]))} not in label_names"
        return next((f"column '{column}': {tag!r} is not an IOB2 tag (O, B-TYPE, I-TYPE; IOBES E-/S- also read)"
                     for tag in tags if not _is_entity_tag(tag)), None)

    def pair_problem(self, example_ids, gold, predictions):
        differ = (gold.list.len() != predictions.list.len()).arg_true()
        if len(differ):
            first = differ[0]
            return (f"{len(differ)} example(s) with a different number of predicted and gold tags, e.g. "
                    f"{example_ids[first]!r}: {len(predictions[first])} predicted, {len(gold[first])} gold")
        return None


BUILT_IN = (NLIDefinition(), QADefinition(), NERDefinition())

_registry: dict[str, TaskDefinition] | None = None
_task_modules: dict[Path, list[TaskDefinition]] = {}  # task module files loaded, by resolved path


def _tasks() -> dict[str, TaskDefinition]:
    """The registry, filled with the built-in tasks, the plug-ins and the task modules named in
    OFA_EVAL_TASK_MODULES on first use."""
    global _registry
    if _registry is None:
        _registry = {task.name: task for task in BUILT_IN}
        from importlib.metadata import entry_points  # costs ~0.1 s: only when a task is looked up

        try:
            for entry_point in entry_points(group=ENTRY_POINT_GROUP):
                _add(_load(entry_point), f"task plug-in {entry_point.name} = {entry_point.value}",
                     expected_name=entry_point.name)
            for path in _environment_modules():
                load_task_module(path)
        except OfaError:
            _registry = None
            _task_modules.clear()
            raise
    return _registry


def _environment_modules() -> list[str]:
    return [path for path in os.environ.get(TASK_MODULES_ENV, "").split(os.pathsep) if path]


def load_task_modules(paths) -> None:
    """Import task module files (`ofa-eval --task-module`) and register the tasks they define.

    Their paths are then put in OFA_EVAL_TASK_MODULES, so that processes started from this one
    (SLURM jobs, subprocesses) register the same tasks."""
    for path in paths:
        if path:
            load_task_module(path)
    os.environ[TASK_MODULES_ENV] = os.pathsep.join(map(str, _task_modules))


def load_task_module(path) -> list[TaskDefinition]:
    """Import one Python file and register every task class defined in it: each class deriving
    from `TaskDefinition` (or `producers.tasks.Task`) with a `name`. A file is imported once."""
    path = Path(path).expanduser().resolve()
    _tasks()  # first, so that a file also named in OFA_EVAL_TASK_MODULES is imported once
    if path in _task_modules:
        return _task_modules[path]
    module = _import_file(path)
    classes = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, TaskDefinition)
               and value.__module__ == module.__name__ and value.name]
    if not classes:
        raise OfaError(f"{path}: defines no task (a class deriving from producers.tasks.Task or "
                       "ofa_eval.tasks.registry.TaskDefinition, with a name; see docs/tasks.md)")
    _task_modules[path] = [_add(cls, f"{path}: {cls.__qualname__}") for cls in classes]
    return _task_modules[path]


def _import_file(path: Path):
    if not path.is_file():
        raise OfaError(f"{path}: no such task module file")
    stem = re.sub(r"\W", "_", path.stem)
    name = f"ofa_eval_task_module_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise OfaError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as an import would (dataclasses, pickling need it)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: say which file, whatever went wrong in it
        del sys.modules[name]
        raise OfaError(f"{path}: cannot be imported ({type(error).__name__}: {_one_line(error)})") from None
    return module


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _load(entry_point):
    try:
        return entry_point.load()
    except Exception as error:  # a broken plug-in: say which one, whatever went wrong in it
        raise OfaError(f"task plug-in {entry_point.name} = {entry_point.value}: cannot be loaded "
                       f"({type(error).__name__}: {error})") from None


def _add(task, origin: str, expected_name: str | None = None) -> TaskDefinition:
    if isinstance(task, type) and issubclass(task, TaskDefinition):
        task = task()
    if not isinstance(task, TaskDefinition):
        raise OfaError(f"{origin}: not a TaskDefinition ({task!r})")
    if expected_name is not None and task.name != expected_name:
        raise OfaError(f"{origin}: the entry point is named {expected_name!r} but the task {task.name!r}")
    problem = _definition_problem(task)
    if problem:
        raise OfaError(f"{origin}: {problem}")
    known = _registry.get(task.name)
    if known is not None and type(known) is not type(task):
        raise OfaError(f"{origin}: task {task.name!r} is already defined ({known!r})")
    return _registry.setdefault(task.name, task)


def _definition_problem(task: TaskDefinition) -> str | None:
    if not task.name:
        return "the task has no name"
    if not isinstance(task.metric, Metric):
        return f"task {task.name!r}: metric is not an ofa_eval.tasks.metrics.Metric ({task.metric!r})"
    if not (task.gold_column and task.prediction_column):
        return f"task {task.name!r}: gold_column and prediction_column must be set"
    return None


def register_task(task):
    """Add a task (a TaskDefinition instance or subclass); returns its argument, so it can decorate a class."""
    _tasks()
    _add(task, f"register_task({task!r})")
    return task


def get_task(name: str) -> TaskDefinition:
    """The registered task called `name`; OfaError naming the known ones when there is none."""
    task = _tasks().get(name)
    if task is None:
        raise OfaError(f"unknown task {name!r} (known: {', '.join(task_names())})")
    return task


def task_names() -> list[str]:
    """The names of every registered task, sorted."""
    return sorted(_tasks())


# --- value checks of the built-in tasks (TaskDefinition.value_problem) ---------------------------


def _strings_problem(column: str, values) -> str | None:
    import polars as pl

    if values.dtype != pl.String:
        return f"column '{column}' holds {values.dtype}, not strings"
    if values.null_count():
        return f"column '{column}' has {values.null_count()} missing value(s)"
    return None


def _string_lists_problem(column: str, values, what: str) -> str | None:
    import polars as pl

    if values.dtype != pl.List(pl.String):
        return f"column '{column}' holds {values.dtype}, not lists of {what}"
    if values.null_count():
        return f"column '{column}' has {values.null_count()} missing value(s)"
    if (values.list.drop_nulls().list.len() != values.list.len()).any():
        return f"column '{column}' has missing {what} inside its lists"
    return None


def _is_entity_tag(tag: str) -> bool:
    """What the entity-level F1 reads as a tag: O, or B-/I- (IOB2; E-/S- of IOBES too) and a type."""
    from ofa_eval.tasks.metrics import _parse_tag

    try:
        _parse_tag(tag)
    except ValueError:
        return False
    return True
