"""Condensation reduction: pure functions over Flax variable pytrees.

For one :class:`~condensation.coupling.UnitGroup`:

1. :func:`input_vectors` — each unit's input vector [n, d] (BatchNorm folded in);
2. :func:`assign_groups` — greedy, deterministic grouping at cosine >= threshold, jitted, an
   assignment vector [n] of static shape (unit -> index of its representative);
3. :func:`merge_group` — keeps each group's representative and sums the group's outgoing
   weights into it with ``segment_sum`` (static number of segments). Only the number of
   groups crosses to the host.

:func:`condense_variables` applies this to every group of a spec in order.
:func:`split_unit` is the inverse (the embedding principle) and is what the tests use.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from condensation.activations import ACTIVATIONS, POSITIVELY_HOMOGENEOUS
from condensation.coupling import (
    Path,
    Producer,
    Slot,
    Spec,
    UnitGroup,
    consumer_length,
    get,
    read_units,
    write_units,
)

Variables = dict[str, Any]


def set_paths(tree: Variables, updates: dict[Path, jax.Array]) -> Variables:
    """Out-of-place update of nested dicts; untouched branches are shared, not copied."""
    if not updates:
        return tree
    heads: dict[str, dict[Path, jax.Array]] = {}
    for path, value in updates.items():
        heads.setdefault(path[0], {})[path[1:]] = value
    new = dict(tree)
    for head, sub in heads.items():
        new[head] = sub[()] if () in sub else set_paths(tree[head], sub)
    return new


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (cosine similarity), got {threshold}")
    return threshold


def producer_vectors(variables: Variables, p: Producer) -> jax.Array:
    """[n, d]: the units' flattened kernel slices with the bias appended, BatchNorm folded."""
    kernel = jnp.moveaxis(get(variables, p.kernel.path), p.kernel.axis, 0)
    w = kernel.reshape(kernel.shape[0], -1)
    b = get(variables, p.bias) if p.bias is not None else jnp.zeros(w.shape[0], w.dtype)
    if p.bn is not None:
        bn = p.bn
        s = get(variables, bn.scale) / jnp.sqrt(get(variables, bn.var) + bn.eps)
        w = w * s[:, None]
        b = (b - get(variables, bn.mean)) * s + get(variables, bn.bias)
    return jnp.concatenate([w, b[:, None]], axis=1)


def input_vectors(variables: Variables, group: UnitGroup) -> jax.Array:
    """[n, d]: concatenation over the group's producers of each unit's input vector."""
    return jnp.concatenate([producer_vectors(variables, p) for p in group.producers], axis=1)


def cosine_similarity(vectors: jax.Array, eps: float = 1e-12) -> jax.Array:
    """[n, d] -> [n, n]. A zero vector has similarity 0 with everything."""
    norms = jnp.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / jnp.maximum(norms, eps)
    return unit @ unit.T


@jax.jit
def assign_groups(vectors: jax.Array, threshold: float) -> jax.Array:
    """Greedy grouping in index order: [n, d] -> assignment [n] (index of representative).

    Unit i, if not yet taken, becomes a representative and takes every untaken unit j > i with
    cosine(i, j) >= threshold. Deterministic; the representative is the lowest index.
    """
    sim = cosine_similarity(vectors)
    n = sim.shape[0]

    def body(i, assign):
        free = assign[i] < 0
        # float32 puts the cosine of a vector with itself at 1 - 6e-8 or so: allow for it
        take = free & (assign < 0) & (sim[i] >= threshold - 1e-6)
        take = take.at[i].set(free)
        return jnp.where(take, i, assign)

    return jax.lax.fori_loop(0, n, body, jnp.full(n, -1, jnp.int32))


def num_groups(assignment: jax.Array) -> int:
    """The one host sync of a condensation step."""
    return int(jnp.sum(assignment == jnp.arange(assignment.shape[0])))


@functools.partial(jax.jit, static_argnames=("group", "n_groups", "homogeneous", "centroid"))
def merge_group(
    variables: Variables,
    assignment: jax.Array,
    *,
    group: UnitGroup,
    n_groups: int,
    homogeneous: bool = False,
    centroid: bool = False,
) -> Variables:
    """Merge the units of ``group`` as given by ``assignment`` [n]; widths become ``n_groups``.

    Producer arrays keep the representatives' slices. Consumer slices are summed per group
    (``segment_sum``); with ``homogeneous`` (a positively homogeneous activation and a single
    producer) each unit's slice is first scaled by |v_j| / |v_rep|, which makes the merge exact
    for input vectors that are positive multiples of each other.

    With ``centroid`` (model folding's merge) each producer array (kernel, bias, BatchNorm scale,
    offset and statistics alike) keeps the mean of the group's slices instead of the
    representative's, and the consumer slices are summed unscaled. With BatchNorm producers the
    mean of the raw arrays is not the mean of the effective units: repair the statistics after.
    """
    n = assignment.shape[0]
    is_rep = assignment == jnp.arange(n)
    rep_index = jnp.nonzero(is_rep, size=n_groups)[0]
    segment = (jnp.cumsum(is_rep) - 1)[assignment]
    scale = jnp.ones(n)
    if homogeneous and not centroid:
        norms = jnp.linalg.norm(input_vectors(variables, group), axis=1)
        scale = norms / jnp.maximum(norms[assignment], 1e-30)

    updates: dict[Path, jax.Array] = {}
    count = jax.ops.segment_sum(jnp.ones(n), segment, num_segments=n_groups)
    for slot in group.unit_slots:
        x = get(variables, slot.path)
        if centroid:
            x = jax.ops.segment_sum(jnp.moveaxis(x, slot.axis, 0), segment, num_segments=n_groups)
            x = x / count.reshape((n_groups,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            updates[slot.path] = jnp.moveaxis(x, 0, slot.axis)
        else:
            updates[slot.path] = jnp.take(x, rep_index, axis=slot.axis)
    for slot in group.consumers:
        x = read_units(variables, slot, n)
        x = x * scale.reshape((n,) + (1,) * (x.ndim - 1)).astype(x.dtype)
        x = jax.ops.segment_sum(x, segment, num_segments=n_groups)
        updates[slot.path] = write_units(variables, slot, n, x)
    return set_paths(variables, updates)


def group_size(variables: Variables, group: UnitGroup) -> int:
    k = group.producers[0].kernel
    return get(variables, k.path).shape[k.axis]


def is_homogeneous(activation: str, group: UnitGroup) -> bool:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        )
    return activation in POSITIVELY_HOMOGENEOUS and len(group.producers) == 1


def check_spec(variables: Variables, spec: Spec) -> None:
    """Raise ``ValueError`` unless every array a group names exists, has its unit axis, and has
    as many entries along it as the group has units (its first producer's kernel says how
    many); the message names the group, path, axis and sizes."""
    for group in spec:
        n = None
        for slot in group.unit_slots + tuple(c for c in group.consumers if c.plain):
            where = f"coupling spec group {group.name!r}: {'/'.join(slot.path)}"
            try:
                shape = np.shape(get(variables, slot.path))
            except (KeyError, TypeError, IndexError):
                raise ValueError(f"{where} is not in the variables (they hold "
                                 f"{_paths_near(variables, slot.path)})") from None
            if not -len(shape) <= slot.axis < len(shape):
                raise ValueError(f"{where} has shape {shape}, no axis {slot.axis}")
            if n is None:
                n = shape[slot.axis]
            elif shape[slot.axis] != n:
                raise ValueError(f"{where} has {shape[slot.axis]} entries along axis {slot.axis} "
                                 f"(shape {shape}) but the group has {n} units")
        for c in group.consumers:
            if c.plain:
                continue
            shape = np.shape(get(variables, c.path))
            want = consumer_length(variables, c, n)
            if not -len(shape) <= c.axis < len(shape) or shape[c.axis] != want:
                raise ValueError(f"coupling spec group {group.name!r}: {'/'.join(c.path)} has "
                                 f"shape {shape}; its axis {c.axis} should hold {want} entries "
                                 "(the units with the parts concatenated or flattened with them)")


def _paths_near(variables: Variables, path: Path) -> str:
    """The keys next to where ``path`` stops matching, to say what is there instead."""
    node, depth = variables, 0
    for key in path:
        if not isinstance(node, dict) or key not in node:
            break
        node, depth = node[key], depth + 1
    prefix = "/".join(path[:depth])
    keys = sorted(node) if isinstance(node, dict) else []
    return (f"{prefix + '/' if prefix else ''}{{{', '.join(keys)}}}" if keys
            else f"no {'/'.join(path[:depth + 1])}")


@dataclass(frozen=True)
class GroupReport:
    name: str
    before: int
    after: int


def condense_variables(
    variables: Variables, spec: Spec, *, threshold: float, activation: str
) -> tuple[Variables, tuple[GroupReport, ...]]:
    """Condense every group of ``spec`` in order at cosine >= ``threshold``; the spec is
    checked against the variables first (:func:`check_spec`)."""
    threshold = check_threshold(threshold)
    check_spec(variables, spec)
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        )
    reports = []
    for group in spec:
        assignment = assign_groups(input_vectors(variables, group), threshold)
        k = num_groups(assignment)
        n = group_size(variables, group)
        if k < n:
            variables = merge_group(
                variables, assignment, group=group, n_groups=k,
                homogeneous=is_homogeneous(activation, group),
            )
        reports.append(GroupReport(group.name, n, k))
    return variables, tuple(reports)


def count_groups(variables: Variables, spec: Spec, threshold: float) -> dict[str, int]:
    """Groups per unit group at cosine >= ``threshold``: the widths condensing would leave."""
    threshold = check_threshold(threshold)
    return {g.name: num_groups(assign_groups(input_vectors(variables, g), threshold)) for g in spec}


def drop_units(variables: Variables, group: UnitGroup, keep: jax.Array) -> Variables:
    """Structured pruning: keep the units ``keep`` [k] (indices) of ``group``, drop the rest."""
    keep = jnp.asarray(keep)
    n = group_size(variables, group)
    updates = {slot.path: jnp.take(get(variables, slot.path), keep, axis=slot.axis)
               for slot in group.unit_slots}
    for c in group.consumers:
        updates[c.path] = write_units(variables, c, n, jnp.take(read_units(variables, c, n), keep, axis=0))
    return set_paths(variables, updates)


def split_unit(
    variables: Variables,
    group: UnitGroup,
    unit: int,
    fractions: np.ndarray,
    scales: np.ndarray | None = None,
) -> Variables:
    """The embedding principle: split ``unit`` into ``len(fractions)`` copies.

    Copy 0 stays in place, the others are appended at the end of the group. Copy k's outgoing
    slice is ``fractions[k] / scales[k]`` times the original, so if ``sum(fractions) == 1`` the
    network computes the same function. ``scales`` (> 0, default 1) multiply a copy's input
    vector — exact only for positively homogeneous activations and one producer, where a
    producer's folded output scales by c (the BatchNorm scale and bias, or kernel and bias).
    """
    fractions = np.asarray(fractions, np.float64)
    scales = np.ones_like(fractions) if scales is None else np.asarray(scales, np.float64)
    if np.any(scales != 1) and len(group.producers) != 1:
        raise ValueError("scaled copies are defined for a group with one producer only")
    updates: dict[Path, jax.Array] = {}

    def extend(slot: Slot, factors) -> jax.Array:
        arr = jnp.moveaxis(get(variables, slot.path), slot.axis, 0)
        copies = [arr[unit] * jnp.asarray(f, arr.dtype) for f in factors]
        arr = arr.at[unit].set(copies[0])
        arr = jnp.concatenate([arr, jnp.stack(copies[1:])], axis=0)
        return jnp.moveaxis(arr, 0, slot.axis)

    n = group_size(variables, group)
    scaled: set[Path] = set()
    for p in group.producers:
        if p.bn is not None:
            scaled |= {p.bn.scale, p.bn.bias}
        else:
            scaled |= {p.kernel.path} | ({p.bias} if p.bias is not None else set())
    for slot in group.unit_slots:
        updates[slot.path] = extend(slot, scales if slot.path in scaled else np.ones_like(scales))
    for c in group.consumers:
        units = read_units(variables, c, n)
        copies = [units[unit] * jnp.asarray(f, units.dtype) for f in fractions / scales]
        units = jnp.concatenate([units.at[unit].set(copies[0]), jnp.stack(copies[1:])], axis=0)
        updates[c.path] = write_units(variables, c, n, units)
    return set_paths(variables, updates)
