"""Plain CNN (``arch: cnn``): module, coupling spec, input shape."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from condensation import coupling
from condensation.activations import activation as get_activation
from condensation.archs.base import (
    Architecture,
    check_widths,
    discovered_spec,
    image_input,
    register,
    scaled_normal,
)


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
        act = get_activation(self.activation)
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


def build(widths, *, n_conv, num_classes, activation="relu", gamma=1.0, pool=True) -> CNN:
    """``widths``: the conv channels (the first ``n_conv``), then the dense hidden units."""
    widths = check_widths(widths)
    return CNN(conv_widths=widths[:n_conv], dense_widths=widths[n_conv:], num_classes=num_classes,
               activation=activation, gamma=gamma, pool=pool)


def spec(widths, **options) -> coupling.Spec:
    """Conv channels (BatchNorm folded; read by the next conv, or after the global pool by the
    first dense layer), then dense units read by the next layer: discovered, named after their
    layer (``Conv_i``, ``Dense_i``)."""
    size = 2 ** options["n_conv"] if options.get("pool", True) else 1

    def name(g):
        kind, i = g.name.split("_")
        return (kind != "Conv", int(i)), g.name

    return discovered_spec(build, widths, {"num_classes": 1, **options}, (size, size, 3), name)


ARCH = register(Architecture(
    "cnn", build, spec, "num_classes",
    lambda variables: image_input(variables, ("params", "Conv_0", "kernel")),
))
