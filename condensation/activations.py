"""Activation functions by name, and which of them are positively homogeneous."""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "relu": nn.relu,
    "silu": nn.silu,
    "relu6": nn.relu6,
    "leaky_relu": nn.leaky_relu,
}

# Activations with act(c z) = c act(z) for c > 0: merging a neuron whose input vector is c
# times the representative's is exact when its outgoing weights are scaled by c.
POSITIVELY_HOMOGENEOUS = frozenset({"relu", "leaky_relu"})


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
