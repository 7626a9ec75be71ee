"""The architecture registry: everything the rest of the package knows about an architecture.

Each module of this folder registers one :class:`Architecture`; nothing outside ``archs/``
branches on an architecture's name.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condensation import coupling
from condensation.graph import discover

Variables = dict[str, Any]


@dataclass(frozen=True)
class Architecture:
    """How to build, couple and read back one architecture.

    - ``build(widths, **options) -> nn.Module``;
    - ``spec(widths, **options) -> Spec``: its coupling spec (options include spec options),
      found by tracing the module (:func:`discovered_spec`) and named by the architecture;
    - ``output_arg``: the ``build`` keyword that takes the task's output size;
    - ``input_shape(variables) -> shape``: an input shape (no batch axis) that fits saved
      variables;
    - ``widths_of(variables, spec) -> widths``: the widths read back from variable shapes
      (default: one entry per group of the spec, from its first producer's kernel).
    """

    name: str
    build: Callable[..., nn.Module]
    spec: Callable[..., coupling.Spec]
    output_arg: str
    input_shape: Callable[[Variables], tuple[int, ...]]
    widths_of: Callable[[Variables, coupling.Spec], tuple[int, ...]] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; allowed: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def group_widths(variables: Variables, spec: coupling.Spec) -> tuple[int, ...]:
    """One width per group: the size of its first producer's unit axis."""
    return tuple(
        int(np.shape(coupling.get(variables, g.producers[0].kernel.path))[g.producers[0].kernel.axis])
        for g in spec
    )


def scaled_normal(gamma: float) -> Callable:
    """Kernel initializer with std = fan_in^(-gamma); fan_in = prod(shape[:-1]).

    gamma = 0.5 is the standard (LeCun-like) scale; larger gamma is small initialization, the
    condensed regime.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        return jax.random.normal(key, shape, dtype) * fan_in ** (-gamma)

    return init


def check_widths(widths: Sequence[int], what: str = "widths") -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if not widths or any(w <= 0 for w in widths):
        raise ValueError(f"{what} must be a non-empty list of positive integers, got {list(widths)}")
    return widths


def image_input(variables: Variables, first_kernel: coupling.Path) -> tuple[int, int, int]:
    """The input of a conv net with global pooling: its parameters fix the channels (the first
    kernel's input axis) but not the image size; 32x32, the size these networks train at."""
    return (32, 32, int(np.shape(coupling.get(variables, first_kernel))[2]))


_DISCOVERED: dict[tuple, coupling.Spec] = {}


def discovered_spec(build: Callable[..., nn.Module], widths: Sequence[int],
                    options: dict[str, Any], input_shape: tuple[int, ...],
                    name: Callable[[coupling.UnitGroup], tuple[Any, str] | None]) -> coupling.Spec:
    """The coupling spec of ``build(widths, **options)``, found by tracing its forward pass on
    an input of ``input_shape`` (:func:`condensation.graph.discover`; cached per process).

    ``name(group)`` gives each discovered group (named after its first producer) a sort key and
    the architecture's name for it, or None to leave the group alone (e.g. a residual stream
    without the spec option ``tie_stream``); groups come back sorted by key.
    """
    key = (build, tuple(widths), repr(sorted(options.items())), tuple(input_shape))
    if key not in _DISCOVERED:
        module = build(widths, **options)
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        variables = jax.eval_shape(module.init, jax.random.key(0), x)
        _DISCOVERED[key] = discover(lambda v, x: module.apply(v, x), variables, x).spec
    named = []
    for g in _DISCOVERED[key]:
        try:
            kn = name(g)
        except (ValueError, IndexError, KeyError) as e:
            raise ValueError(f"{build.__module__}: no name for the discovered group {g.name!r} "
                             f"({e})") from None
        if kn is not None:
            named.append((kn[0], dataclasses.replace(g, name=kn[1])))
    names = [g.name for _, g in named]
    if len(set(names)) < len(names):
        raise ValueError(f"{build.__module__}: discovered groups named alike: {sorted(names)}")
    return tuple(g for _, g in sorted(named, key=lambda t: t[0]))
