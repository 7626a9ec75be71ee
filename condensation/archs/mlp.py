"""Fully connected network (``arch: mlp``): module, coupling spec, input shape."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import numpy as np

from condensation import coupling
from condensation.activations import activation as get_activation
from condensation.archs.base import Architecture, check_widths, discovered_spec, register, scaled_normal


class MLP(nn.Module):
    """Fully connected network x [N, in] -> [N, out].

    Layers are ``Dense_0 .. Dense_L`` (flax's default names), hidden widths ``widths``; every
    kernel is drawn from N(0, fan_in^(-2 gamma)).
    """

    widths: Sequence[int]
    out_dim: int
    activation: str = "gelu"
    gamma: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = get_activation(self.activation)
        init = scaled_normal(self.gamma)
        for w in self.widths:
            x = act(nn.Dense(w, kernel_init=init)(x))
        return nn.Dense(self.out_dim, kernel_init=init)(x)


def build(widths, *, out_dim, activation="gelu", gamma=1.0) -> MLP:
    return MLP(widths=check_widths(widths), out_dim=out_dim, activation=activation, gamma=gamma)


def spec(widths, **options) -> coupling.Spec:
    """Hidden layer i: producer ``Dense_i`` (kernel columns, bias), consumer ``Dense_{i+1}``'s
    rows (discovered; groups named after their layer)."""
    return discovered_spec(build, widths, {"out_dim": 1, **options}, (1,),
                           lambda g: (int(g.name.split("_")[1]), g.name))


def input_shape(variables) -> tuple[int]:
    """The input width: the first kernel's rows."""
    return (int(np.shape(variables["params"]["Dense_0"]["kernel"])[0]),)


ARCH = register(Architecture("mlp", build, spec, "out_dim", input_shape))
