"""Data-aware stages of a reduction: importance, least-squares compensation, BatchNorm repair.

- :func:`importance`: a unit's contribution on calibration data, ``E[a_j^2] * sum over
  consumers of |W_c[j]|^2`` (its output energy times its outgoing weights' squared norm); a dead
  unit scores 0.
- :func:`refit_consumers`: after a group lost units, each consumer's input weights over the
  surviving units are refit by ridge least squares so that its output on the calibration data
  matches its output before the reduction; the constant part goes into the consumer's bias or,
  for a layer without one, into the running mean of the BatchNorm after it. Exact when a removed
  unit's activation is a linear combination of the survivors' (up to the small ridge).
- :func:`repair_batchnorm`: every BatchNorm's running statistics re-estimated on (augmented)
  training batches, as averages of per-batch statistics.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condensation.calibrate import Reader, module_path
from condensation.condense import set_paths
from condensation.coupling import Consumer, UnitGroup, get

Variables = dict[str, Any]
Inputs = dict[tuple[str, ...], tuple[np.ndarray, Reader]]
RIDGE = 1e-5  # relative to the mean diagonal of the normal equations


def _slices(kernel: np.ndarray, slot: Consumer) -> np.ndarray:
    """[n, rest]: one row per unit of the consumer's kernel slices."""
    k = np.moveaxis(np.asarray(kernel, np.float64), slot.axis, 0)
    return k.reshape(k.shape[0], -1)


def _input_of(inputs: Inputs, c: Consumer):
    """A consumer's captured input: keyed by its kernel's path (any model, traced) or by its
    module's path (flax.linen interception)."""
    return inputs[c.path] if c.path in inputs else inputs[module_path(c)]


def importance(variables: Variables, group: UnitGroup, inputs: Inputs) -> np.ndarray:
    """[n]: each unit's output energy on the calibration data times the squared norm of its
    outgoing weights (summed over the group's consumers)."""
    x, _ = inputs[module_path(group.consumers[0])]
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    energy = np.mean(x * x, axis=0)
    out = sum(np.sum(_slices(get(variables, c.path), c) ** 2, axis=1) for c in group.consumers)
    return energy * out


def constant_units(inputs: Inputs, group: UnitGroup, rel_tol: float = 1e-6) -> np.ndarray:
    """[n] bool: the units whose activation does not vary on the calibration data (a dead ReLU
    unit, a saturated one): std <= rel_tol x the group's largest std."""
    x, _ = inputs[module_path(group.consumers[0])]
    a = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    std = a.std(axis=0)
    return std <= rel_tol * max(float(std.max()), 1e-30)


def fold_constants(variables: Variables, group: UnitGroup, inputs: Inputs,
                   constant: np.ndarray) -> Variables:
    """``variables`` with each constant unit's contribution (its activation times its outgoing
    weights, summed over a conv's taps) added to its consumers' bias, or taken from the mean of
    the BatchNorm after them. The units themselves are still there (drop them next); exact for
    dense and 1x1 consumers, up to the image border for larger kernels (zero padding)."""
    x, _ = inputs[module_path(group.consumers[0])]
    mean = np.asarray(x, np.float64).reshape(-1, x.shape[-1]).mean(axis=0) * constant
    updates = {}
    for c in group.consumers:
        kernel = np.moveaxis(np.asarray(get(variables, c.path), np.float64), c.axis, -2)
        delta = mean @ kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)  # [out]
        if c.bias is not None:
            updates[c.bias] = jnp.asarray(get(variables, c.bias) + delta, get(variables, c.bias).dtype)
        elif c.bn is not None:
            updates[c.bn.mean] = jnp.asarray(get(variables, c.bn.mean) - delta,
                                             get(variables, c.bn.mean).dtype)
    return set_paths(variables, updates)


def activation_vectors(inputs: Inputs, group: UnitGroup, rows: int = 4096) -> np.ndarray:
    """[n, rows]: each unit's activations on (up to ``rows``, evenly spaced) calibration
    positions: the functional similarity's vectors."""
    x, _ = inputs[module_path(group.consumers[0])]
    a = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    pick = np.linspace(0, len(a) - 1, min(rows, len(a))).astype(int)
    return a[pick].T


def _features(x: jax.Array, reader: Reader, kernel_shape) -> jax.Array:
    """[M, F]: what the kernel multiplies, one row per output position (patches for a conv,
    ordered as the kernel's [kh, kw, cin] rows)."""
    if reader.kind == "dense":
        return x.reshape(-1, x.shape[-1])
    kh, kw = kernel_shape[0], kernel_shape[1]
    p = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), reader.strides, reader.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    c = x.shape[-1]  # patches come channel-major: (cin, kh, kw); the kernel is (kh, kw, cin)
    p = p.reshape(*p.shape[:-1], c, kh, kw)
    return jnp.moveaxis(p, -3, -1).reshape(-1, kh * kw * c)


def _normal_equations(x: np.ndarray, keep: np.ndarray, kernel: np.ndarray, reader: Reader,
                      chunk: int = 64, after: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Sums over the calibration data of P^T P, P^T Y, P, Y and the count, where P are the
    survivors' features (``x[..., keep]``, or ``after`` when the survivors themselves changed)
    and Y the consumer's output before the reduction. The features come from a jitted float32
    pass; the products are summed in float64: centring subtracts nearly equal sums when the
    activations' mean is large against their spread, and the refit of condensation's nearly
    parallel survivors is ill-conditioned enough that float32 sums changed its result (a
    combustion round's one-step error 0.035 against 0.036-0.041 from float32 sums)."""
    after = x[..., keep] if after is None else after

    @jax.jit
    def features(xb, ab):
        return _features(ab, reader, kernel.shape), _features(xb, reader, kernel.shape)

    k64 = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    total = None
    for start in range(0, len(x), chunk):
        p, px = (np.asarray(v, np.float64) for v in features(jnp.asarray(x[start:start + chunk]),
                                                              jnp.asarray(after[start:start + chunk])))
        y = px @ k64
        part = [p.T @ p, p.T @ y, p.sum(0), y.sum(0), p.shape[0]]
        total = part if total is None else [a + b for a, b in zip(total, part, strict=True)]
    return tuple(total)


def refit_consumers(before: Variables, after: Variables, group: UnitGroup, inputs: Inputs,
                    keep: np.ndarray, ridge: float = RIDGE, survivors: Inputs | None = None) -> Variables:
    """``after`` (``group`` reduced to the units ``keep`` [k] of ``before``) with every
    consumer's kernel slices refit: ridge least squares of the consumer's output before the
    reduction on the survivors' activations (``inputs``: what each consumer read before; the
    survivors' columns of it, or ``survivors``: what each consumer reads in ``after``, when
    the reduction changed the survivors themselves, as a centroid merge does)."""
    keep = np.asarray(keep)
    updates = {}
    for c in group.consumers:
        x, reader = _input_of(inputs, c)
        kernel = np.moveaxis(np.asarray(get(before, c.path), np.float32), c.axis, -2)  # [..., n, out]
        ptp, pty, sp, sy, m = _normal_equations(
            x, keep, kernel, reader, after=None if survivors is None else _input_of(survivors, c)[0])
        intercept = c.bias is not None or c.bn is not None
        if intercept:  # centre: the constant is fitted apart
            ptp, pty = ptp - np.outer(sp, sp) / m, pty - np.outer(sp, sy) / m
        lam = ridge * max(np.trace(ptp) / len(ptp), 1e-12)
        w = np.linalg.solve(ptp + lam * np.eye(len(ptp)), pty)  # [F, out]
        new_kernel = w.reshape(*kernel.shape[:-2], len(keep), kernel.shape[-1])
        updates[c.path] = jnp.asarray(np.moveaxis(new_kernel, -2, c.axis), get(after, c.path).dtype)
        if intercept:
            delta = (sy - sp @ w) / m  # [out]: what the survivors' fit leaves on average
            path, sign = (c.bias, 1.0) if c.bias is not None else (c.bn.mean, -1.0)
            updates[path] = jnp.asarray(get(after, path) + sign * delta, get(after, path).dtype)
    return set_paths(after, updates)


def repair_batchnorm(module: nn.Module, variables: Variables, x: np.ndarray,
                     augment: Callable | None = None, batch_size: int = 256,
                     rng: jax.Array | None = None) -> Variables:
    """Every BatchNorm's running mean and variance set to the average of its batch statistics
    over ``x`` (training mode, each batch through ``augment`` when given), as for the data the
    network was trained on. Without BatchNorm: ``variables`` unchanged."""
    if not variables.get("batch_stats"):
        return variables
    batch_size = min(batch_size, len(x))
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    ones = jax.tree.map(jnp.ones_like, variables["batch_stats"])

    @jax.jit
    def batch_stats(xb, key):
        if augment is not None:
            xb = augment(key, xb)

        def update(start):  # a dropout stream for models that have one (it follows no BatchNorm
            # here; with one before a BatchNorm, both passes draw the same mask)
            _, upd = module.apply({**variables, "batch_stats": start}, xb, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": jax.random.fold_in(key, 1)})
            return upd["batch_stats"]

        # a running statistic becomes m * old + (1 - m) * batch: from 0 and from 1 it gives
        # a = (1 - m) * batch and b = m + a, so the batch's own value is a / (1 - (b - a))
        a, b = update(zeros), update(ones)
        return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), a, b)

    rng = jax.random.PRNGKey(0) if rng is None else rng
    total, n = None, 0
    for i, start in enumerate(range(0, len(x) - batch_size + 1, batch_size)):
        s = batch_stats(jnp.asarray(x[start:start + batch_size]), jax.random.fold_in(rng, i))
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        n += 1
    if n == 0:
        raise ValueError("BatchNorm repair needs calibration data, got none")
    return {**variables, "batch_stats": jax.tree.map(lambda t: t / n, total)}
