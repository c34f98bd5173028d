"""Class-incremental task schedules: which classes arrive in which task."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskSchedule"]


@dataclass(frozen=True)
class TaskSchedule:
    r"""The order in which classes arrive: task `t` brings the classes `tasks[t]`, disjoint from the others.

    Example::

        >>> schedule = TaskSchedule([["cat", "dog"], ["car"]], labels=["car", "cat", "dog"])
        >>> schedule.seen_classes(1)
        ['cat', 'dog', 'car']

    Args:
        tasks (`Sequence[Sequence[str]]`): the classes of each task, in arrival order.
        labels (`Sequence[str]`, *optional*): the model's whole label set; when given, every scheduled class
            must be in it (a class it does not know is an error naming it).
    """

    tasks: tuple[tuple[str, ...], ...]

    def __init__(self, tasks: Sequence[Sequence[str]], labels: Sequence[str] | None = None) -> None:
        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
            raise TypeError(f"tasks must be a list of lists of class names, got {type(tasks).__name__}.")
        normalised = []
        for t, task in enumerate(tasks):
            if isinstance(task, (str, bytes)) or not isinstance(task, Iterable):
                raise TypeError(f"task {t} must be a list of class names, got {task!r}.")
            classes = tuple(str(c) for c in task)
            if not classes:
                raise ValueError(f"task {t} has no classes; every task needs at least one.")
            normalised.append(classes)
        if not normalised:
            raise ValueError("a task schedule needs at least one task.")
        where: dict[str, int] = {}
        for t, classes in enumerate(normalised):
            for c in classes:
                if c in where:
                    raise ValueError(
                        f"class {c!r} is scheduled twice (tasks {where[c]} and {t}); in class-incremental "
                        "learning each class arrives in exactly one task."
                    )
                where[c] = t
        if labels is not None:
            known = set(map(str, labels))
            unknown = [c for c in where if c not in known]
            if unknown:
                raise ValueError(
                    f"the task schedule names classes the model does not know: {unknown}; its labels are "
                    f"{sorted(known)}."
                )
        object.__setattr__(self, "tasks", tuple(normalised))

    @classmethod
    def split(
        cls,
        labels: Sequence[str],
        num_tasks: int,
        seed: int | None = 0,
        first_task_size: int | None = None,
        exclude: Sequence[str] = (),
    ) -> TaskSchedule:
        """Split `labels` into `num_tasks` tasks of near-equal size (a class order shuffled with `seed`).

        Args:
            labels (`Sequence[str]`): the classes to schedule.
            num_tasks (`int`): how many tasks.
            seed (`int | None`, *optional*, defaults to 0): shuffles the class order; `None` keeps `labels`' order.
            first_task_size (`int`, *optional*): classes of the first task (a larger base task, as in many
                class-incremental protocols); the rest are split evenly.
            exclude (`Sequence[str]`, *optional*): classes left out of every task (e.g. a "no relation" class).

        Returns:
            `TaskSchedule`: the schedule.
        """
        classes = [str(c) for c in labels if str(c) not in set(map(str, exclude))]
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}.")
        if seed is not None:
            random.Random(seed).shuffle(classes)
        head: list[list[str]] = []
        if first_task_size is not None:
            if not 0 < first_task_size < len(classes) or num_tasks < 2:
                raise ValueError(
                    f"first_task_size must be in [1, {len(classes) - 1}] with num_tasks >= 2, got "
                    f"{first_task_size} with num_tasks={num_tasks}."
                )
            head, classes, num_tasks = [classes[:first_task_size]], classes[first_task_size:], num_tasks - 1
        if num_tasks > len(classes):
            raise ValueError(f"cannot split {len(classes)} classes into {num_tasks} non-empty tasks.")
        size, extra = divmod(len(classes), num_tasks)
        tasks, start = [], 0
        for t in range(num_tasks):
            end = start + size + (1 if t < extra else 0)
            tasks.append(classes[start:end])
            start = end
        return cls(head + tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def classes(self) -> list[str]:
        """Every scheduled class, in arrival order."""
        return [c for task in self.tasks for c in task]

    def seen_classes(self, task: int) -> list[str]:
        """The classes of tasks `0..task` (the ones a model has met once `task` is learnt).

        Args:
            task (`int`): a task index.
        """
        self._check_index(task)
        return [c for t in self.tasks[: task + 1] for c in t]

    def task_of(self, label: Any) -> int | None:
        """The task that brings `label`, or `None` when no task does.

        Args:
            label (`Any`): a class name.
        """
        for t, classes in enumerate(self.tasks):
            if str(label) in classes:
                return t
        return None

    def _check_index(self, task: int) -> None:
        if not 0 <= task < len(self.tasks):
            raise IndexError(f"task index {task} outside the schedule's {len(self.tasks)} tasks.")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (`{"tasks": [[...], ...]}`)."""
        return {"tasks": [list(t) for t in self.tasks]}
