"""The data layer: task specs, sources, the canonical table and its cache."""

from cdco_core.data.canonical import TaskData, load_task, load_tasks, open_task, read_task_file, task_specs

__all__ = ["TaskData", "load_task", "load_tasks", "open_task", "read_task_file", "task_specs"]
