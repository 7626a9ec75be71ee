"""Plain CNN (``arch: cnn``): module, coupling spec, input shape."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from condensation import coupling
from condensation.activations import activation as get_activation
from condensation.archs.base import Architecture, check_widths, image_input, register, scaled_normal


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


def spec(widths, *, n_conv, **_) -> coupling.Spec:
    return cnn_spec(n_conv, len(widths) - n_conv)


def cnn_spec(n_conv: int, n_dense: int) -> coupling.Spec:
    """Conv channels (BatchNorm folded), then dense units; each read by the next layer."""
    groups = []
    for i in range(n_conv):
        nxt = coupling.conv_in(f"Conv_{i + 1}") if i + 1 < n_conv else coupling.rows("Dense_0")
        groups.append(coupling.UnitGroup(
            f"Conv_{i}", (coupling.conv_bn(f"Conv_{i}", f"BatchNorm_{i}"),), (nxt,)))
    for i in range(n_dense):
        groups.append(coupling.UnitGroup(
            f"Dense_{i}", (coupling.dense(f"Dense_{i}"),), (coupling.rows(f"Dense_{i + 1}"),)))
    return tuple(groups)


ARCH = register(Architecture(
    "cnn", build, spec, "num_classes",
    lambda variables: image_input(variables, ("params", "Conv_0", "kernel")),
))
