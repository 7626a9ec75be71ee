"""The combustion task (``data.name: combustion``): a one-step chemistry surrogate judged a priori
(one dt from held-out states) and a posteriori (rollouts against Cantera), with its figures."""
from condensation.tasks.combustion.task import combustion_task

__all__ = ["combustion_task"]
