"""Tasks: the data of an experiment and how its networks are judged.

``make_task(data_cfg, seed, workdir)`` looks the task up by ``data_cfg['name']`` in
:data:`TASKS`. A task holds in-memory splits, the loss, the headline metric (computed on the
test split; the validation split drives every decision) and optional hooks for
task-specific evaluation (combustion rollouts) and checkpoint selection.
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


def toy_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    """1-D regression y = f(x) on [-1, 1]: the small test bed of the phenomenon."""
    rng = np.random.default_rng([seed, 1234])
    fn = {
        "sin": lambda x: np.sin(3 * x),
        "abs": lambda x: np.abs(x) - 0.5,
        "mix": lambda x: np.tanh(4 * x) + 0.5 * np.sin(5 * x),
    }[cfg.get("function", "mix")]

    def split(n):
        x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
        return x, fn(x).astype(np.float32)

    return Task("toy", (1,), 1, split(cfg.get("n_train", 256)), split(cfg.get("n_val", 256)),
                split(cfg.get("n_test", 256)), loss="mse", metric="loss", log_metric=True)


def _combustion(cfg, seed, workdir):
    from condensation.combustion.task import combustion_task

    return combustion_task(cfg, seed, workdir)


def _cifar10(cfg, seed, workdir):
    from condensation.cifar10 import cifar10_task

    return cifar10_task(cfg, seed, workdir)


TASKS: dict[str, Callable[[dict[str, Any], int, Path], Task]] = {
    "toy": toy_task,
    "combustion": _combustion,
    "cifar10": _cifar10,
}


def make_task(cfg: dict[str, Any], seed: int, workdir: Path) -> Task:
    name = cfg.get("name")
    if name not in TASKS:
        raise ValueError(f"data.name={name!r}; allowed: {', '.join(sorted(TASKS))}")
    return TASKS[name](cfg, seed, Path(workdir))
