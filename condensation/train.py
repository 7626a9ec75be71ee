"""Training: a plain-pytree train state, pure jitted ``train_step`` / ``eval_step``, epochs.

Data are in-memory arrays; an epoch's order comes from ``(seed, epoch)`` alone, so a run
resumed at an epoch boundary sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

Batch = tuple[jax.Array, jax.Array]

LOSSES = ("l1", "mse", "cross_entropy")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant", "step")


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array

    @property
    def variables(self) -> dict[str, Any]:
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"          # one of OPTIMIZERS
    lr: float = 1e-3
    schedule: str = "cosine"         # one of SCHEDULES
    warmup_epochs: float = 0.0
    end_lr_factor: float = 0.01      # cosine: final lr / lr; step: factor per decay
    step_every_epochs: float = 0.0   # step schedule: decay period
    weight_decay: float = 0.0
    momentum: float = 0.9
    grad_clip: float = 0.0


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
    total = max(1, steps_per_epoch * epochs)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0 if warm else cfg.lr, cfg.lr, warm, max(total, warm + 1), cfg.lr * cfg.end_lr_factor
        )
    elif cfg.schedule == "constant":
        lr = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "step":
        every = max(1, int(cfg.step_every_epochs * steps_per_epoch))
        lr = optax.exponential_decay(cfg.lr, every, cfg.end_lr_factor, staircase=True)
    else:
        raise ValueError(f"train.schedule={cfg.schedule!r}; allowed: cosine, constant, step")
    if cfg.optimizer == "adam":
        opt = optax.adam(lr)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                          optax.sgd(lr, momentum=cfg.momentum, nesterov=True))
    else:
        raise ValueError(f"train.optimizer={cfg.optimizer!r}; allowed: adam, adamw, sgd")
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), rng=rng)


def loss_fn(name: str, out: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample loss [N]."""
    if name == "l1":
        return jnp.abs(out - y).mean(axis=-1)
    if name == "mse":
        return jnp.square(out - y).mean(axis=-1)
    if name == "cross_entropy":
        return optax.softmax_cross_entropy_with_integer_labels(out, y.astype(jnp.int32))
    raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")


@dataclass(frozen=True)
class Distill:
    """Distillation from a teacher: the loss is (1 - weight) x the task's loss + weight x the
    student's distance to the teacher's outputs (classification: KL divergence of the softened
    distributions at ``temperature``, times its square; regression: the task's loss against
    the teacher's outputs). The teacher sees the same (augmented) batch, in evaluation mode."""

    module: nn.Module
    weight: float
    temperature: float = 4.0


def distill_loss(loss: str, out: jax.Array, teacher: jax.Array, temperature: float) -> jax.Array:
    """Per-sample distance [N] of the student's outputs to the teacher's."""
    if loss == "cross_entropy":
        t = jax.nn.log_softmax(teacher / temperature)
        s = jax.nn.log_softmax(out / temperature)
        return jnp.sum(jnp.exp(t) * (t - s), axis=-1) * temperature**2
    return loss_fn(loss, out, teacher)


@functools.partial(jax.jit, static_argnames=("module", "tx", "loss", "augment", "distill"),
                   donate_argnums=0)
def train_step(state: TrainState, batch: Batch, *, module: nn.Module,
               tx: optax.GradientTransformation, loss: str,
               augment: Callable | None = None, distill: Distill | None = None,
               teacher: dict[str, Any] | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step; with ``distill``, towards the outputs of ``teacher`` (its variables) too."""
    x, y = batch
    rng, aug_rng = jax.random.split(state.rng)
    # dropout's stream: derived, so that the augmentation's draws are what they were before
    rngs = {"dropout": jax.random.fold_in(aug_rng, 1)}
    if augment is not None:
        x = augment(aug_rng, x)
    has_bn = bool(state.batch_stats)
    target = None if distill is None else jax.lax.stop_gradient(distill.module.apply(teacher, x))

    def objective(params):
        v = {"params": params, **({"batch_stats": state.batch_stats} if has_bn else {})}
        if has_bn:
            out, updates = module.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)
        else:
            out, updates = module.apply(v, x, train=True, rngs=rngs), {}
        value = loss_fn(loss, out, y).mean()
        if distill is not None:
            d = distill_loss(loss, out, target, distill.temperature).mean()
            value = (1.0 - distill.weight) * value + distill.weight * d
        return value, updates

    (value, updates), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    upd, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                        batch_stats=updates.get("batch_stats", state.batch_stats))
    return new, {"loss": value, "grad_norm": optax.global_norm(grads)}


@functools.partial(jax.jit, static_argnames=("module", "loss"))
def eval_step(variables: dict[str, Any], batch: Batch, mask: jax.Array, *, module: nn.Module,
              loss: str) -> dict[str, jax.Array]:
    """Sums over the unmasked samples of a batch: loss, count, and correct predictions."""
    x, y = batch
    out = module.apply(variables, x)
    sums = {"loss": jnp.sum(loss_fn(loss, out, y) * mask), "count": jnp.sum(mask)}
    if loss == "cross_entropy":
        sums["correct"] = jnp.sum((out.argmax(-1) == y) * mask)
    return sums


def data_parallel() -> tuple[NamedSharding, NamedSharding]:
    """(batch, replicated) shardings over every local device: a mesh with one ``batch`` axis.

    Batches are split along their first axis, parameters and optimizer state replicated; jit
    then inserts the gradient all-reduce. On one device both are trivial and the code path is
    the same.
    """
    # Auto axes: XLA propagates the sharding through everything (augmentation included);
    # Explicit axes would demand matching shardings op by op.
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_epoch(state: TrainState, data: tuple[np.ndarray, np.ndarray], *, module: nn.Module,
                tx: optax.GradientTransformation, loss: str, batch_size: int, seed: int,
                epoch: int, augment: Callable | None = None, desc: str = "train",
                start_step: int = 0, loss_sum: float = 0.0, save_every: int = 0,
                save: Callable[[TrainState, int, float], None] | None = None,
                distill: Distill | None = None, teacher: dict[str, Any] | None = None,
                ) -> tuple[TrainState, dict[str, float]]:
    """One epoch over ``data`` in the order ``epoch_order(n, seed, epoch)``.

    Resumable inside the epoch: ``save(state, next_step, loss_sum)`` is called every
    ``save_every`` steps (0: never); ``start_step`` and ``loss_sum`` taken from such a save
    continue the epoch exactly where it stopped (same batches, same RNG, same mean loss).
    """
    x, y = data
    n = len(x)
    batch_sharding, replicated = data_parallel()
    devices = jax.device_count()
    bs = min(batch_size, n) // devices * devices  # every device gets an equal share
    if bs == 0:
        raise ValueError(f"batch size {batch_size} with {n} samples cannot be split over "
                         f"{devices} devices")
    order = epoch_order(n, seed, epoch)
    steps = n // bs
    state = jax.device_put(state, replicated)
    teacher = None if teacher is None else jax.device_put(teacher, replicated)
    total, last = loss_sum, None
    # a bar per epoch only where an epoch is long enough to watch; callers show epochs
    bar = tqdm(range(start_step, steps), desc=f"{desc} epoch {epoch}", leave=False,
               mininterval=2, disable=steps < 200, initial=start_step, total=steps)
    for i in bar:
        idx = order[i * bs:(i + 1) * bs]
        batch = jax.device_put((x[idx], y[idx]), batch_sharding)
        state, m = train_step(state, batch, module=module, tx=tx, loss=loss, augment=augment,
                              distill=distill, teacher=teacher)
        total += m["loss"] if i % 50 else float(m["loss"])  # an occasional sync bounds the queue
        last = m
        if save is not None and save_every > 0 and (i + 1) % save_every == 0 and i + 1 < steps:
            save(state, i + 1, float(total))
    train_loss = float(total) / max(steps, 1)
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch}")
    return state, {"train_loss": train_loss, "grad_norm": float(last["grad_norm"]) if last else 0.0}


def evaluate(variables: dict[str, Any], data: tuple[np.ndarray, np.ndarray], *, module: nn.Module,
             loss: str, batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for classification) over a whole split; last batch padded."""
    x, y = data
    n = len(x)
    bs = min(batch_size, n)
    sums: dict[str, float] = {}
    for start in range(0, n, bs):
        xb, yb = x[start:start + bs], y[start:start + bs]
        k = len(xb)
        if k < bs:  # pad so every call has one shape and compiles once
            xb = np.concatenate([xb, np.repeat(xb[:1], bs - k, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], bs - k, 0)])
        mask = jnp.asarray(np.arange(bs) < k, jnp.float32)
        s = eval_step(variables, (jnp.asarray(xb), jnp.asarray(yb)), mask, module=module, loss=loss)
        for key, v in s.items():
            sums[key] = sums.get(key, 0.0) + float(v)
    out = {"loss": sums["loss"] / sums["count"]}
    if "correct" in sums:
        out["accuracy"] = sums["correct"] / sums["count"]
    return out
