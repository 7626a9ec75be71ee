"""Tasks, one module each (``toy.py``, ``cifar10.py``, ``combustion/``); importing this package
registers every task maker in :data:`TASKS` by its ``data.name``."""
from condensation.tasks import cifar10, combustion, toy
from condensation.tasks.base import TASKS, Split, Task, make_task, register

__all__ = ["TASKS", "Split", "Task", "make_task", "register", "cifar10", "combustion", "toy"]
