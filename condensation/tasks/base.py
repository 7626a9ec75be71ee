"""A task: the data of an experiment and how its networks are judged; the registry of tasks.

``make_task(data_cfg, seed, workdir)`` looks the task up by ``data_cfg['name']`` in
:data:`TASKS`, where each module of ``condensation/tasks/`` registers its maker. A task holds
in-memory splits, the loss, the headline metric (computed on the test split; the validation
split drives every decision) and optional hooks for task-specific evaluation (combustion
rollouts) and checkpoint selection.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    name: str
    input_shape: tuple[int, ...]
    output_dim: int
    train: Split
    val: Split
    test: Split
    loss: str
    metric: str                       # key of evaluate()'s output used as the headline metric
    higher_is_better: bool = False
    log_metric: bool = False          # plot on a log scale
    augment: Callable | None = None   # (rng, x [N, ...]) -> x, jit-able, training only
    # (network, variables, split) -> extra metrics, e.g. a-posteriori rollout errors
    extra_eval: Callable[..., dict[str, Any]] | None = None
    # (network, variables) -> value to minimise when choosing the checkpoint; default: val loss
    selection: Callable[..., float] | None = None
    # (workdir, (net, variables) original, (net, variables) reduced) -> None: task figures/exports
    finalize: Callable[..., None] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


Maker = Callable[[dict[str, Any], int, Path], Task]
TASKS: dict[str, Maker] = {}


def register(name: str) -> Callable[[Maker], Maker]:
    """Decorator: register a task maker ``(data_cfg, seed, workdir) -> Task`` under ``name``."""

    def decorate(maker: Maker) -> Maker:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = maker
        return maker

    return decorate


def make_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    name = cfg.get("name")
    if name not in TASKS:
        raise ValueError(f"data.name={name!r}; allowed: {', '.join(sorted(TASKS))}")
    return TASKS[name](cfg, seed, Path(workdir))
