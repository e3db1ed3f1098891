"""The trainable tasks: `get_task(name)` returns the task that trains and predicts under that name.

Each task is its engine definition (`ofa_eval.tasks`) plus the training code (`Task`). Built in:
nli, qa and ner; a plug-in task registered with the engine (entry-point group `ofa_eval.tasks`)
can be trained when its class derives from `Task`.
"""

from __future__ import annotations

from ofa_eval.tasks import registry
from ofa_eval.common.errors import OfaError
from producers.tasks import ner, nli, qa
from producers.tasks.base import EvalSet, Task, TaskData

BUILT_IN: dict[str, Task] = {module.TASK.name: module.TASK for module in (nli, qa, ner)}

__all__ = ["BUILT_IN", "EvalSet", "Task", "TaskData", "get_task", "task_names"]


def _plug_in(name: str) -> Task | None:
    """The registered plug-in called `name` when it can be trained, else None."""
    task = registry.get_task(name) if name in registry.task_names() else None
    return task if isinstance(task, Task) else None


def task_names() -> list[str]:
    """The names of the tasks that can be trained, sorted."""
    return sorted(set(BUILT_IN) | {name for name in registry.task_names() if _plug_in(name) is not None})


def get_task(name: str) -> Task:
    """The trainable task called `name`; OfaError naming the known ones when there is none."""
    task = BUILT_IN.get(name) or _plug_in(name)
    if task is not None:
        return task
    if name in registry.task_names():
        raise OfaError(f"task {name!r} cannot be trained: its definition {registry.get_task(name)!r} "
                       "does not derive from producers.tasks.Task")
    raise OfaError(f"unknown task {name!r} (known: {', '.join(task_names())})")
