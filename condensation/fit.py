"""The one epoch loop: training the original and fine-tuning every reduction round use it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import optax
from tqdm.auto import tqdm

from condensation.runstate import Position, RunState
from condensation.tasks import Task
from condensation.train import Distill, TrainState, train_epoch


@dataclass(frozen=True)
class Loop:
    """How to train: the module, optimizer and task, the data order's seed and batch size,
    how often to checkpoint (``checkpoint_every`` epochs, the last one always;
    ``every_steps`` steps inside an epoch, 0: never), the progress bar's name, and an optional
    teacher to distill from."""

    module: nn.Module
    tx: optax.GradientTransformation
    task: Task
    seed: int
    batch_size: int
    desc: str
    checkpoint_every: int = 1
    every_steps: int = 0
    distill: Distill | None = None       # fine-tuning towards a teacher's outputs ...
    teacher: dict[str, Any] | None = None  # ... with these variables


def fit(state: TrainState, run: RunState, loop: Loop, epochs: int, *,
        save: Callable[[TrainState], None], log: Callable[..., None],
        after_epoch: Callable[[int, TrainState], dict[str, Any]] | None = None) -> TrainState:
    """Train from epoch ``run.epoch`` to ``epochs``; resumable at every checkpoint.

    ``after_epoch(epoch, state)`` returns more of the epoch's record (validation, selection);
    ``log(**record)`` writes the record; ``save(state)`` checkpoints ``run`` with ``state``.
    ``run.epoch`` and ``run.position`` are kept current, so the checkpoint says where to go on.
    """
    for epoch in tqdm(range(run.epoch, epochs), desc=loop.desc, initial=run.epoch, total=epochs,
                      mininterval=2):
        start = run.position if run.position and run.position.epoch == epoch else None
        run.position = None

        def save_inside(state: TrainState, step: int, loss_sum: float, epoch=epoch) -> None:
            run.position = Position(epoch, step, loss_sum)
            save(state)
            run.position = None

        state, metrics = train_epoch(
            state, loop.task.train, module=loop.module, tx=loop.tx, loss=loop.task.loss,
            batch_size=loop.batch_size, seed=loop.seed, epoch=epoch, augment=loop.task.augment,
            desc=loop.desc, start_step=start.step if start else 0,
            loss_sum=start.loss_sum if start else 0.0, save_every=loop.every_steps, save=save_inside,
            distill=loop.distill, teacher=loop.teacher)
        log(epoch=epoch + 1, **metrics, **(after_epoch(epoch, state) if after_epoch else {}))
        run.epoch = epoch + 1
        if run.epoch % loop.checkpoint_every == 0 or run.epoch == epochs:
            save(state)
    return state
