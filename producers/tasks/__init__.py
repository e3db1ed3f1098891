"""The task registry: `get_task("nli" | "qa" | "ner")` returns the task's module object."""

from __future__ import annotations

from ofa_eval.errors import OfaError
from producers.tasks import ner, nli, qa
from producers.tasks.base import EvalSet, Task, TaskData

TASKS: dict[str, Task] = {module.TASK.name: module.TASK for module in (nli, qa, ner)}

__all__ = ["TASKS", "EvalSet", "Task", "TaskData", "get_task"]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise OfaError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None
