"""Reduction methods, keyed by name so that one config line (``reduce=<name>``) switches them.

``condense`` merges the units whose input vectors are aligned at cosine >= a threshold; the
baselines reduce a network to given widths (``target``, the sizes a condensation run reached),
so that every method is compared at the same parameter budget:

- ``magnitude``: structured pruning, keep the units with the largest input-vector L2 norm
  (BatchNorm folded in); drop the rest, no merging;
- ``random``: keep a random subset of the units;
- ``merge_standard_init``: condensation of a network trained from standard initialization
  (``reduce.gamma``, 0.5), each group merged down to its target size (the threshold is lowered
  per group until it is reached);
- ``scratch``: a network of the target widths, freshly initialized (and then trained from
  scratch by the experiment loop for the epochs of training plus fine-tuning).

A method's ``reduce`` maps ``(network, variables, *, threshold, target, activation,
input_shape, rng)`` to a smaller ``(network, variables)``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from condensation.condense import (
    assign_groups,
    drop_units,
    group_size,
    input_vectors,
    is_homogeneous,
    merge_group,
    num_groups,
)
from condensation.network import (
    Network,
    abstract_variables,
    check_shapes,
    reduce_network,
    widths_of,
)

Variables = dict[str, Any]


@dataclass(frozen=True)
class Method:
    reduce: Callable[..., tuple[Network, Variables]]
    # reduces to the widths of a condensation run (reduce.targets) instead of by threshold
    needs_targets: bool = False
    # starts from the condensation run's trained original instead of training its own
    reuses_original: bool = False
    # each round trains a fresh network for train.epochs + the fine-tuning epochs so far
    from_scratch: bool = False


def target_sizes(net: Network, target: tuple[int, ...], input_shape) -> dict[str, int]:
    """Units per coupled group of ``net`` at widths ``target``."""
    small = net.with_widths(target)
    shapes = abstract_variables(small, input_shape)
    return {g.name: group_size(shapes, g) for g in small.spec()}


def _checked(net: Network, variables: Variables, input_shape) -> tuple[Network, Variables]:
    new = net.with_widths(widths_of(net, variables))
    check_shapes(new, variables, input_shape)
    return new, variables


def _condense(net, variables, *, threshold, activation, input_shape, **_):
    return reduce_network(net, variables, threshold=threshold, activation=activation,
                          input_shape=input_shape)


def _drop(score: Callable[[int, jax.Array], jax.Array]):
    """A pruning method: in each group keep the ``target`` units of highest ``score``."""

    def reduce(net, variables, *, target, input_shape, **_):
        sizes = target_sizes(net, target, input_shape)
        for i, group in enumerate(net.spec()):
            n, k = group_size(variables, group), sizes[group.name]
            if k > n:
                raise ValueError(f"group {group.name} has {n} units, cannot grow to {k}")
            if k < n:
                s = score(i, input_vectors(variables, group))
                keep = jnp.sort(jnp.argsort(-s)[:k])  # keep the survivors' order
                variables = drop_units(variables, group, keep)
        return _checked(net, variables, input_shape)

    return reduce


def _magnitude(net, variables, **kw):
    return _drop(lambda i, v: jnp.linalg.norm(v, axis=1))(net, variables, **kw)


def _random(net, variables, *, rng, **kw):
    return _drop(lambda i, v: jax.random.uniform(jax.random.fold_in(rng, i), (v.shape[0],)))(
        net, variables, **kw)


def threshold_for(vectors: jax.Array, k: int, iters: int = 30) -> tuple[float, jax.Array]:
    """The highest cosine threshold whose greedy grouping leaves at most ``k`` groups (bisection
    over [-1, 1]); returns it with its assignment."""
    lo, hi = -1.0, 1.0  # at -1 everything joins the first unit: one group
    best = assign_groups(vectors, lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        a = assign_groups(vectors, mid)
        if num_groups(a) <= k:
            lo, best = mid, a
        else:
            hi = mid
    return lo, best


def _condense_to(net, variables, *, target, activation, input_shape, **_):
    sizes = target_sizes(net, target, input_shape)
    for group in net.spec():
        n, k = group_size(variables, group), sizes[group.name]
        if k < n:
            _, assignment = threshold_for(input_vectors(variables, group), k)
            variables = merge_group(variables, assignment, group=group,
                                    n_groups=num_groups(assignment),
                                    homogeneous=is_homogeneous(activation, group))
    return _checked(net, variables, input_shape)


def _scratch(net, variables, *, target, input_shape, rng, **_):
    small = net.with_widths(target)
    fresh = small.module().init(rng, jnp.zeros((1, *input_shape), jnp.float32))
    return small, jax.tree.map(jnp.asarray, fresh)


REDUCERS: dict[str, Method] = {
    "condense": Method(_condense),
    "magnitude": Method(_magnitude, needs_targets=True, reuses_original=True),
    "random": Method(_random, needs_targets=True, reuses_original=True),
    "merge_standard_init": Method(_condense_to, needs_targets=True),
    "scratch": Method(_scratch, needs_targets=True, reuses_original=True, from_scratch=True),
}


def method(name: str) -> Method:
    try:
        return REDUCERS[name]
    except KeyError:
        raise ValueError(
            f"reduce.method={name!r}; allowed: {', '.join(sorted(REDUCERS))}"
        ) from None
