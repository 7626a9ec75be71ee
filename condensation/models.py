"""Flax modules. They describe architecture only; widths come from config and the
initialization scale ``gamma`` is a parameter: every kernel is drawn from
N(0, fan_in^(-2 gamma)). gamma = 0.5 is the standard (LeCun-like) scale; larger gamma is
small initialization, the condensed regime.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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


def scaled_normal(gamma: float) -> Callable:
    """Kernel initializer with std = fan_in^(-gamma); fan_in = prod(shape[:-1])."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1])
        return jax.random.normal(key, shape, dtype) * fan_in ** (-gamma)

    return init


def check_widths(widths: Sequence[int], what: str = "widths") -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if not widths or any(w <= 0 for w in widths):
        raise ValueError(f"{what} must be a non-empty list of positive integers, got {list(widths)}")
    return widths


class MLP(nn.Module):
    """Fully connected network x [N, in] -> [N, out].

    Layers are ``Dense_0 .. Dense_L`` (flax's default names), hidden widths ``widths``.
    """

    widths: Sequence[int]
    out_dim: int
    activation: str = "gelu"
    gamma: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation(self.activation)
        init = scaled_normal(self.gamma)
        for w in self.widths:
            x = act(nn.Dense(w, kernel_init=init)(x))
        return nn.Dense(self.out_dim, kernel_init=init)(x)


class CNN(nn.Module):
    """Plain CNN x [N, H, W, C] -> logits [N, classes].

    Each conv block is Conv3x3 -> BatchNorm -> activation -> 2x2 max pool; then global
    average pooling and dense hidden layers. Channels are ``conv_widths``.
    """

    conv_widths: Sequence[int]
    dense_widths: Sequence[int]
    num_classes: int
    activation: str = "relu"
    gamma: float = 1.0
    pool: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation(self.activation)
        init = scaled_normal(self.gamma)
        for c in self.conv_widths:
            x = nn.Conv(c, (3, 3), kernel_init=init)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = act(x)
            if self.pool:
                x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.mean(axis=(1, 2))
        for w in self.dense_widths:
            x = act(nn.Dense(w, kernel_init=init)(x))
        return nn.Dense(self.num_classes, kernel_init=init)(x)


class ResidualCNN(nn.Module):
    """Small residual CNN, the test bed for residual-tied channels.

    stem: Conv(stream) -> BN -> act; each block: Conv(hidden) -> BN -> act -> Conv(stream) -> BN,
    added to the stream, then act; global average pool; Dense head. ``widths`` is
    ``(stream, hidden_0, ..., hidden_{B-1})``: the stream channels are tied through every
    residual addition, the hidden channels of each block are free.
    """

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu"
    gamma: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation(self.activation)
        init = scaled_normal(self.gamma)
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
        stream, *hidden = self.widths
        x = act(bn("stem_bn")(nn.Conv(stream, (3, 3), kernel_init=init, name="stem")(x)))
        for b, h in enumerate(hidden):
            y = act(bn(f"b{b}_bn1")(nn.Conv(h, (3, 3), kernel_init=init, name=f"b{b}_conv1")(x)))
            y = bn(f"b{b}_bn2")(nn.Conv(stream, (3, 3), kernel_init=init, name=f"b{b}_conv2")(y))
            x = act(x + y)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=init, name="head")(x)
