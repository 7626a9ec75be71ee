"""Small residual CNN (``arch: residual_cnn``), the test bed for residual-tied channels."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import numpy as np

from condensation import coupling
from condensation.activations import activation as get_activation
from condensation.archs.base import (
    Architecture,
    check_widths,
    discovered_spec,
    group_widths,
    image_input,
    register,
    scaled_normal,
)


class ResidualCNN(nn.Module):
    """stem: Conv(stream) -> BN -> act; each block: Conv(hidden) -> BN -> act -> Conv(stream) ->
    BN, added to the stream, then act; global average pool; Dense head. ``widths`` is
    ``(stream, hidden_0, ..., hidden_{B-1})``: the stream channels are tied through every
    residual addition, the hidden channels of each block are free.
    """

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu"
    gamma: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = get_activation(self.activation)
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


def build(widths, *, num_classes, activation="relu", gamma=1.0) -> ResidualCNN:
    return ResidualCNN(widths=check_widths(widths), num_classes=num_classes,
                       activation=activation, gamma=gamma)


def spec(widths, *, tie_stream: bool = True, **options) -> coupling.Spec:
    """Discovered: the stream channels, produced by the stem and by every block's second conv
    and read by every block's first conv and by the head, form one group ``stream`` when
    ``tie_stream`` (with ``tie_stream=False`` the stream is left alone, which is always safe);
    ``b{b}_hidden``: block b's first conv, read by its second."""

    def name(g):
        if g.name == "stem":
            return ((0, 0), "stream") if tie_stream else None
        b = int(g.name.split("_")[0][1:])
        return (1, b), f"b{b}_hidden"

    return discovered_spec(build, widths, {"num_classes": 1, **options}, (8, 8, 3), name)


def widths_of(variables, spec: coupling.Spec) -> tuple[int, ...]:
    """``(stream, hidden...)``; without a stream group the stream width is the stem's."""
    widths = group_widths(variables, spec)
    if any(g.name == "stream" for g in spec):
        return widths
    return (int(np.shape(variables["params"]["stem"]["kernel"])[3]), *widths)


ARCH = register(Architecture(
    "residual_cnn", build, spec, "num_classes",
    lambda variables: image_input(variables, ("params", "stem", "kernel")), widths_of,
))
