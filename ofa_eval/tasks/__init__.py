"""Tasks: what the engine knows of NLI, extractive QA, NER and plug-in tasks.

- `registry`: one definition per task (metric, gold and prediction columns, value checks), found
  built in, through the entry-point group `ofa_eval.tasks`, or in a `--task-module` file;
- `metrics`: accuracy, SQuAD F1/EM and span F1, with per-example sufficient statistics.

The engine never branches on a task's name: it asks `get_task(name)`.
"""

from ofa_eval.tasks.registry import (ENTRY_POINT_GROUP, NERDefinition, NLIDefinition, QADefinition, TaskDefinition,
                                     get_task, load_task_modules, task_names)

__all__ = ["ENTRY_POINT_GROUP", "NERDefinition", "NLIDefinition", "QADefinition", "TaskDefinition", "get_task",
           "load_task_modules", "task_names"]
