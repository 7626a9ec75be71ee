"""A network is data: an architecture name, its widths and its variables.

Each architecture in :data:`ARCHITECTURES` knows how to build its Flax module from widths,
its coupling spec, and how to read its widths back from variable shapes. A reduced network is
rebuilt from its widths and checked against its variables with ``jax.eval_shape``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condensation import coupling
from condensation.condense import Variables, condense_variables, get
from condensation.mobilenet import build as _mobilenetv2
from condensation.mobilenet import mobilenetv2_spec
from condensation.models import CNN, MLP, ResidualCNN, check_widths


@dataclass(frozen=True)
class Architecture:
    """``build(widths, **options) -> nn.Module``; ``spec(widths, **options) -> Spec``."""

    name: str
    build: Callable[..., nn.Module]
    spec: Callable[..., coupling.Spec]
    output_arg: str = "num_classes"  # the build() keyword that takes the task's output size


def _mlp(widths, *, out_dim, activation="gelu", gamma=1.0):
    return MLP(widths=check_widths(widths), out_dim=out_dim, activation=activation, gamma=gamma)


def _cnn(widths, *, n_conv, num_classes, activation="relu", gamma=1.0, pool=True):
    widths = check_widths(widths)
    return CNN(conv_widths=widths[:n_conv], dense_widths=widths[n_conv:], num_classes=num_classes,
               activation=activation, gamma=gamma, pool=pool)


def _rescnn(widths, *, num_classes, activation="relu", gamma=1.0):
    return ResidualCNN(widths=check_widths(widths), num_classes=num_classes,
                       activation=activation, gamma=gamma)


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture("mlp", _mlp, lambda widths, **_: coupling.mlp_spec(len(widths)), "out_dim"),
    "cnn": Architecture(
        "cnn", _cnn, lambda widths, *, n_conv, **_: coupling.cnn_spec(n_conv, len(widths) - n_conv)
    ),
    "residual_cnn": Architecture(
        "residual_cnn", _rescnn,
        lambda widths, *, tie_stream=True, **_: coupling.residual_cnn_spec(len(widths) - 1, tie_stream),
    ),
    "mobilenetv2": Architecture("mobilenetv2", _mobilenetv2, mobilenetv2_spec, "num_classes"),
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; allowed: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


@dataclass(frozen=True)
class Network:
    """(architecture, widths, options): everything needed to rebuild the module.

    ``options`` are the architecture's keyword arguments other than the widths (output size,
    activation, gamma, ...); ``spec_options`` are those of its coupling spec only.
    """

    arch: str
    widths: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    spec_options: dict[str, Any] = field(default_factory=dict)

    def module(self) -> nn.Module:
        return architecture(self.arch).build(self.widths, **self.options)

    def spec(self) -> coupling.Spec:
        return architecture(self.arch).spec(self.widths, **self.options, **self.spec_options)

    def with_widths(self, widths: Sequence[int]) -> Network:
        return Network(self.arch, tuple(int(w) for w in widths), self.options, self.spec_options)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "widths": list(self.widths), "options": dict(self.options),
                "spec_options": dict(self.spec_options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        return cls(d["arch"], tuple(d["widths"]), dict(d.get("options", {})),
                   dict(d.get("spec_options", {})))


def abstract_variables(net: Network, input_shape: Sequence[int]) -> Variables:
    """Shapes and dtypes of ``net``'s variables, from ``jax.eval_shape`` (nothing allocated)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda k, x: net.module().init(k, x), jax.random.key(0), x)


def input_shape_of(net: Network, variables: Variables) -> tuple[int, ...]:
    """An input shape (no batch axis) that fits saved ``variables``: an MLP's input width (its
    first kernel's rows); the conv nets here take RGB images, and their parameters do not
    depend on the image size (global pooling): CIFAR-10's 32x32x3."""
    if net.arch == "mlp":
        return (int(np.shape(variables["params"]["Dense_0"]["kernel"])[0]),)
    return (32, 32, 3)


def check_shapes(net: Network, variables: Variables, input_shape: Sequence[int]) -> None:
    """Raise if ``variables`` do not have exactly the shapes ``net`` (rebuilt) expects."""
    want = jax.tree.map(lambda a: tuple(a.shape), abstract_variables(net, input_shape))
    have = jax.tree.map(lambda a: tuple(np.shape(a)), variables)
    if jax.tree.structure(want) != jax.tree.structure(have) or want != have:
        diff = [
            f"{jax.tree_util.keystr(p)}: expected {w}, got {h}"
            for (p, w), h in zip(jax.tree_util.tree_leaves_with_path(want),
                                 jax.tree.leaves(have), strict=False)
            if w != h
        ]
        raise ValueError(
            f"variables do not fit {net.arch} with widths {list(net.widths)}: "
            + ("; ".join(diff[:5]) or "different tree structure")
        )


def widths_of(net: Network, variables: Variables) -> tuple[int, ...]:
    """Read the widths back from the variable shapes through the coupling spec."""
    sizes = {g.name: get(variables, g.producers[0].kernel.path).shape[g.producers[0].kernel.axis]
             for g in net.spec()}
    if net.arch == "residual_cnn" and "stream" not in sizes:
        sizes = {"stream": get(variables, ("params", "stem", "kernel")).shape[3], **sizes}
    return tuple(sizes.values())


def reduce_network(
    net: Network, variables: Variables, *, threshold: float, activation: str,
    input_shape: Sequence[int],
) -> tuple[Network, Variables]:
    """Condense ``variables`` of ``net``; returns the reduced (network, variables), shape-checked."""
    new_vars, _ = condense_variables(variables, net.spec(), threshold=threshold, activation=activation)
    new_net = net.with_widths(widths_of(net, new_vars))
    check_shapes(new_net, new_vars, input_shape)
    return new_net, new_vars


def count_params(variables: Variables) -> int:
    """Trainable parameters (the ``params`` collection; BatchNorm statistics are not counted)."""
    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(tree)))


def count_flops(net: Network, input_shape: Sequence[int]) -> float:
    """FLOPs of one forward pass of one sample, from XLA's cost analysis of the shapes alone."""
    variables = abstract_variables(net, input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    lowered = jax.jit(lambda v, x: net.module().apply(v, x)).lower(variables, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])
